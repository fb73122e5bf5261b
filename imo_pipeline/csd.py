"""CMU-MultimodalSDK computational sequences (``.csd``) -> imo embedding stores.

A ``.csd`` is HDF5 in the SDK's layout (``mmsdk/mmdatasdk/computational_sequence/file_ops.py``)::

    /<root name>/data/<video id>/features    [T, D]  one row per interval
    /<root name>/data/<video id>/intervals   [T, 2]  start, end in seconds
    /<root name>/metadata/<key>              1-element string dataset, JSON-encoded value

Entries are keyed by video id (unaligned sequences, absolute times) or by
``<video id>[k]`` (sequences the SDK aligned to label segment k). Each
manifest utterance is matched by (1) its id, (2) the ``<video id>[k]`` entry
that overlaps its interval most, or (3) the rows of its video's entry whose
intervals overlap the utterance interval (``video_id`` + ``interval`` fields,
which `imo prepare mosi/mosei` write, or its media segment's start/end).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
from tqdm import tqdm

from .errors import StoreError
from .manifest import Manifest, ShardSpec, Utterance
from .store import PartWriter, StoreMeta

ALIGNED_KEY = re.compile(r"^(.*)\[(\d+)\]$")


class CsdFile:
    """A ``.csd`` opened for reading (use as a context manager)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"computational sequence {self.path} does not exist; check the path")
        try:
            self.h5 = h5py.File(self.path, "r")
        except OSError as e:
            raise StoreError(f"{self.path} is not an HDF5 computational sequence ({e}); "
                             f"pass a .csd file from the CMU-MultimodalSDK") from None
        roots = [k for k in self.h5.keys() if isinstance(self.h5[k], h5py.Group) and "data" in self.h5[k]]
        if len(roots) != 1:
            self.h5.close()
            raise StoreError(f"{self.path}: expected one top-level group holding 'data' (the SDK layout), "
                             f"found {list(self.h5.keys())}")
        self.root_name = roots[0]
        self.data = self.h5[self.root_name]["data"]
        self.metadata = read_metadata(self.h5[self.root_name].get("metadata"))

    def keys(self) -> list[str]:
        return list(self.data.keys())

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def entry(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(features ``[T, D]``, intervals float64 ``[T, 2]``) of one entry."""
        g = self.data[key]
        if "features" not in g or "intervals" not in g:
            raise StoreError(f"{self.path}: entry {key!r} lacks 'features' or 'intervals'")
        return g["features"][()], np.asarray(g["intervals"][()], dtype=np.float64).reshape(-1, 2)

    def close(self) -> None:
        self.h5.close()

    def __enter__(self) -> "CsdFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metadata(group: h5py.Group | None) -> dict[str, Any]:
    """The SDK's metadata group as a dict (values JSON-decoded where they are JSON)."""
    out: dict[str, Any] = {}
    if group is None:
        return out
    for key in group.keys():
        raw = group[key][()]
        raw = raw[0] if getattr(raw, "shape", ()) else raw
        raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def write_csd(path: str | Path, root_name: str, entries: dict[str, tuple[np.ndarray, np.ndarray]],
              metadata: dict[str, Any] | None = None) -> Path:
    """Write entries ``{key: (features [T, D], intervals [T, 2])}`` in the SDK's layout."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h5:
        root = h5.create_group(root_name)
        data = root.create_group("data")
        for key, (feats, intervals) in entries.items():
            g = data.create_group(key)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=intervals)
        meta = root.create_group("metadata")
        for key, value in (metadata or {}).items():
            ds = meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(value)
    return path


def utterance_interval(u: Utterance) -> tuple[float, float] | None:
    """(start, end) in the source video's time, from ``interval`` or a media segment with an end."""
    iv = u.extra.get("interval")
    if isinstance(iv, (list, tuple)) and len(iv) == 2:
        return float(iv[0]), float(iv[1])
    for seg in (u.video, u.audio):
        if seg is not None and seg.end is not None:
            return seg.start, seg.end
    return None


def _overlap(a0: float, a1: float, b0: np.ndarray, b1: np.ndarray) -> np.ndarray:
    return np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None)


class Matcher:
    """Finds the rows of a ``.csd`` that belong to a manifest utterance."""

    def __init__(self, csd: CsdFile):
        self.csd = csd
        self.keys = set(csd.keys())
        self.aligned: dict[str, list[str]] = {}
        for k in self.keys:
            m = ALIGNED_KEY.match(k)
            if m:
                self.aligned.setdefault(m.group(1), []).append(k)
        self.used: set[str] = set()

    def features(self, u: Utterance) -> tuple[np.ndarray | None, str]:
        """(features ``[T, D]`` or None, how it matched or why not)."""
        if u.id in self.keys:
            self.used.add(u.id)
            return self.csd.entry(u.id)[0], "id"
        vid = str(u.extra.get("video_id") or "")
        iv = utterance_interval(u)
        if vid in self.aligned:
            if iv is None:
                return None, f"the .csd has aligned entries {vid}[k] but the utterance has no interval to pick one"
            best, score = None, 0.0
            for k in self.aligned[vid]:
                ints = self.csd.entry(k)[1]
                if len(ints):
                    s = float(_overlap(iv[0], iv[1], ints[:1, 0], ints[-1:, 1])[0])
                    if s > score:
                        best, score = k, s
            if best is None or score < 0.5 * (iv[1] - iv[0]):
                return None, f"no {vid}[k] entry covers half of the interval [{iv[0]:.2f}, {iv[1]:.2f}] s"
            self.used.add(best)
            return self.csd.entry(best)[0], f"aligned entry {best}"
        if vid in self.keys:
            if iv is None:
                return None, f"the .csd entry {vid!r} is a whole video and the utterance has no interval"
            feats, ints = self.csd.entry(vid)
            rows = _overlap(iv[0], iv[1], ints[:, 0], ints[:, 1]) > 1e-6  # float-noise touching frames are out
            self.used.add(vid)
            if not rows.any():
                return None, f"entry {vid!r} has no rows inside [{iv[0]:.2f}, {iv[1]:.2f}] s"
            return feats[rows], f"rows of {vid} in [{iv[0]:.2f}, {iv[1]:.2f}] s"
        return None, (f"no entry {u.id!r}" + (f" or {vid!r}" if vid else "")
                      + " in the .csd; check that the manifest and the .csd are from the same dataset")


@dataclass
class ImportResult:
    store: str
    imported: int = 0
    skipped_existing: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    nonfinite: dict[str, int] = field(default_factory=dict)   # id -> values replaced by 0
    unused_entries: int = 0

    def summary(self) -> str:
        s = (f"{self.imported} utterances imported into {self.store}, {len(self.failed)} failed, "
             f"{self.unused_entries} .csd entries matched no utterance")
        if self.skipped_existing:
            s += f", {self.skipped_existing} already there"
        if self.nonfinite:
            s += (f"; {sum(self.nonfinite.values())} non-finite values (NaN/inf) in "
                  f"{len(self.nonfinite)} utterances were set to 0")
        return s


def _as_matrix(feats: np.ndarray, path: Path, key: str) -> np.ndarray:
    if feats.dtype.kind not in "fiub":
        raise StoreError(f"{path}: entry {key!r} holds {feats.dtype} values, not numbers (a words/phones sequence?); "
                         f"import a numeric feature sequence (e.g. COVAREP, FACET, OpenFace, GloVe vectors)")
    feats = feats.astype(np.float32, copy=False)
    return feats.reshape(len(feats), -1) if feats.ndim != 2 else feats


def file_fingerprint(path: Path) -> str:
    """SHA-256 of the file's bytes (first 16 hex digits)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _frame_rate(csd: CsdFile, keys: list[str]) -> float | None:
    durs = []
    for k in keys[:20]:
        ints = csd.entry(k)[1]
        d = ints[:, 1] - ints[:, 0]
        durs.extend(d[d > 0].tolist())
    return round(1.0 / float(np.median(durs)), 4) if durs else None


def import_csd(csd_path: str | Path, manifest: Manifest, out: str | Path, modality: str,
               progress: bool = True) -> ImportResult:
    """Import a ``.csd`` into an embedding store at ``out`` aligned to ``manifest``'s utterances.

    Each matched utterance becomes ``values[T, 1, D]`` (the .csd's feature rows
    as one "layer"). Unmatched utterances are recorded in the part's ``failed``
    attrs with the reason; NaN/inf values (COVAREP has -inf) are set to 0 and
    counted. Re-running into the same store adds only what is missing.
    """
    path = Path(csd_path)
    with CsdFile(path) as csd:
        keys = csd.keys()
        if not keys:
            raise StoreError(f"{path}: the .csd has no entries under {csd.root_name}/data")
        dim = _as_matrix(csd.entry(keys[0])[0], path, keys[0]).shape[1]
        meta = StoreMeta(
            modality=modality,
            encoder={"type": "csd", "source": path.name, "root_name": csd.root_name,
                     "metadata": {k: v for k, v in csd.metadata.items() if len(json.dumps(v, default=str)) < 2000}},
            encoder_fingerprint=file_fingerprint(path), layers=[0], dim=int(dim),
            frame_rate=_frame_rate(csd, keys), manifest_fingerprint=manifest.fingerprint,
            extra={"imported_from": "csd"},
        )
        result = ImportResult(store=str(out))
        matcher = Matcher(csd)
        with PartWriter(out, ShardSpec(0, 1), meta, [u.id for u in manifest]) as writer:
            for u in tqdm(manifest.utterances, desc=f"import {path.name}", unit="utt", disable=not progress):
                if u.id in writer.done_ids:
                    result.skipped_existing += 1
                    continue
                feats, how = matcher.features(u)
                if feats is None:
                    result.failed[u.id] = how
                    continue
                feats = _as_matrix(feats, path, u.id)
                if feats.shape[1] != dim:
                    result.failed[u.id] = f"{how}: feature dim {feats.shape[1]} differs from the file's {dim}"
                    continue
                bad = ~np.isfinite(feats)
                if bad.any():
                    result.nonfinite[u.id] = int(bad.sum())
                    feats = np.where(bad, 0.0, feats)
                writer.add(u.id, feats[:, None, :])  # (T, 1, D)
                writer.commit()
                result.imported += 1
            writer.finish(result.failed)
        result.unused_entries = len(set(keys) - matcher.used)
    return result


def iter_entries(path: str | Path) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """(key, features, intervals) for every entry of a ``.csd``."""
    with CsdFile(path) as csd:
        for k in csd.keys():
            f, i = csd.entry(k)
            yield k, f, i
