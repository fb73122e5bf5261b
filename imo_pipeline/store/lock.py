"""A lock file per store part, so two jobs never write the same part."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

import psutil

from ..errors import LockError

EMPTY_LOCK_SECONDS = 30.0  # a lock file still empty after this long lost its writer


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
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if self._stale(owner, record["host"]):
                    self._take_over(owner, record["host"])
                    continue
                who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown job"
                raise LockError(
                    f"store part is locked by {who}: {self.path}. Another job is writing this part; "
                    f"if no such job is running (it died on another node), delete {self.path} and re-run."
                ) from None
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(record, f)
            except OSError:  # e.g. a full disk: leave no empty lock behind for the next run to wait on
                self.path.unlink(missing_ok=True)
                raise
            self.held = True
            return self
        raise LockError(f"could not take the lock {self.path}; delete it if no job is writing this part")

    def _stale(self, owner: dict | None, host: str) -> bool:
        """A lock of a dead process on this host, or an empty one its creator never finished writing."""
        if owner is None:
            try:
                return time.time() - self.path.stat().st_mtime > EMPTY_LOCK_SECONDS
            except OSError:
                return True  # gone meanwhile: just retry
        return owner.get("host") == host and not _alive(owner.get("pid", -1), owner.get("started", 0))

    def _take_over(self, owner: dict | None, host: str) -> None:
        """Remove a stale lock, serialised with flock on the folder so two jobs taking over the same
        stale lock at once cannot delete each other's fresh lock (the loser then sees a live owner)."""
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(dfd, fcntl.LOCK_EX)
            now = self._owner()
            if now == owner and self._stale(now, host):
                self.took_over = owner or {}
                self.path.unlink(missing_ok=True)
        finally:
            os.close(dfd)  # releases the flock

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
