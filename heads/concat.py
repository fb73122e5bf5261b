"""Baseline: mean-pooled vector per modality, concatenated, then an MLP."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec, masked_mean


@dataclass
class ConcatConfig(HeadConfig):
    hidden: int = 256
    dropout: float = 0.2


@register_head("concat")
class ConcatHead(Head):
    """Pooled vectors of every modality (masked mean over frames and stored layers) -> MLP. An absent modality
    pools to zeros, which its LayerNorm maps to a learned constant (its bias)."""

    Config = ConcatConfig
    layers = "last"

    def __init__(self, config: ConcatConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        width = sum(s.dim for s in inputs.values())
        self.norm = nn.ModuleDict({m: nn.LayerNorm(s.dim) for m, s in inputs.items()})
        self.mlp = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, config.hidden), nn.GELU(),
                                 nn.Dropout(config.dropout), nn.Linear(config.hidden, n_outputs))

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        pooled = [self.norm[m](masked_mean(batch[m][0], batch[m][1]).mean(1)) for m in self.modalities]  # (B, D_m)
        return self.mlp(torch.cat(pooled, dim=-1))  # (B, sum D) -> (B, C)
