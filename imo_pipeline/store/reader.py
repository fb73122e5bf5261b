"""Reading a store: all complete parts seen as one table of utterances."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr

from ..errors import StoreError
from ..paths import is_url
from .layout import ENCODER_IDENTITY, PART_RE, StoreMeta


@dataclass
class PartStatus:
    name: str
    index: int
    status: str          # "complete", "writing" (incomplete) or "missing"
    n_expected: int
    n_committed: int
    frames: int
    failed: dict[str, str]
    locked: bool = False
    notes: dict[str, str] = field(default_factory=dict)  # id -> note on a stored utterance (truncated text, faceless frames)


class _Part:
    def __init__(self, group: zarr.Group, n: int, frames: int):
        self.values = group["values"]
        self.offsets = np.asarray(group["offsets"][: n + 1])
        self.ids = [str(x) for x in group["ids"][:n]] if n else []
        self.pooled_arr = group["pooled"]
        self.n, self.frames = n, frames


class EmbeddingStore:
    """A store opened for reading.

    Only complete parts are read (``allow_incomplete=True`` also reads the
    committed rows of parts still being written). Utterance order: parts in
    index order, and write order inside a part.
    """

    def __init__(self, path: str | Path, allow_incomplete: bool = False):
        self.path = str(path)
        if not is_url(self.path) and not Path(self.path).exists():
            raise StoreError(f"store {self.path} does not exist; run `imo extract` first or fix the path")
        try:
            self.root = zarr.open_group(self.path, mode="r")
            self.meta = StoreMeta.from_attrs(dict(self.root.attrs))
        except (KeyError, FileNotFoundError, ValueError, TypeError) as e:
            raise StoreError(f"{self.path} is not an imo embedding store ({e!r})") from None
        self.parts_status = self._scan()
        self._parts: list[_Part] = []
        for st in self.parts_status:
            if st.status == "complete" or (allow_incomplete and st.status == "writing"):
                self._parts.append(_Part(self.root[st.name], st.n_committed, st.frames))
        self.ids: list[str] = [i for p in self._parts for i in p.ids]
        self._index = {uid: k for k, uid in enumerate(self.ids)}
        self._where = [(pi, j) for pi, p in enumerate(self._parts) for j in range(p.n)]

    def _scan(self) -> list[PartStatus]:
        n_parts = self.meta.n_parts
        found: dict[int, PartStatus] = {}
        with warnings.catch_warnings():  # part lock files sit beside the groups
            warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
            names = sorted(self.root.group_keys())
        for name in names:
            m = PART_RE.match(name)
            if not m:
                continue
            i, n = int(m.group(1)), int(m.group(2))
            g = self.root[name]
            a = dict(g.attrs)
            if n != n_parts:
                raise StoreError(f"{self.path}/{name} belongs to a {n}-part job but the store has {n_parts} parts")
            found[i] = PartStatus(name, i, a.get("status", "writing"), a["n_expected"], a["committed"]["n"],
                                  a["committed"]["frames"], a.get("failed", {}), self._locked(name),
                                  dict(a.get("notes") or {}))
        return [found.get(i) or PartStatus(name, i, "missing", 0, 0, 0, {}, self._locked(name))
                for i, name in ((i, f"part-{i:05d}-of-{n_parts:05d}") for i in range(n_parts))]

    def _locked(self, part: str) -> bool:
        return not is_url(self.path) and os.path.exists(os.path.join(self.path, f"{part}.lock"))

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
            if st.status != "complete":
                raise StoreError(f"store {p}: part {st.index} is {st.status} ({st.n_committed}/{st.n_expected} "
                                 f"utterances); finish it with `imo extract --modality {meta.modality} "
                                 f"--shard {st.index}/{len(self.parts_status)}`")
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
            attrs = dict(self.root[st.name].attrs) if st.status != "missing" else {}
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
        return self.n_frames * L * D * 2 + len(self) * L * D * 4

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
        """One utterance's values, float16 ``[T, L, D]``, by id or index."""
        i = self.index_of(key) if isinstance(key, str) else int(key)
        pi, j = self._where[i]
        p = self._parts[pi]
        return np.asarray(p.values[p.offsets[j]:p.offsets[j + 1]])

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        """(id, values) for every utterance, reading a whole shard at a time."""
        for p in self._parts:
            rows = p.values.shards[0]
            lo = 0
            while lo < p.n:
                end_frame = min(p.frames, (p.offsets[lo] // rows + 1) * rows)
                hi = max(lo + 1, int(np.searchsorted(p.offsets, end_frame, side="right")) - 1)
                hi = min(hi, p.n)
                block = np.asarray(p.values[p.offsets[lo]:p.offsets[hi]])
                for j in range(lo, hi):
                    yield p.ids[j], block[p.offsets[j] - p.offsets[lo]:p.offsets[j + 1] - p.offsets[lo]]
                lo = hi

    def pooled(self) -> np.ndarray:
        """Mean over frames for every utterance, float32 ``[n, L, D]``."""
        if not self._parts:
            return np.zeros((0, self.n_layers, self.dim), dtype=np.float32)
        return np.concatenate([np.asarray(p.pooled_arr[: p.n]) for p in self._parts])

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """(values float16 ``[frames, L, D]``, offsets int64 ``[n + 1]``) of all utterances in memory."""
        vals = [np.asarray(p.values[: p.frames]) for p in self._parts]
        values = np.concatenate(vals) if vals else np.zeros((0, self.n_layers, self.dim), np.float16)
        return values, self.global_offsets()

    def global_offsets(self) -> np.ndarray:
        offs, base = [np.zeros(1, dtype=np.int64)], 0
        for p in self._parts:
            offs.append(p.offsets[1:] + base)
            base += p.frames
        return np.concatenate(offs)

    def to_dask(self):
        """Values as one dask array ``[frames, L, D]`` (a dask chunk per Zarr shard) and global offsets."""
        import dask.array as da

        arrays = [da.from_zarr(p.values, chunks=p.values.shards)[: p.frames] for p in self._parts]
        values = da.concatenate(arrays) if arrays else da.zeros((0, self.n_layers, self.dim), dtype=np.float16)
        return values, self.global_offsets()


def open_store(path: str | Path, allow_incomplete: bool = False) -> EmbeddingStore:
    """Open a store for reading; see EmbeddingStore."""
    return EmbeddingStore(path, allow_incomplete)
