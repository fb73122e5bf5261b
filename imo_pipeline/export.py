"""Write an embedding store to one HDF5 file (``imo export STORE --format hdf5``).

Layout of the file::

    /               attrs: imo_format (1), modality, dim, layers (JSON), frame_rate,
                           encoder (JSON), encoder_fingerprint, manifest_fingerprint, source_store
    /ids            string  [n]                utterance ids, store order
    /offsets        int64   [n + 1]            utterance i is values[offsets[i]:offsets[i+1]]
    /lengths        int64   [n]                frames per utterance
    /values         float16 [frames, L, D]     all utterances concatenated (gzip-free, chunked; float32 for
                                               a store written with --dtype float32; attr ``dtype``)
    /pooled         float32 [n, L, D]          mean over frames

``--format csd`` writes the CMU-MultimodalSDK layout instead (one entry per
utterance, ``features [T, L*D]`` and frame intervals from the frame rate; ids escaped as HDF5 names,
see csd.py, so the file re-imports to the same ids).

Both refuse a store with a damaged, unfinished or missing part (``EmbeddingStore.check``), read every
shard whole (so each is checked against its checksum) and write to a temp file renamed at the end.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from .errors import ConfigError
from .store import open_store
from .store.integrity import disk_errors

FORMATS = ("hdf5", "csd")


def export_hdf5(store_path: str | Path, out: str | Path, progress: bool = True) -> Path:
    """Write every utterance of a store into one HDF5 file (layout in the module docstring)."""
    st = open_store(store_path).check()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lengths = st.lengths()
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tmp = out.with_name(out.name + ".partial")
    try:
        with disk_errors(str(out), resumes=False):
            _write_hdf5(st, tmp, store_path, offsets, lengths, progress)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(out)
    return out


def _write_hdf5(st, tmp: Path, store_path, offsets: np.ndarray, lengths: np.ndarray, progress: bool) -> None:
    m = st.meta
    L, D = m.n_layers, m.dim
    with h5py.File(tmp, "w") as h5:
        h5.attrs.update({"imo_format": 1, "modality": m.modality, "dim": D, "layers": json.dumps(m.layers),
                         "frame_rate": m.frame_rate if m.frame_rate is not None else float("nan"),
                         "encoder": json.dumps(m.encoder, sort_keys=True), "encoder_fingerprint": m.encoder_fingerprint,
                         "manifest_fingerprint": m.manifest_fingerprint, "source_store": str(store_path),
                         "dtype": m.dtype})
        h5.create_dataset("ids", data=np.array(st.ids, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("offsets", data=offsets)
        h5.create_dataset("lengths", data=lengths.astype(np.int64))
        total = int(offsets[-1])
        values = h5.create_dataset("values", shape=(total, L, D), dtype=m.dtype,
                                   chunks=(max(1, min(total, (1 << 20) // max(1, L * D * st.dtype.itemsize))), L, D)
                                   if total else None)
        for i, (_, v) in enumerate(tqdm(st, total=len(st), desc="export", unit="utt", disable=not progress)):
            values[offsets[i]:offsets[i + 1]] = v  # (T, L, D)
        h5.create_dataset("pooled", data=st.pooled())


def export_csd(store_path: str | Path, out: str | Path, progress: bool = True) -> Path:
    """Write a store as a CMU-MultimodalSDK computational sequence (one entry per utterance)."""
    from .csd import write_csd

    st = open_store(store_path).check()
    rate = st.meta.frame_rate or 1.0
    entries = {}
    for uid, v in tqdm(st, total=len(st), desc="export", unit="utt", disable=not progress):
        t = np.arange(len(v) + 1, dtype=np.float64) / rate
        entries[uid] = (v.reshape(len(v), -1).astype(np.float32), np.stack([t[:-1], t[1:]], axis=1))
    root = Path(out).stem
    meta = {"root name": root, "computational sequence description": f"imo {st.meta.modality} embeddings",
            "dimension names": None, "computational sequence version": "1.0", "alignment compatible": True,
            "dataset name": "", "creator": "imo export", "encoder": st.meta.encoder}
    with disk_errors(str(out), resumes=False):
        return write_csd(out, root, entries, meta)


def export_store(store_path: str | Path, out: str | Path, fmt: str = "hdf5", progress: bool = True) -> Path:
    """Export a store in ``fmt`` (one of FORMATS)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    return (export_hdf5 if fmt == "hdf5" else export_csd)(store_path, out, progress)
