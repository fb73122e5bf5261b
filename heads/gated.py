"""Gated fusion of pooled modality vectors (a gated multimodal unit, after Arevalo et al., 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec, masked_mean, present
from .late import absent_aware_softmax


@dataclass
class GatedConfig(HeadConfig):
    d_model: int = 64              # width of every modality's candidate vector
    hidden: int = 64               # MLP after the fusion
    dropout: float = 0.1


@register_head("gated")
class GatedHead(Head):
    """Per modality ``u_m = LayerNorm(masked mean)`` and a candidate ``h_m = tanh(W_m u_m)`` ``(B, d)``; gates
    ``g = softmax over modalities of W_g [u_1; ...; u_M]`` per dimension ``(B, M, d)``; fused ``sum_m g_m * h_m``
    -> dropout -> Linear -> GELU -> dropout -> Linear. Absent modalities get gate 0 (and u_m = 0 in the gate input)."""

    Config = GatedConfig
    layers = "last"
    min_modalities = 2

    def __init__(self, config: GatedConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c, d = config, config.d_model
        self.norm = nn.ModuleDict({m: nn.LayerNorm(s.dim) for m, s in inputs.items()})
        self.candidate = nn.ModuleDict({m: nn.Linear(s.dim, d) for m, s in inputs.items()})
        self.gate = nn.Linear(sum(s.dim for s in inputs.values()), len(inputs) * d)
        self.mlp = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(d, c.hidden), nn.GELU(), nn.Dropout(c.dropout),
                                 nn.Linear(c.hidden, n_outputs))

    def gates(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Gates ``(B, M, d)`` (summing to 1 over present modalities) and candidates ``(B, M, d)``."""
        here = torch.stack([present(batch[m][1]) for m in self.modalities], 1)  # (B, M)
        u = [self.norm[m](masked_mean(batch[m][0].mean(2), batch[m][1])) * here[:, k, None].to(torch.float32)
             for k, m in enumerate(self.modalities)]              # M x (B, D_m), zero when absent
        h = torch.stack([torch.tanh(self.candidate[m](v)) for m, v in zip(self.modalities, u)], 1)  # (B, M, d)
        g = self.gate(torch.cat(u, -1)).view(h.shape)              # (B, M, d)
        return absent_aware_softmax(g, here), h

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        g, h = self.gates(batch)
        return self.mlp((g * h).sum(1))                            # (B, d) -> (B, C)
