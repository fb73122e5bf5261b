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

Entry names: HDF5 cannot use ``/`` (a path separator) or NUL in a name, nor the name ``.``. Files
written by ``write_csd`` (``imo export --format csd``) percent-escape those (and ``%`` itself) and say
so in ``metadata/imo key escaping``; ``CsdFile`` unescapes the names of such files, so ids round-trip.
Files from elsewhere are read by their names as they are.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from .errors import ImoError, StoreError
from .manifest import Manifest, ShardSpec, Utterance
from .store import NonFiniteError, PartWriter, StoreMeta
from .store.integrity import short
from .store.layout import VALUE_DTYPE, check_dtype

ALIGNED_KEY = re.compile(r"^(.*)\[(\d+)\]$")
#: Metadata key (and value) that marks a .csd whose entry names are percent-escaped (see escape_key).
ESCAPE_KEY, ESCAPE_SCHEME = "imo key escaping", "percent: % / NUL and the name '.'"
_ESCAPES = {"%": "%25", "/": "%2F", "\0": "%00"}


def escape_key(uid: str) -> str:
    """An id as an HDF5 name: ``%``, ``/`` and NUL percent-escaped, the name ``.`` as ``%2E``."""
    key = "".join(_ESCAPES.get(c, c) for c in uid)
    return "%2E" if key == "." else key


def unescape_key(key: str) -> str:
    """The id an ``escape_key`` name stands for."""
    return re.sub(r"%(25|2F|00|2E)", lambda m: {"25": "%", "2F": "/", "00": "\0", "2E": "."}[m.group(1)], key)


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
        try:
            top = list(self.h5.keys())
            roots = [k for k in top if isinstance(self.h5.get(k), h5py.Group)
                     and isinstance(self.h5[k].get("data"), h5py.Group)]
        except (KeyError, OSError, ValueError) as e:
            self.h5.close()
            raise StoreError(f"{self.path}: unreadable HDF5 layout ({e}); pass a .csd file from the CMU-MultimodalSDK"
                             ) from None
        if len(roots) != 1:
            self.h5.close()
            shown = ", ".join(top[:5]) + (f" and {len(top) - 5} more" if len(top) > 5 else "")
            raise StoreError(f"{self.path}: expected one top-level group holding a 'data' group (the SDK layout "
                             f"<root>/data/<id>/features), found {len(roots)} among: {shown or 'nothing'}; pass a "
                             f".csd computational sequence")
        self.root_name = roots[0]
        self.data = self.h5[self.root_name]["data"]
        self.metadata = read_metadata(self.h5[self.root_name].get("metadata"))
        escaped = self.metadata.get(ESCAPE_KEY) == ESCAPE_SCHEME
        self._names = {unescape_key(k) if escaped else k: k for k in self.data.keys()}

    def keys(self) -> list[str]:
        """Entry keys (ids; unescaped for files written by imo)."""
        return list(self._names)

    def __contains__(self, key: str) -> bool:
        return key in self._names

    def entry(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(features ``[T, D]``, intervals float64 ``[T, 2]``) of one entry."""
        g = self.data[self._names.get(key, key)]
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
    """Write entries ``{id: (features [T, D], intervals [T, 2])}`` in the SDK's layout, ids escaped as HDF5
    names (``escape_key``; the file says so in its metadata), atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    try:
        _write_csd_file(tmp, root_name, entries, metadata)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def _write_csd_file(tmp: Path, root_name: str, entries: dict, metadata: dict[str, Any] | None) -> None:
    with h5py.File(tmp, "w") as h5:
        root = h5.create_group(escape_key(root_name))
        data = root.create_group("data")
        for key, (feats, intervals) in entries.items():
            g = data.create_group(escape_key(key))
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=intervals)
        meta = root.create_group("metadata")
        for key, value in ({**(metadata or {}), ESCAPE_KEY: ESCAPE_SCHEME}).items():
            ds = meta.create_dataset(key, (1,), dtype=h5py.special_dtype(vlen=str))
            ds[0] = json.dumps(value)


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
    """Features as a ``[T, D]`` float matrix in their own precision (float64 stays float64, so that values
    beyond float32 are reported, not turned into inf)."""
    if feats.dtype.kind not in "fiub":
        raise StoreError(f"{path}: entry {key!r} holds {feats.dtype} values, not numbers (a words/phones sequence?); "
                         f"import a numeric feature sequence (e.g. COVAREP, FACET, OpenFace, GloVe vectors)")
    if feats.dtype.kind != "f":
        feats = feats.astype(np.float64)
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
        try:
            ints = csd.entry(k)[1]
        except (ImoError, OSError, KeyError, ValueError):
            continue  # a broken entry fails on its own when an utterance uses it
        d = ints[:, 1] - ints[:, 0]
        durs.extend(d[d > 0].tolist())
    return round(1.0 / float(np.median(durs)), 4) if durs else None


def _feature_dim(csd: CsdFile, keys: list[str], path: Path) -> int:
    """The feature dim of the file: that of its first entry with rows (a non-numeric first entry refuses the file)."""
    for k in keys:
        try:
            feats = csd.entry(k)[0]
        except (ImoError, OSError, KeyError, ValueError):
            continue
        if feats.dtype.kind not in "fiub" or len(feats):
            return int(_as_matrix(feats, path, k).shape[1])
    raise StoreError(f"{path}: no entry under {csd.root_name}/data has feature rows; pass a .csd with features")


def import_csd(csd_path: str | Path, manifest: Manifest, out: str | Path, modality: str,
               progress: bool = True, dtype: str = VALUE_DTYPE) -> ImportResult:
    """Import a ``.csd`` into an embedding store at ``out`` aligned to ``manifest``'s utterances.

    Each matched utterance becomes ``values[T, 1, D]`` (the .csd's feature rows
    as one "layer"), stored as ``dtype`` (float16, or float32 for features beyond
    float16's +-65504). Per-entry problems (no match, 0 rows, another dim, an
    unreadable entry, values beyond the store's dtype) fail that utterance only:
    recorded in the part's ``failed`` attrs with the reason, and the part still
    completes. NaN/inf values in the released features (COVAREP has -inf) are
    set to 0 and counted. Re-running into the same store adds only what is
    missing, and rebuilds the part if `imo verify` marked it damaged.
    """
    path = Path(csd_path)
    check_dtype(dtype)
    with CsdFile(path) as csd:
        keys = csd.keys()
        if not keys:
            raise StoreError(f"{path}: the .csd has no entries under {csd.root_name}/data")
        dim = _feature_dim(csd, keys, path)
        meta = StoreMeta(
            modality=modality,
            encoder={"type": "csd", "source": path.name, "root_name": csd.root_name,
                     "metadata": {k: v for k, v in csd.metadata.items() if len(json.dumps(v, default=str)) < 2000}},
            encoder_fingerprint=file_fingerprint(path), layers=[0], dim=int(dim),
            frame_rate=_frame_rate(csd, keys), manifest_fingerprint=manifest.fingerprint, dtype=dtype,
            extra={"imported_from": "csd", "csd": str(path.resolve()), "manifest": str(manifest.source)},
        )
        result = ImportResult(store=str(out))
        matcher = Matcher(csd)
        with PartWriter(out, ShardSpec(0, 1), meta, [u.id for u in manifest]) as writer:
            for u in tqdm(manifest.utterances, desc=f"import {path.name}", unit="utt", disable=not progress):
                if u.id in writer.done_ids:
                    result.skipped_existing += 1
                    continue
                how = "its entry"
                try:
                    feats, how = matcher.features(u)
                    if feats is not None:
                        feats = _as_matrix(feats, path, u.id)
                except (ImoError, OSError, KeyError, ValueError, TypeError) as e:
                    result.failed[u.id] = f"{how}: cannot be read ({short(e)})"
                    continue
                if feats is None:
                    result.failed[u.id] = how
                    continue
                if len(feats) == 0:
                    result.failed[u.id] = f"{how}: the entry has 0 feature rows"
                    continue
                if feats.shape[1] != dim:
                    result.failed[u.id] = f"{how}: feature dim {feats.shape[1]} differs from the file's {dim}"
                    continue
                bad = ~np.isfinite(feats)
                if bad.any():
                    feats = np.where(bad, 0.0, feats)
                try:
                    writer.add(u.id, feats[:, None, :])  # (T, 1, D)
                except NonFiniteError as e:
                    result.failed[u.id] = f"{how}: {e}"
                    continue
                if bad.any():
                    result.nonfinite[u.id] = int(bad.sum())
                writer.commit()
                result.imported += 1
            writer.finish(result.failed)
        result.unused_entries = len(set(keys) - matcher.used)
    return result
