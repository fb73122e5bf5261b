"""The one way imo reads a torch checkpoint: tensors only, plus the few classes a format needs.

``torch.load(weights_only=True)`` runs no pickled code; each format names the
extra classes it may hold (``allow``), e.g. fairseq's ``argparse.Namespace``.
A file that needs anything else is refused with the class named, and a
truncated or foreign file gets one line saying so. imo never falls back to
``weights_only=False`` and never suggests it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any, Iterable

import torch

from .errors import ConfigError

_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def load_checkpoint(path: str | Path, what: str, allow: Iterable[Any] = (), fix: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU with ``allow`` added to the safe globals.

    ``what`` names the checkpoint in messages (``"FabNet checkpoint"``); ``fix``
    says what the user can do instead. Raises ConfigError for a missing,
    truncated or foreign file, and for one that pickles a class outside ``allow``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{what} {path} does not exist{'; ' + fix if fix else ''}")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = _GLOBAL.search(str(e))
        needs = f"the class {m.group(1)}" if m else "objects other than tensors"
        raise ConfigError(f"{what} {path} holds {needs}, which imo does not load (unpickling it could run "
                          f"code from the file){'; ' + fix if fix else ''}") from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, IndexError, AttributeError) as e:
        raise ConfigError(f"{what} {path} is truncated or not a torch checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:120] if str(e) else ''}){'; ' + fix if fix else ''}") from None
