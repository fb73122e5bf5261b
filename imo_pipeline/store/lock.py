"""A lock file per store part, so two jobs never write the same part."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import psutil

from ..errors import LockError


def _alive(pid: int, started: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - started) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


class PartLock:
    """``<store>/<part>.lock``, created exclusively; holds pid, host and start time.

    A lock left by a dead process on this host (SIGKILL, OOM) is taken over; a
    lock held by a live process, or by another host, is refused with a message
    naming the file.
    """

    def __init__(self, path: Path):
        self.path = path
        self.held = False
        self.took_over: dict | None = None

    def acquire(self) -> "PartLock":
        me = psutil.Process()
        record = {"pid": me.pid, "host": socket.gethostname(), "started": me.create_time(), "at": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner and owner.get("host") == record["host"] and not _alive(owner.get("pid", -1), owner.get("started", 0)):
                    self.took_over = owner
                    self.path.unlink(missing_ok=True)
                    continue
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown job"
                raise LockError(
                    f"store part is locked by {who}: {self.path}. Another job is writing this part; "
                    f"if no such job is running (it died on another node), delete {self.path} and re-run."
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self.held = True
            return self
        raise LockError(f"could not take the lock {self.path}; delete it if no job is writing this part")

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return None

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "PartLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
