"""Missing modalities: dropping whole modalities while training (``--modality-dropout``), so that a fused
head learns to predict when a camera, a microphone or a transcript is missing.

An absent modality has the form of ``heads.base`` (zeros, an all-False mask row); every head turns it into
finite outputs. ``imo evaluate --drop`` and ``imo predict`` without some input feed that form too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a uint64 array -> well-mixed uint64 values of the same shape."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, epoch: int, rows: np.ndarray, n: int) -> np.ndarray:
    """Uniform numbers in [0, 1) ``(len(rows), n)``, a pure function of (seed, epoch, row, column): the draw of a
    sample does not depend on the batch it falls in, so a resumed run draws exactly what it would have."""
    with np.errstate(over="ignore"):
        key = _mix(_mix(np.array([seed], np.uint64) + _GOLDEN) ^ np.uint64(epoch))          # (1,)
        cells = np.asarray(rows, np.int64).astype(np.uint64)[:, None] * np.uint64(n) + np.arange(n, dtype=np.uint64)
        z = _mix(key + cells * _GOLDEN)                                                      # (B, n)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


class ModalityDropout:
    """Makes whole modalities absent per sample with probability ``p`` each, never all of a sample's present
    modalities (one of those it would lose, picked at random, stays). Off (identity) for ``p == 0`` or a single
    modality. Draws are a function of (``seed``, epoch, corpus row), so resuming a run repeats them exactly."""

    def __init__(self, p: float, modalities: Sequence[str], seed: int):
        self.p, self.modalities, self.seed = float(p), list(modalities), int(seed)

    def __bool__(self) -> bool:
        return self.p > 0 and len(self.modalities) > 1

    def __call__(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]], rows: np.ndarray, epoch: int
                 ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``batch`` (collated, ``rows``: the corpus index of each of its samples) with dropped modalities absent."""
        if not self:
            return batch
        from heads import drop_modality

        mods = [m for m in self.modalities if m in batch]
        u = uniforms(self.seed, epoch, rows, len(self.modalities))[:, [self.modalities.index(m) for m in mods]]
        present = np.stack([batch[m][1].any(1).cpu().numpy() for m in mods], axis=1)          # (B, M)
        keep = present & (u >= self.p)
        lost = present.any(1) & ~keep.any(1)                                                 # would lose all
        pick = np.where(present, u, -1.0).argmax(1)                                          # a present one at random
        keep[lost, pick[lost]] = True
        for j, m in enumerate(mods):
            rows_out = present[:, j] & ~keep[:, j]
            if rows_out.any():
                batch = drop_modality(batch, m, torch.from_numpy(rows_out).to(batch[m][1].device))
        return batch
