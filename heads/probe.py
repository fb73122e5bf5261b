"""Baseline: a linear probe on one modality with a learnable softmax weighting of stored layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec, masked_mean


@dataclass
class ProbeConfig(HeadConfig):
    dropout: float = 0.0


@register_head("probe")
class ProbeHead(Head):
    """softmax(w) . layers -> masked mean over frames -> linear. Works best on stores kept with ``--layers all``."""

    Config = ProbeConfig
    layers = "all"
    max_modalities = 1

    def __init__(self, config: ProbeConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        spec = next(iter(inputs.values()))
        self.layer_logits = nn.Parameter(torch.zeros(spec.n_layers))
        self.norm = nn.LayerNorm(spec.dim)
        self.drop = nn.Dropout(config.dropout)
        self.linear = nn.Linear(spec.dim, n_outputs)

    def layer_weights(self) -> torch.Tensor:
        """Softmax weights over stored layers ``(L,)``."""
        return torch.softmax(self.layer_logits, 0)

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        x, mask = batch[self.modalities[0]]                              # (B, T, L, D), (B, T)
        mixed = torch.einsum("btld,l->btd", x, self.layer_weights())   # (B, T, D)
        return self.linear(self.drop(self.norm(masked_mean(mixed, mask))))  # (B, C)
