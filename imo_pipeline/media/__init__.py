"""Decoding of raw media (audio, text, video) into arrays the extractors take."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ..errors import MediaError

_KINDS = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"))


def regular_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a regular file (links followed); else MediaError naming it, raised before
    anything opens it: reading a FIFO, a device or a socket can block forever.

    ``what`` names the file in messages (``audio file``, ``video file``, ``frame image``).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise MediaError(f"{what} {path} does not exist; check the manifest path and --data-root") from None
    except OSError as e:
        raise MediaError(f"{what} {path} cannot be read ({e.strerror or e}); check its permissions") from None
    if stat.S_ISDIR(mode):
        raise MediaError(f"{what} {path} is a folder, not a file; point the manifest at the file itself")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _KINDS if test(mode)), "special file")
        raise MediaError(f"{what} {path} is a {kind}, not a regular file; imo reads media only from regular "
                         f"files: copy the data into one and point the manifest at it")
    return path
