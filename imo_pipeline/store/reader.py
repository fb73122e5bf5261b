"""Reading a store: all complete parts seen as one table of utterances.

Every open verifies the parts it reads, and whole-file reads are checked against the checksums recorded
at commit; see ``store/integrity.py`` for what is checked where.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

from ..errors import StoreError
from ..paths import is_url
from .integrity import (ChecksumError, PartData, StoreFiles, VerifyingStore, check_part, chunk_keys, short,
                        zarr_store)
from .layout import ENCODER_IDENTITY, PART_RE, StoreMeta, rebuild_command


@dataclass
class PartStatus:
    name: str
    index: int
    status: str          # "complete", "writing" (incomplete), "missing" or "damaged"
    n_expected: int
    n_committed: int
    frames: int
    failed: dict[str, str]
    locked: bool = False
    notes: dict[str, str] = field(default_factory=dict)  # id -> note on a stored utterance (truncated text, faceless frames)
    damage: dict[str, str] = field(default_factory=dict)  # file (relative to the store) -> what is wrong
    format: int = 1                                       # 2: the part records a checksum per file
    attrs: dict = field(default_factory=dict, repr=False)


class _Part:
    def __init__(self, st: PartStatus, data: PartData):
        a = data.arrays
        self.name, self.index = st.name, st.index
        self.values, self.pooled_arr = a["values"], a["pooled"]
        self.offsets, self.ids = data.offsets, data.ids
        self.n, self.frames = st.n_committed, st.frames
        self.rows = (self.values.shards or self.values.chunks)[0]
        self.shard_keys = [f"{st.name}/values/{k}" for k in chunk_keys(self.values, 0, self.frames)]

    def shard(self, k: int) -> np.ndarray:
        """Values of shard file ``k`` (rows ``[k * rows, (k + 1) * rows)`` up to the committed frames), read whole."""
        lo = k * self.rows
        block = np.asarray(self.values[lo:min(lo + self.rows, self.values.shape[0])])
        return block[: max(0, min(self.rows, self.frames - lo))]


class EmbeddingStore:
    """A store opened for reading.

    Only complete parts are read (``allow_incomplete=True`` also reads the
    committed rows of parts still being written). Utterance order: parts in
    index order, and write order inside a part. Parts that fail the open-time
    checks get status ``damaged`` and are not read; ``check`` refuses them.
    """

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self.path = str(path)
        if not is_url(self.path) and not Path(self.path).exists():
            raise StoreError(f"store {self.path} does not exist; run `imo extract` first or fix the path")
        self._vstore = VerifyingStore(zarr_store(self.path, read_only=True), on_bad=self._bad_file)
        try:
            self.root = zarr.open_group(store=self._vstore, mode="r")
            self.meta = StoreMeta.from_attrs(dict(self.root.attrs))
        except json.JSONDecodeError as e:
            raise StoreError(f"{self.path}/zarr.json (the store's metadata) is corrupt ({short(e)}); the store "
                             f"cannot be read: delete {self.path} and write it again (imo extract / imo import-csd)"
                             ) from None
        except (KeyError, FileNotFoundError, ValueError, TypeError) as e:
            raise StoreError(f"{self.path} is not an imo embedding store ({e!r})") from None
        self.files = StoreFiles(self.path)
        listing = self.files.list()
        self.parts_status = self._scan(listing)
        self._parts: list[_Part] = []
        for st in self.parts_status:
            if st.status == "complete" or (allow_incomplete and st.status == "writing"):
                part = self._open_part(st, listing)
                if part is not None:
                    self._parts.append(part)
        self.ids: list[str] = [i for p in self._parts for i in p.ids]
        self._index = {uid: k for k, uid in enumerate(self.ids)}
        self._where = [(pi, j) for pi, p in enumerate(self._parts) for j in range(p.n)]

    def _scan(self, listing: dict[str, int]) -> list[PartStatus]:
        n_parts = self.meta.n_parts
        found: dict[int, PartStatus] = {}
        folders = {rel.split("/", 1)[0] for rel in listing if "/" in rel}
        for name in sorted(folders):
            m = PART_RE.match(name)
            if not m:
                continue
            i, n = int(m.group(1)), int(m.group(2))
            if n != n_parts:
                raise StoreError(f"{self.path}/{name} belongs to a {n}-part job but the store has {n_parts} parts")
            locked = f"{name}.lock" in listing
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
                    a = dict(self.root[name].attrs) if f"{name}/zarr.json" in listing else None
                if a is None:
                    raise FileNotFoundError("missing")
                st = PartStatus(name, i, a.get("status", "writing"), int(a.get("n_expected", 0)),
                                int(a.get("committed", {}).get("n", 0)), int(a.get("committed", {}).get("frames", 0)),
                                dict(a.get("failed") or {}), locked, dict(a.get("notes") or {}),
                                format=int(a.get("format", 1)), attrs=a)
            except Exception as e:  # a deleted or corrupt zarr.json, attrs of the wrong type
                found[i] = PartStatus(name, i, "damaged", 0, 0, 0, {}, locked,
                                      damage={f"{name}/zarr.json": f"missing or unreadable part metadata ({short(e)})"})
                continue
            if st.status == "damaged":
                st.damage = dict((a.get("damage") or {}).get("files") or {f"{name}/zarr.json": "marked damaged"})
            found[i] = st
        return [found.get(i) or PartStatus(name, i, "missing", 0, 0, 0, {}, f"{name}.lock" in listing)
                for i, name in ((i, f"part-{i:05d}-of-{n_parts:05d}") for i in range(n_parts))]

    def _open_part(self, st: PartStatus, listing: dict[str, int]) -> _Part | None:
        """Check one part structurally (see integrity.py) and open it; a failing part becomes ``damaged``."""
        complete = st.status == "complete"
        sums = (st.attrs.get("checksums") or {}) if complete else {}
        for rel, rec in sums.items():  # whole-file reads of a complete part are checked from now on
            self._vstore.sums[f"{st.name}/{rel}"] = tuple(rec)
        damage, data = check_part(self.root[st.name], st.name, st.attrs, listing, complete)
        if damage:
            st.status, st.damage = "damaged", damage
            return None
        return _Part(st, data)

    def _bad_file(self, key: str, why: str) -> ChecksumError:
        """The error for a file that fails its checksum while being read."""
        m = PART_RE.match(key.split("/", 1)[0])
        index = int(m.group(1)) if m else 0
        return ChecksumError(f"store {self.path}: {key} is damaged ({why}); run `imo verify {self.path}` (it marks "
                             f"the part damaged), then rebuild the part with `{self.rebuild_command(index)}`", key, why)

    def rebuild_command(self, index: int) -> str:
        """The command that rebuilds part ``index`` (`imo extract --shard i/n`, or the re-import of a .csd)."""
        return rebuild_command(self.path, self.meta, index)

    def damage_message(self, st: PartStatus) -> str:
        """One line: the damaged part, its first bad file and the command that rebuilds it."""
        (key, why), more = next(iter(st.damage.items())), len(st.damage) - 1
        extra = f" and {more} more file(s) (`imo verify {self.path}` lists them)" if more else ""
        return (f"store {self.path}: part {st.index} is damaged: {key}: {why}{extra}; rebuild the part with "
                f"`{self.rebuild_command(st.index)}`")

    @contextmanager
    def _reading(self, part: _Part):
        """Turn a failure inside zarr while reading ``part`` into one line naming the part and the fix."""
        try:
            yield
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"store {self.path}: reading part {part.index} failed ({short(e)}); run `imo verify "
                             f"{self.path}` to find the damaged file, then rebuild the part with "
                             f"`{self.rebuild_command(part.index)}`") from None

    def _ensure_verified(self, part: _Part) -> None:
        """After a bulk read of ``part``: check any values shard zarr did not read whole (so it was not checked)."""
        for key in part.shard_keys:
            want = self._vstore.sums.get(key)
            if want is not None and key not in self._vstore.verified:
                try:
                    got = self.files.crc(key)
                except OSError:
                    got = None
                if got is None or tuple(got) != tuple(want):
                    raise self._bad_file(key, "missing" if got is None else "its bytes do not match the checksum "
                                                                              "recorded when it was written")
                self._vstore.verified.add(key)

    # --- checks ------------------------------------------------------------
    def check(self, modality: str | None = None, manifest=None, expect: StoreMeta | None = None,
              keys: tuple[str, ...] = ENCODER_IDENTITY, against: str = "") -> "EmbeddingStore":
        """The one place a store is verified against what a consumer needs; returns ``self``.

        Refuses (StoreError, one line naming the store and the fix) a store of another ``modality``,
        an unfinished part, parts made by different encoders, a store made from another ``manifest``
        (or holding ids it lacks), and one whose meta differs from ``expect`` on ``keys`` (``against``
        names where ``expect`` came from, e.g. the run that was trained on it).
        """
        p, meta = self.path, self.meta
        if modality is not None and meta.modality != modality:
            raise StoreError(f"store {p} holds {meta.modality} embeddings but was given for {modality}; "
                             f"fix --store {modality[0]}=PATH")
        for st in self.parts_status:
            if st.status == "damaged":
                raise StoreError(self.damage_message(st))
            if st.status != "complete":
                raise StoreError(f"store {p}: part {st.index} is {st.status} ({st.n_committed}/{st.n_expected} "
                                 f"utterances); finish it with `{self.rebuild_command(st.index)}`")
        want = (meta.n_layers, meta.dim)
        for part in self._parts:
            got = tuple(part.values.shape[1:])
            if got != want:
                raise StoreError(f"store {p}: a part holds [layers, dim] = {list(got)} but the store's encoder "
                                 f"({meta.encoder.get('type')}) makes {list(want)}: parts were made by different "
                                 f"encoders; re-extract the odd part with the store's encoder or write a new store")
        if manifest is not None:
            if meta.manifest_fingerprint != manifest.fingerprint:
                raise StoreError(f"store {p} was extracted from a different manifest (fingerprint "
                                 f"{meta.manifest_fingerprint}, {manifest.source} has {manifest.fingerprint}); "
                                 f"pass the manifest it was made from, or re-extract it")
            known = manifest.by_id()
            stray = [i for i in self.ids if i not in known]
            if stray:
                raise StoreError(f"store {p} holds {len(stray)} id(s) not in {manifest.source} (e.g. {stray[0]!r}); "
                                 f"it belongs to another manifest: re-extract it")
        if expect is not None:
            diff = meta.compatible(expect, keys)
            if diff:
                key, have, wanted = diff
                raise StoreError(f"{meta.modality} store {p} has {key}={have!r} but {against or 'the caller'} "
                                 f"expects {key}={wanted!r}; pass the store made with the same encoder "
                                 f"(--store {meta.modality[0]}=PATH) or re-extract it")
        return self

    def content_fingerprint(self) -> str:
        """Hash of what a reader of this store gets: the store's meta and, per part, its status, committed
        counts, failures and checksums. Re-extracting the store (other weights, other data) changes it."""
        h = hashlib.sha256(json.dumps(self.meta.identity(), sort_keys=True).encode())
        for st in self.parts_status:
            attrs = st.attrs
            h.update(json.dumps({k: attrs.get(k) for k in ("status", "committed", "failed", "checksums")},
                                sort_keys=True, default=str).encode())
        return h.hexdigest()[:16]

    # --- description -------------------------------------------------------
    @property
    def modality(self) -> str:
        return self.meta.modality

    @property
    def n_layers(self) -> int:
        return self.meta.n_layers

    @property
    def dim(self) -> int:
        return self.meta.dim

    @property
    def complete(self) -> bool:
        return all(p.status == "complete" for p in self.parts_status)

    @property
    def failed(self) -> dict[str, str]:
        return {k: v for p in self.parts_status for k, v in p.failed.items()}

    @property
    def n_frames(self) -> int:
        return sum(p.frames for p in self._parts)

    @property
    def nbytes(self) -> int:
        """Bytes of values + pooled once loaded into memory."""
        L, D = self.n_layers, self.dim
        return self.n_frames * L * D * self.dtype.itemsize + len(self) * L * D * 4

    @property
    def dtype(self) -> np.dtype:
        """The dtype of stored values (float16 or float32, the store's ``dtype`` option)."""
        return np.dtype(self.meta.dtype)

    def size_on_disk(self) -> int:
        if is_url(self.path):
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.path)
            return int(fs.du(root, total=True))
        return sum(f.stat().st_size for f in Path(self.path).rglob("*") if f.is_file())

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, uid: str) -> bool:
        return uid in self._index

    def index_of(self, uid: str) -> int:
        try:
            return self._index[uid]
        except KeyError:
            raise StoreError(f"utterance {uid!r} is not in store {self.path} (failed or not yet extracted?)") from None

    # --- access --------------------------------------------------------------
    def lengths(self) -> np.ndarray:
        """Frames per utterance, int64 ``[n]``."""
        if not self._parts:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(p.offsets) for p in self._parts])

    def get(self, key: str | int) -> np.ndarray:
        """One utterance's values, ``[T, L, D]`` in the store's dtype, by id or index."""
        i = self.index_of(key) if isinstance(key, str) else int(key)
        pi, j = self._where[i]
        p = self._parts[pi]
        with self._reading(p):
            return np.asarray(p.values[p.offsets[j]:p.offsets[j + 1]])

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """(id, values) for every utterance, reading each shard file once and whole (so its checksum is checked)."""
        for p in self._parts:
            with self._reading(p):
                j, carry, base = 0, None, 0          # carry: frames of utterances that continue into the next shard
                for k in range(math.ceil(p.frames / p.rows)):
                    block = p.shard(k)
                    if carry is not None:
                        block = np.concatenate([carry, block])
                    else:
                        base = k * p.rows
                    end = min((k + 1) * p.rows, p.frames)
                    while j < p.n and p.offsets[j + 1] <= end:
                        yield p.ids[j], block[p.offsets[j] - base:p.offsets[j + 1] - base]
                        j += 1
                    carry = block[p.offsets[j] - base:] if j < p.n and p.offsets[j] < end else None
                    base = p.offsets[j] if carry is not None else base
                self._ensure_verified(p)

    def pooled(self) -> np.ndarray:
        """Mean over frames for every utterance, float32 ``[n, L, D]``."""
        if not self._parts:
            return np.zeros((0, self.n_layers, self.dim), dtype=np.float32)
        out = []
        for p in self._parts:
            with self._reading(p):
                out.append(np.asarray(p.pooled_arr[: p.n]))
        return np.concatenate(out)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(values ``[frames, L, D]`` in the store's dtype, offsets int64 ``[n + 1]``) of all utterances in memory."""
        values = np.empty((self.n_frames, self.n_layers, self.dim), self.dtype)
        base = 0
        for p in self._parts:
            with self._reading(p):
                for k in range(math.ceil(p.frames / p.rows)):
                    block = p.shard(k)
                    values[base + k * p.rows: base + k * p.rows + len(block)] = block
                self._ensure_verified(p)
            base += p.frames
        return values, self.global_offsets()

    def global_offsets(self) -> np.ndarray:
        offs, base = [np.zeros(1, dtype=np.int64)], 0
        for p in self._parts:
            offs.append(p.offsets[1:] + base)
            base += p.frames
        return np.concatenate(offs)

    def to_dask(self):
        """Values as one dask array ``[frames, L, D]`` (a dask chunk per Zarr shard, each read whole and so
        checked against its checksum) and global offsets."""
        import dask.array as da

        arrays = [da.from_zarr(p.values, chunks=p.values.shards or p.values.chunks)[: p.frames] for p in self._parts]
        values = da.concatenate(arrays) if arrays else da.zeros((0, self.n_layers, self.dim), dtype=self.dtype)
        return values, self.global_offsets()


def open_store(path: str | Path, allow_incomplete: bool = False) -> EmbeddingStore:
    """Open a store for reading; see EmbeddingStore."""
    return EmbeddingStore(path, allow_incomplete)
