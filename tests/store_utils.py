"""Helpers for training tests: synthetic embedding stores written with the real PartWriter/StoreMeta."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from audio_utils import write_manifest_lines
from imo_pipeline.manifest import ShardSpec, load_manifest
from imo_pipeline.store import PartWriter, StoreMeta

CLASSES = ["ang", "hap", "neu", "sad"]
# Which bit of the class index (0..3) each modality carries; each modality alone can tell only 2 of 4 classes.
BITS = {"audio": lambda c: c // 2, "text": lambda c: c % 2, "video": lambda c: (c // 2) ^ (c % 2)}
SHAPES = {  # n_layers, dim, frame rate, frame range
    "audio": (2, 16, 50.0, (20, 90)),
    "text": (1, 12, None, (4, 16)),
    "video": (1, 8, 5.0, (3, 10)),
}


QUIET = dict(progress=False, log=lambda *a: None)


@pytest.fixture(autouse=True)
def one_thread(one_thread):
    """conftest's ``one_thread`` for every test of a module that imports this name (the training tests)."""
    yield


def write_store(path: Path, modality: str, items: dict[str, np.ndarray], manifest_fingerprint: str,
                encoder: str = "synthetic", n_parts: int = 1, frame_rate: float | None = None,
                failed: dict[str, str] | None = None) -> Path:
    """A store of ``items`` (id -> ``[T, L, D]``) in ``n_parts`` parts, exactly as extraction writes one."""
    first = next(iter(items.values()))
    L, D = first.shape[1:]
    meta = StoreMeta(modality=modality, encoder={"type": encoder, "source": None, "layers": "all"},
                     encoder_fingerprint=f"fp-{encoder}-{L}x{D}", layers=list(range(L)), dim=D,
                     frame_rate=frame_rate, manifest_fingerprint=manifest_fingerprint, n_parts=n_parts)
    ids = list(items) + list(failed or {})
    for p in range(n_parts):
        spec = ShardSpec(p, n_parts)
        lo, hi = p * len(ids) // n_parts, (p + 1) * len(ids) // n_parts
        part_ids = ids[lo:hi]
        with PartWriter(path, spec, meta, part_ids, shard_mb=1, chunk_mb=0.25) as w:
            for uid in part_ids:
                if uid in items:
                    w.add(uid, items[uid])
            w.finish({k: v for k, v in (failed or {}).items() if k in part_ids})
    return path


def synth_sequence(rng: np.random.Generator, modality: str, bit: int, direction: np.ndarray,
                   strength: float = 1.5) -> np.ndarray:
    """Noise frames ``[T, L, D]`` with ``±direction`` added to about half of the frames (sign = ``bit``)."""
    L, D, _, (lo, hi) = SHAPES[modality]
    T = int(rng.integers(lo, hi))
    x = rng.standard_normal((T, L, D)).astype(np.float32)
    on = rng.random(T) < 0.5
    on[rng.integers(T)] = True
    x[on] += (1.0 if bit else -1.0) * strength * direction
    return x


def make_partial_info_set(root: Path, per_class: int = 40, modalities=("audio", "text", "video"), seed: int = 0,
                          task: str = "classification", folds: int = 0, drop: dict[str, list[str]] | None = None,
                          speakers: int = 0):
    """A 4-class set where each modality carries one bit of the class (see BITS) + stores for ``modalities``.

    Splits: 60 % train, 20 % valid, 20 % test per class; ``folds`` > 0 adds a ``fold`` field (session);
    ``speakers`` > 0 adds a ``speaker`` field, that many speakers per fold (or in all, without folds).
    ``task="regression"`` makes labels numbers in [-3, 3] from the class. Returns (manifest path, {modality: store}).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, classes = [], []
    for c in range(4):
        for i in range(per_class):
            split = "train" if i < 0.6 * per_class else "valid" if i < 0.8 * per_class else "test"
            label = CLASSES[c] if task != "regression" else float(-3 + 2 * c) * 0.75 + float(rng.uniform(-0.2, 0.2))
            line = {"id": f"{CLASSES[c]}_{i:03d}", "label": label, "split": split}
            if folds:
                line["fold"] = f"Ses{i % folds + 1:02d}"
            if speakers:
                line["speaker"] = f"{line.get('fold', 'S')}-spk{(i // max(folds, 1)) % speakers}"
            lines.append(line)
            classes.append(c)
    order = rng.permutation(len(lines))
    lines, classes = [lines[k] for k in order], [classes[k] for k in order]
    manifest = write_manifest_lines(root / "manifest.jsonl", lines)
    fp = load_manifest(manifest).fingerprint
    stores = {}
    for m in modalities:
        L, D, rate, _ = SHAPES[m]
        direction = rng.standard_normal((L, D)).astype(np.float32)
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        dropped = set((drop or {}).get(m, []))
        items = {ln["id"]: synth_sequence(rng, m, BITS[m](c), direction)
                 for ln, c in zip(lines, classes) if ln["id"] not in dropped}
        stores[m] = write_store(root / f"{m}.zarr", m, items, fp, frame_rate=rate,
                                failed={k: "decode error: corrupt file" for k in dropped})
    return manifest, stores
