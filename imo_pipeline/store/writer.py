"""Streaming writer of one store part, committed in whole blocks."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import zarr
from zarr.errors import ContainsGroupError

from ..errors import StoreError
from ..manifest import ShardSpec
from ..paths import is_url
from .layout import VALUE_DTYPE, StoreMeta, geometry
from .lock import PartLock


def is_local(path: str | Path) -> bool:
    return not is_url(path)


def open_root(path: str | Path, meta: StoreMeta) -> zarr.Group:
    """Open or create the store root; refuse one made by another encoder, manifest or shard count."""
    try:  # created with its attrs in one write, so a concurrent job never sees a bare root
        root = zarr.open_group(str(path), mode="a", attributes=meta.to_attrs())
    except ContainsGroupError:  # another shard job created it between our look and our write
        root = zarr.open_group(str(path), mode="r+")
    if "imo" not in root.attrs:
        root.attrs.update(meta.to_attrs())
        return root
    diff = StoreMeta.from_attrs(dict(root.attrs)).compatible(meta)
    if diff:
        key, got, want = diff
        raise StoreError(f"store {path} was made with {key}={got!r}, this job has {key}={want!r}; "
                         f"write to a new --out or delete {path} to start over")
    return root


class PartWriter:
    """Writes utterances of one part; memory holds at most ~one shard of values.

    ``add`` buffers; ``commit`` (called by the driver at batch boundaries)
    writes whole shards plus the partial tail and then advances the part's
    ``committed`` attrs, so a reader or a resumed job never sees a half block.
    Values stay in the buffer from the last shard boundary, so the next
    commit rewrites that shard whole.
    """

    def __init__(self, path: str | Path, shard: ShardSpec, meta: StoreMeta, expected_ids: list[str],
                 chunk_mb: float = 4, shard_mb: float = 128, commit_seconds: float = 60.0):
        self.path = str(path)
        self.shard = shard
        self.meta = meta
        self.lock = PartLock(Path(self.path) / f"{shard.name}.lock") if is_local(path) else None
        if self.lock:
            self.lock.acquire()
        try:
            self.root = open_root(path, meta)
            self._remove_partial_files()
            self._open_part(expected_ids, chunk_mb, shard_mb)
        except BaseException:
            self.close()
            raise
        self.commit_seconds = commit_seconds
        self._last_commit = time.monotonic()

    def _remove_partial_files(self) -> None:
        """Delete temp files a killed job left mid-write in this part (zarr writes files atomically via
        ``*.partial`` + rename); safe because we hold the part's lock."""
        if is_local(self.path):
            for f in (Path(self.path) / self.shard.name).rglob("*.partial"):
                f.unlink(missing_ok=True)

    def _open_part(self, expected_ids: list[str], chunk_mb: float, shard_mb: float) -> None:
        L, D = self.meta.n_layers, self.meta.dim
        name = self.shard.name
        if name in self.root:
            g = self.root[name]
            if g.attrs["n_expected"] != len(expected_ids):
                raise StoreError(f"{self.path}/{name} expects {g.attrs['n_expected']} utterances, this job has "
                                 f"{len(expected_ids)}; was the manifest changed? write to a new --out")
        else:
            chunk, shard = geometry(L, D, chunk_mb, shard_mb)
            n = len(expected_ids)
            g = self.root.create_group(name, attributes={
                "shard": [self.shard.index, self.shard.count], "n_expected": n, "status": "writing",
                "committed": {"n": 0, "frames": 0}, "failed": {},
            })
            g.create_array("values", shape=(0, L, D), chunks=(chunk, L, D), shards=(shard, L, D),
                           dtype=VALUE_DTYPE, compressors=None, fill_value=0)
            g.create_array("offsets", shape=(n + 1,), chunks=(max(1, min(n + 1, 8192)),), dtype="int64", fill_value=0)
            g.create_array("ids", shape=(max(n, 1),), chunks=(max(1, min(n, 8192)),), dtype=str)
            prow = max(1, min(n, 2**20 // (L * D * 4)))
            g.create_array("pooled", shape=(max(n, 1), L, D), chunks=(prow, L, D), dtype="float32",
                           compressors=None, fill_value=0)
        self.group = g
        self.values, self.offsets, self.ids_arr, self.pooled = g["values"], g["offsets"], g["ids"], g["pooled"]
        self.shard_rows = self.values.shards[0]
        c = g.attrs["committed"]
        self.n, self.frames = int(c["n"]), int(c["frames"])
        self.done_ids: set[str] = set(self.ids_arr[: self.n].tolist()) if self.n else set()
        # Buffer starts at the last shard boundary at or below the committed frames.
        self._buf_start = (self.frames // self.shard_rows) * self.shard_rows
        tail = self.values[self._buf_start:self.frames] if self.frames > self._buf_start else None
        self._chunks: list[np.ndarray] = [np.asarray(tail)] if tail is not None else []
        self._pending: list[tuple[str, int, np.ndarray]] = []  # (id, n_frames, pooled)

    @property
    def buffered_frames(self) -> int:
        return sum(len(c) for c in self._chunks)

    def add(self, uid: str, values: np.ndarray) -> None:
        """Buffer one utterance's ``[T, L, D]`` embedding (any float dtype; stored as float16)."""
        L, D = self.meta.n_layers, self.meta.dim
        if values.ndim != 3 or values.shape[1:] != (L, D) or values.shape[0] < 1:
            raise StoreError(f"utterance {uid!r}: embedding shape {values.shape} does not fit the store's (T>=1, {L}, {D})")
        if uid in self.done_ids or any(p[0] == uid for p in self._pending):
            raise StoreError(f"utterance {uid!r} is already in {self.path}/{self.shard.name}")
        pooled = values.astype(np.float32, copy=False).mean(axis=0)  # (L, D)
        self._chunks.append(values.astype(VALUE_DTYPE, copy=False))
        self._pending.append((uid, values.shape[0], pooled))

    def commit(self, force: bool = False) -> bool:
        """Write the buffer if a shard's worth (or 512 utterances, or ``commit_seconds``) is pending."""
        if not self._pending:
            return False
        new_frames = self._buf_start + self.buffered_frames - self.frames
        due = (new_frames >= self.shard_rows or len(self._pending) >= 512
               or time.monotonic() - self._last_commit >= self.commit_seconds)
        if not (force or due):
            return False
        block = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        end = self._buf_start + len(block)
        if self.values.shape[0] < end:
            cap = -(-end // self.shard_rows) * self.shard_rows
            self.values.resize((cap, *self.values.shape[1:]))
        self.values[self._buf_start:end] = block
        k = len(self._pending)
        lens = np.array([p[1] for p in self._pending], dtype=np.int64)
        self.offsets[self.n + 1:self.n + k + 1] = self.frames + np.cumsum(lens)
        self.ids_arr[self.n:self.n + k] = np.array([p[0] for p in self._pending], dtype=object).astype(str)
        self.pooled[self.n:self.n + k] = np.stack([p[2] for p in self._pending])
        self.n += k
        self.frames = end
        self.group.attrs["committed"] = {"n": self.n, "frames": self.frames}
        self.done_ids.update(p[0] for p in self._pending)
        self._pending.clear()
        keep_from = (end // self.shard_rows) * self.shard_rows
        self._chunks = [block[keep_from - self._buf_start:]] if end > keep_from else []
        self._buf_start = keep_from
        self._last_commit = time.monotonic()
        return True

    def finish(self, failed: dict[str, str]) -> None:
        """Commit the rest and mark the part complete; ``failed`` maps id -> reason."""
        self.commit(force=True)
        if self.values.shape[0] != self.frames:
            self.values.resize((self.frames, *self.values.shape[1:]))
        self.group.attrs.update({"status": "complete", "failed": failed})

    def close(self) -> None:
        if self.lock:
            self.lock.release()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
