"""Store integrity: a CRC-32 per file, recorded at each commit, and the checks made when a part is read.

Zarr reads a missing chunk or shard file as its fill value (zeros), so a deleted file is invisible to
it, and a truncated one fails deep inside a codec. imo checks parts itself, at three depths:

- **Every open** (readers, and a writer resuming a part), cheap: the part's ``zarr.json`` files
  parse; every chunk/shard file that the committed counts imply exists (one listing of the store,
  local folder or fsspec URL alike); for a complete part with checksums, each file's size equals the
  recorded size (a truncated file is caught without reading it); offsets start at 0, increase and end
  at the committed frames; the ids count matches. A part that fails is ``damaged``: readers refuse it
  with the file and the command that rebuilds it, and ``PartWriter`` rebuilds it from scratch.
- **Every whole-file read**, free: ``VerifyingStore`` wraps zarr's store and compares each file read in
  whole with its recorded size and CRC-32 at no extra I/O. The chunk files of ``offsets``, ``ids``
  (read at open) and ``pooled`` are always read whole; ``values`` shards are read whole by
  ``load_all``, iteration (in-memory training, export) and ``to_dask``. Random per-utterance reads
  (``get``, lazy training) read byte ranges of a shard and rely on the open-time checks.
- **``imo verify STORE``**: every recorded checksum of every part, and parts marked ``damaged`` in their
  attrs. Parts written before format 2 have no checksums: they are checked structurally and decoded.

Checksums: ``zlib.crc32`` of each file's bytes, with the byte count, in the part's ``checksums`` attrs
(``{"values/c/0/0/0": [size, crc]}``). They are taken from the very bytes the writer hands to the store
(``RecordingStore``), so recording costs no read-back, and they are written in the same ``zarr.json``
write that advances the committed counts, so they are atomic with the commit. CRC-32 (stdlib, ~4 GB/s
here) detects any burst error up to 32 bits and random damage with probability 1 - 2**-32, which is the
threat (lost, truncated or bit-rotten files, not tampering); unlike zarr's ``crc32c`` codec it covers
whole files (shard index, the ids and offsets chunks too), works on stores written before, needs no
extra package, and feeds ``EmbeddingStore.content_fingerprint``.
"""

from __future__ import annotations

import errno
import json
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import zarr
from zarr.storage import FsspecStore, LocalStore, WrapperStore

from ..errors import StoreError
from ..paths import is_url

ARRAYS = ("values", "offsets", "ids", "pooled")
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def checksum(data: Any, crc: int = 0) -> int:
    """CRC-32 of a bytes-like object (continuing ``crc``)."""
    return zlib.crc32(data, crc)


def short(e: BaseException, limit: int = 160) -> str:
    """An exception as one short line (for messages that must stay one line)."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextmanager
def disk_errors(target: str, resumes: bool = True):
    """Turn a full disk (ENOSPC/EDQUOT) or a file-size limit (EFBIG) while writing ``target`` into one line."""
    then = "; it resumes" if resumes else ""
    try:
        yield
    except OSError as e:
        if e.errno in _DISK_FULL:
            raise StoreError(f"no space left on device writing {target}: free space and re-run the same command"
                             f"{then}") from None
        if e.errno == errno.EFBIG:
            raise StoreError(f"file size limit reached writing {target} ({e.strerror}): raise the limit "
                             f"(ulimit -f) or lower --shard-mb, and re-run the same command{then}") from None
        raise


def zarr_store(path: str, read_only: bool):
    """The zarr store for a local path or an fsspec URL (as ``zarr.open_group(path)`` would make it)."""
    if is_url(path):
        return FsspecStore.from_url(path, read_only=read_only)
    return LocalStore(path, read_only=read_only)


class StoreFiles:
    """The files of a store, local or at an fsspec URL: listing with sizes, streamed CRCs, removal."""

    def __init__(self, path: str):
        import fsspec

        self.path = path
        self.fs, self.root = fsspec.core.url_to_fs(path)
        self.root = self.root.rstrip("/")
        self.local = not is_url(path)

    def full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def list(self, prefix: str = "") -> dict[str, int]:
        """``{path relative to the store: size}`` of the files under ``prefix`` (temp ``*.partial`` left out)."""
        base = self.full(prefix) if prefix else self.root
        try:
            found = self.fs.find(base, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        out = {}
        head = self.root + "/"
        for p, info in found.items():
            p = p if p.startswith("/") or not head.startswith("/") else "/" + p
            if p.startswith(head) and info.get("type", "file") == "file" and not p.endswith(".partial"):
                out[p[len(head):]] = int(info.get("size") or 0)
        return out

    def crc(self, rel: str) -> tuple[int, int]:
        """(size, CRC-32) of one file, read in blocks."""
        size, crc = 0, 0
        with self.fs.open(self.full(rel), "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                size += len(block)
                crc = checksum(block, crc)
        return size, crc

    def remove_dir(self, rel: str) -> None:
        """Delete a folder of the store and everything in it."""
        if self.fs.exists(self.full(rel)):
            self.fs.rm(self.full(rel), recursive=True)

    def write_json(self, rel: str, obj: dict) -> None:
        """Write a small JSON file atomically (temp + rename locally; object stores replace whole objects)."""
        data = json.dumps(obj, indent=2).encode()
        if self.local:
            path = Path(self.full(rel))
            tmp = path.with_name(path.name + ".imo.partial")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(self.full(rel), data)


class ChecksumError(StoreError):
    """A file whose bytes differ from the size/CRC recorded when it was written (or that is gone)."""

    def __init__(self, message: str, key: str, why: str):
        super().__init__(message)
        self.key, self.why = key, why


def _bytes(buf) -> Any:
    return buf.as_buffer_like()


class RecordingStore(WrapperStore):
    """Wraps a zarr store and records ``(size, crc32)`` of every file written through it (``written``,
    key -> record, ``None`` once deleted). Metadata (``zarr.json``) is left out."""

    def __init__(self, store, written: dict | None = None):
        super().__init__(store)
        self.written = {} if written is None else written

    def _with_store(self, store):
        return type(self)(store, self.written)

    def _record(self, key: str, value) -> None:
        if not key.endswith("zarr.json"):
            data = _bytes(value)
            self.written[key] = (len(data), checksum(data))

    async def set(self, key: str, value) -> None:
        await self._store.set(key, value)
        self._record(key, value)

    async def set_if_not_exists(self, key: str, value) -> None:
        if not await self._store.exists(key):
            await self.set(key, value)

    async def _set_many(self, values) -> None:
        for key, value in values:
            await self.set(key, value)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        self.written[key] = None

    def take(self, prefix: str) -> dict[str, tuple[int, int] | None]:
        """The records under ``prefix/`` since the last take, keys relative to ``prefix``."""
        cut = len(prefix) + 1
        keys = [k for k in self.written if k.startswith(prefix + "/")]
        return {k[cut:]: self.written.pop(k) for k in keys}


class VerifyingStore(WrapperStore):
    """Wraps a zarr store; every whole-file read of a file in ``sums`` (key -> ``(size, crc)``) is checked
    against it, and a registered file that is gone is an error even for a byte-range read.
    ``on_bad(key, why)`` makes the exception raised."""

    def __init__(self, store, sums: dict | None = None, on_bad: Callable[[str, str], Exception] | None = None,
                 verified: set | None = None):
        super().__init__(store)
        self.sums = {} if sums is None else sums
        self.on_bad = on_bad or (lambda key, why: ChecksumError(f"{key}: {why}", key, why))
        self.verified = set() if verified is None else verified

    def _with_store(self, store):
        return type(self)(store, self.sums, self.on_bad, self.verified)

    def check(self, key: str, buf) -> None:
        want = self.sums.get(key)
        if want is None:
            return
        if buf is None:
            raise self.on_bad(key, "missing (deleted after it was written)")
        data = _bytes(buf)
        if len(data) != want[0]:
            raise self.on_bad(key, f"{len(data)} bytes but {want[0]} when written (truncated or overwritten)")
        if checksum(data) != want[1]:
            raise self.on_bad(key, "its bytes do not match the checksum recorded when it was written")
        self.verified.add(key)

    async def get(self, key: str, prototype, byte_range=None):
        buf = await self._store.get(key, prototype, byte_range)
        if key in self.sums:
            if byte_range is None or buf is None:
                self.check(key, buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        out = await self._store.get_partial_values(prototype, key_ranges)
        for (key, rng), buf in zip(key_ranges, out):
            if key in self.sums and (rng is None or buf is None):
                self.check(key, buf)
        return out

    async def _get_many(self, requests):
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)


def chunk_keys(arr: zarr.Array, lo: int, hi: int) -> list[str]:
    """Keys (relative to the array) of the chunk or shard files holding rows ``[lo, hi)`` of ``arr``."""
    if hi <= lo:
        return []
    rows = (arr.shards or arr.chunks)[0]
    rest = (0,) * (arr.ndim - 1)
    return [arr.metadata.encode_chunk_key((k, *rest)) for k in range(lo // rows, (hi - 1) // rows + 1)]


def implied_files(arrays: dict[str, zarr.Array], n: int, frames: int) -> list[str]:
    """Files (relative to the part) that ``n`` committed utterances of ``frames`` frames must have written."""
    spans = {"values": (0, frames), "offsets": (0, n + 1 if n else 0), "ids": (0, n), "pooled": (0, n)}
    return [f"{name}/{key}" for name, (lo, hi) in spans.items() for key in chunk_keys(arrays[name], lo, hi)]


@dataclass
class PartData:
    """What opening a sound part gives: its arrays, offsets ``[n + 1]`` and ids ``[n]``."""

    arrays: dict[str, zarr.Array]
    offsets: np.ndarray
    ids: list[str]


def committed_counts(attrs: dict) -> tuple[int, int]:
    c = attrs["committed"]
    n, frames = int(c["n"]), int(c["frames"])
    if n < 0 or frames < 0 or n > int(attrs.get("n_expected", n)):
        raise ValueError(f"committed counts {c} out of range")
    return n, frames


def check_part(group: zarr.Group, name: str, attrs: dict, files: dict[str, int],
               complete: bool) -> tuple[dict[str, str], PartData | None]:
    """Structural check of one part (see the module docstring); ``(damage, data)`` where ``damage`` maps a
    file (relative to the store) to what is wrong with it, and ``data`` is None when damaged.

    ``files`` is the store's listing; ``complete`` parts must match their recorded sizes (a part still being
    written may hold files rewritten by an interrupted commit, so only their presence is checked)."""
    try:
        n, frames = committed_counts(attrs)
    except (KeyError, TypeError, ValueError) as e:
        return {f"{name}/zarr.json": f"its attrs lack valid committed counts ({short(e)})"}, None
    arrays: dict[str, zarr.Array] = {}
    damage: dict[str, str] = {}
    for a in ARRAYS:
        try:
            arrays[a] = group[a]
        except Exception as e:  # a deleted or corrupt zarr.json surfaces as KeyError, JSON or zarr errors
            damage[f"{name}/{a}/zarr.json"] = f"missing or unreadable array metadata ({short(e)})"
    if damage:
        return damage, None
    for a, need in (("values", frames), ("offsets", n + 1), ("ids", n), ("pooled", n)):
        if arrays[a].shape[0] < need:
            damage[f"{name}/{a}/zarr.json"] = f"shape {arrays[a].shape} holds fewer rows than the {need} committed"
    if damage:
        return damage, None
    sums = attrs.get("checksums") or {}
    checksummed = int(attrs.get("format", 1)) >= 2
    for rel in implied_files(arrays, n, frames):
        key = f"{name}/{rel}"
        if key not in files:
            damage[key] = "missing"
        elif complete and checksummed:
            if rel not in sums:
                damage[key] = "no checksum recorded for it"
            elif files[key] != sums[rel][0]:
                damage[key] = f"{files[key]} bytes but {sums[rel][0]} when written (truncated or overwritten)"
    if damage:
        return damage, None
    try:
        offsets = np.asarray(arrays["offsets"][: n + 1], dtype=np.int64)
        ids = [str(x) for x in arrays["ids"][:n]] if n else []
    except ChecksumError as e:
        return {e.key: e.why}, None
    except Exception as e:  # an undecodable chunk of a part without checksums
        return {f"{name}/offsets": f"offsets or ids cannot be decoded ({short(e)})"}, None
    if n and (offsets[0] != 0 or np.any(np.diff(offsets) < 1) or offsets[n] != frames):
        return {f"{name}/offsets": f"offsets do not start at 0, increase and end at the {frames} committed frames"}, None
    if len(ids) != n or not all(ids):
        return {f"{name}/ids": f"{sum(map(bool, ids))} ids for {n} committed utterances"}, None
    return {}, PartData(arrays, offsets, ids)


def deep_check(files: StoreFiles, name: str, attrs: dict, listing: dict[str, int],
               progress: Callable[[int], None] = lambda n: None) -> dict[str, str]:
    """Read every file of a part that has a recorded checksum and compare; ``{file: what is wrong}``."""
    damage = {}
    for rel, (size, crc) in sorted((attrs.get("checksums") or {}).items()):
        key = f"{name}/{rel}"
        if key not in listing:
            damage[key] = "missing"
            continue
        try:
            got_size, got_crc = files.crc(key)
        except OSError as e:
            damage[key] = f"cannot be read ({short(e)})"
            continue
        progress(got_size)
        if got_size != size:
            damage[key] = f"{got_size} bytes but {size} when written (truncated or overwritten)"
        elif got_crc != crc:
            damage[key] = "its bytes do not match the checksum recorded when it was written"
    return damage


def decode_check(name: str, arrays: dict[str, zarr.Array], n: int, frames: int,
                 progress: Callable[[int], None] = lambda n: None) -> dict[str, str]:
    """For a part without checksums: decode every values shard and the pooled rows; ``{file: what is wrong}``."""
    damage = {}
    values = arrays["values"]
    rows = values.shards[0] if values.shards else values.chunks[0]
    for k, key in enumerate(chunk_keys(values, 0, frames)):
        try:
            values[k * rows:min((k + 1) * rows, frames)]
        except Exception as e:
            damage[f"{name}/values/{key}"] = f"cannot be decoded ({short(e)})"
        progress(1)
    try:
        arrays["pooled"][:n]
    except Exception as e:
        damage[f"{name}/pooled"] = f"cannot be decoded ({short(e)})"
    return damage
