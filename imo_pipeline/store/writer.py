"""Streaming writer of one store part, committed in whole blocks.

Each commit writes the data files, then one ``zarr.json`` write advances the part's committed counts and
records the size and CRC-32 of every file it wrote (``checksums``; see integrity.py). A full disk ends the
job with one line and leaves the last commit intact, so re-running the same command resumes exactly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import zarr
from zarr.errors import ContainsGroupError

from ..errors import StoreError
from ..manifest import ShardSpec
from ..paths import is_url
from .integrity import RecordingStore, StoreFiles, check_part, disk_errors, implied_files, short, zarr_store
from .layout import FORMAT_VERSION, NonFiniteError, StoreMeta, check_dtype, check_sizes, geometry, nonfinite_reason
from .lock import PartLock

_ALL_CHUNKS = {"write_empty_chunks": True}  # every file the committed counts imply exists, even all-zero ones


def is_local(path: str | Path) -> bool:
    return not is_url(path)


def open_root(path: str | Path, meta: StoreMeta, store=None) -> zarr.Group:
    """Open or create the store root; refuse one made by another encoder, manifest, shard count or dtype."""
    store = store if store is not None else zarr_store(str(path), read_only=False)
    try:
        try:  # created with its attrs in one write, so a concurrent job never sees a bare root
            root = zarr.open_group(store=store, mode="a", attributes=meta.to_attrs())
        except ContainsGroupError:  # another shard job created it between our look and our write
            root = zarr.open_group(store=store, mode="r+")
    except json.JSONDecodeError as e:
        raise StoreError(f"{path}/zarr.json (the store's metadata) is corrupt ({short(e)}); delete {path} and "
                         f"write it again") from None
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

    ``add`` buffers (refusing values that are not finite in the store's dtype
    with ``NonFiniteError``); ``commit`` (called by the driver at batch
    boundaries) writes whole shards plus the partial tail and then advances the
    part's ``committed`` attrs, so a reader or a resumed job never sees a half
    block. Values stay in the buffer from the last shard boundary, so the next
    commit rewrites that shard whole. A part marked ``damaged`` (by `imo verify`)
    or failing the open-time checks is rebuilt from scratch (``redone`` says why).
    """

    def __init__(self, path: str | Path, shard: ShardSpec, meta: StoreMeta, expected_ids: list[str],
                 chunk_mb: float = 4, shard_mb: float = 128, commit_seconds: float = 60.0):
        check_sizes(chunk_mb, shard_mb)
        self.path = str(path)
        self.shard = shard
        self.meta = meta
        self.dtype = np.dtype(check_dtype(meta.dtype))
        self.redone: str | None = None
        self.lock = PartLock(Path(self.path) / f"{shard.name}.lock") if is_local(path) else None
        with disk_errors(self.path):
            if self.lock:
                self.lock.acquire()
            try:
                self._store = RecordingStore(zarr_store(self.path, read_only=False))
                self.root = open_root(path, meta, self._store)
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

    def _existing_part(self, files: StoreFiles, listing: dict[str, int], n_expected: int) -> bool:
        """Check the part already on disk; True to resume it, False after removing a damaged one."""
        name = self.shard.name
        damage: dict[str, str] = {}
        try:
            attrs = dict(self.root[name].attrs) if f"{name}/zarr.json" in listing else None
        except Exception as e:
            attrs, damage = None, {f"{name}/zarr.json": f"unreadable ({type(e).__name__})"}
        if attrs is None and not damage:
            damage = {f"{name}/zarr.json": "missing"}
        if attrs is not None and attrs.get("status") == "damaged":
            damage = dict((attrs.get("damage") or {}).get("files") or {f"{name}/zarr.json": "marked damaged"})
        elif attrs is not None:
            if attrs.get("n_expected") != n_expected:
                raise StoreError(f"{self.path}/{name} expects {attrs.get('n_expected')} utterances, this job has "
                                 f"{n_expected}; was the manifest changed? write to a new --out")
            damage, _ = check_part(self.root[name], name, attrs, listing, attrs.get("status") == "complete")
        if not damage:
            return True
        key, why = next(iter(damage.items()))
        self.redone = f"part {self.shard} was damaged ({key}: {why}); rebuilt from scratch"
        files.remove_dir(name)
        return False

    def _open_part(self, expected_ids: list[str], chunk_mb: float, shard_mb: float) -> None:
        L, D = self.meta.n_layers, self.meta.dim
        name = self.shard.name
        files = StoreFiles(self.path)
        listing = files.list(name)
        if not (listing and self._existing_part(files, listing, len(expected_ids))):
            chunk, shard = geometry(L, D, chunk_mb, shard_mb, self.meta.dtype)
            n = len(expected_ids)
            g = self.root.create_group(name, overwrite=True, attributes={
                "shard": [self.shard.index, self.shard.count], "n_expected": n, "status": "writing",
                "committed": {"n": 0, "frames": 0}, "failed": {}, "format": FORMAT_VERSION, "checksums": {},
            })
            g.create_array("values", shape=(0, L, D), chunks=(chunk, L, D), shards=(shard, L, D),
                           dtype=self.meta.dtype, compressors=None, fill_value=0, config=_ALL_CHUNKS)
            g.create_array("offsets", shape=(n + 1,), chunks=(max(1, min(n + 1, 8192)),), dtype="int64", fill_value=0,
                           config=_ALL_CHUNKS)
            g.create_array("ids", shape=(max(n, 1),), chunks=(max(1, min(n, 8192)),), dtype=str, config=_ALL_CHUNKS)
            prow = max(1, min(n, 2**20 // (L * D * 4)))
            g.create_array("pooled", shape=(max(n, 1), L, D), chunks=(prow, L, D), dtype="float32",
                           compressors=None, fill_value=0, config=_ALL_CHUNKS)
        g = self.root[name]
        self.group = g
        self.values, self.offsets, self.ids_arr, self.pooled = (g[a].with_config(_ALL_CHUNKS)
                                                                for a in ("values", "offsets", "ids", "pooled"))
        self.shard_rows = self.values.shards[0]
        c = g.attrs["committed"]
        self.n, self.frames = int(c["n"]), int(c["frames"])
        self._store.take(name)
        self.checksums: dict[str, list[int]] = dict(g.attrs.get("checksums") or {})
        if int(g.attrs.get("format", 1)) < FORMAT_VERSION:  # a part begun by an older imo: checksum what it wrote
            arrays = {"values": self.values, "offsets": self.offsets, "ids": self.ids_arr, "pooled": self.pooled}
            self.checksums = {rel: list(files.crc(f"{name}/{rel}")) for rel in implied_files(arrays, self.n, self.frames)}
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
        """Buffer one utterance's ``[T, L, D]`` embedding (any float dtype; stored in the store's dtype).

        Raises ``NonFiniteError`` (nothing buffered) when a value is NaN/inf, or overflows the store's dtype
        once cast (the reason suggests ``--dtype float32`` when float32 would hold it)."""
        L, D = self.meta.n_layers, self.meta.dim
        if values.ndim != 3 or values.shape[1:] != (L, D) or values.shape[0] < 1:
            raise StoreError(f"utterance {uid!r}: embedding shape {values.shape} does not fit the store's (T>=1, {L}, {D})")
        if uid in self.done_ids or any(p[0] == uid for p in self._pending):
            raise StoreError(f"utterance {uid!r} is already in {self.path}/{self.shard.name}")
        with np.errstate(over="ignore", invalid="ignore"):
            stored = values.astype(self.dtype, copy=False)
        if not np.isfinite(stored).all():
            raise NonFiniteError(nonfinite_reason(uid, values, self.meta.dtype))
        pooled = values.mean(axis=0, dtype=np.float64).astype(np.float32)  # (L, D), finite since values are
        self._chunks.append(stored)
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
        with disk_errors(self.path):
            self._write_block()
        return True

    def _write_block(self) -> None:
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
        self._take_checksums()
        self.group.attrs.update({"committed": {"n": self.n + k, "frames": end}, "checksums": self.checksums,
                                 "format": FORMAT_VERSION})  # one zarr.json write: counts and checksums agree
        self.n += k
        self.frames = end
        self.done_ids.update(p[0] for p in self._pending)
        self._pending.clear()
        keep_from = (end // self.shard_rows) * self.shard_rows
        self._chunks = [block[keep_from - self._buf_start:]] if end > keep_from else []
        self._buf_start = keep_from
        self._last_commit = time.monotonic()

    def _take_checksums(self) -> None:
        """Fold the sizes/CRCs of the files written since the last commit into ``checksums``."""
        for rel, rec in self._store.take(self.shard.name).items():
            if rec is None:
                self.checksums.pop(rel, None)
            else:
                self.checksums[rel] = list(rec)

    def finish(self, failed: dict[str, str]) -> None:
        """Commit the rest and mark the part complete; ``failed`` maps id -> reason. ``values`` keeps its
        whole-shard capacity (rows past the committed frames are never read), so readers read shards whole."""
        self.commit(force=True)
        with disk_errors(self.path):
            self._take_checksums()
            self.group.attrs.update({"status": "complete", "failed": failed, "checksums": self.checksums,
                                     "format": FORMAT_VERSION})

    def close(self) -> None:
        if self.lock:
            self.lock.release()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
