"""Switches for the training speed-ups (heads and trainer read them).

Leave them on. Each switched-off path is the slower original, kept so that ``benchmarks/train_head.py`` can
measure every speed-up's "before" in the same run; results agree within float tolerance (dropout masks
come from another random stream).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Speedups:
    """One switch per speed-up (see the module doc)."""

    sdpa: bool = True          # attention by scaled_dot_product_attention on the projections (off: nn.MultiheadAttention)
    start_only: bool = True    # a block whose only use is its start token computes that query alone (off: every query)
    fast_dropout: bool = True  # dropout masks from numpy's SFC64 bits, per run (off: torch.dropout)
    fast_batches: bool = True  # training batches gathered from the in-memory tables as tensors (off: per-item collate)
    fused_adamw: bool = True   # torch's fused AdamW kernel (off: its per-tensor loop)
    fold_input_norm: bool = True  # the input LayerNorm's affine folded into the projection (off: LayerNorm, then Linear)


SPEEDUPS = Speedups()
