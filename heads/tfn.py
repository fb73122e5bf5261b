"""Tensor Fusion Network (Zadeh et al., EMNLP 2017) on pooled cached embeddings.

Per modality, a subnetwork maps the masked-mean pooled vector to ``h_m``
(LayerNorm -> dropout -> three Linear + ReLU, as the release's ``SubNet`` with
LayerNorm in place of BatchNorm so that a sample's output never depends on its
batch mates); ``z_m = [1; h_m]``; the fused vector is the flattened outer
product ``z_1 (x) z_2 (x) ... (x) z_M`` of size ``prod_m (h_m + 1)``, which holds
every unimodal, bimodal and trimodal product term; a post-fusion MLP
(dropout -> Linear -> ReLU -> Linear -> ReLU -> Linear) gives the logits. An
absent modality has ``h_m = 0``, so only the other modalities' terms remain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imo_pipeline.errors import ConfigError

from . import register_head
from .base import Head, HeadConfig, InputSpec, masked_mean, present

MAX_FUSION_WEIGHTS = 50_000_000  # fused size x post_hidden; above this, say so and point at lmf


@dataclass
class TFNConfig(HeadConfig):
    hidden: int = 32               # h_m per modality (the fused vector has prod (hidden + 1) entries)
    subnet_dropout: float = 0.2
    post_hidden: int = 64          # post-fusion MLP width
    dropout: float = 0.15          # post-fusion dropout


class SubNet(nn.Module):
    """Pooled vector ``(B, D)`` -> ``(B, hidden)``: LayerNorm, dropout, three Linear + ReLU."""

    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.norm, self.drop = nn.LayerNorm(dim), nn.Dropout(dropout)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.net(self.drop(self.norm(v)))                  # (B, hidden)


def pooled_subnets(subnets: nn.ModuleDict, batch: dict[str, tuple[torch.Tensor, torch.Tensor]],
                   modalities: list[str]) -> list[torch.Tensor]:
    """``h_m (B, hidden)`` per modality from masked-mean pooled frames; zero where the modality is absent."""
    hs = []
    for m in modalities:
        x, mask = batch[m]
        h = subnets[m](masked_mean(x.mean(2), mask))              # (B, T, L, D) -> (B, D) -> (B, h)
        hs.append(h * present(mask)[:, None].to(h.dtype))
    return hs


def with_one(h: torch.Tensor) -> torch.Tensor:
    """``[1; h]``: ``(B, d)`` -> ``(B, d + 1)`` (the constant first, as in the release)."""
    return F.pad(h, (1, 0), value=1.0)


def tensor_fusion(hs: list[torch.Tensor]) -> torch.Tensor:
    """Flattened outer product of ``[1; h_m]`` over modalities: ``M x (B, d_m)`` -> ``(B, prod (d_m + 1))``."""
    z = with_one(hs[0])                                            # (B, d_1 + 1)
    for h in hs[1:]:
        z = (z[:, :, None] * with_one(h)[:, None, :]).flatten(1)  # (B, prod so far x (d_m + 1))
    return z


def fused_size(dims: list[int]) -> int:
    """``prod (d_m + 1)``."""
    n = 1
    for d in dims:
        n *= d + 1
    return n


@register_head("tfn")
class TFNHead(Head):
    """Tensor Fusion Network: per-modality pooled subnetworks, outer product of ``[1; h_m]``, MLP."""

    Config = TFNConfig
    layers = "last"

    def __init__(self, config: TFNConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c = config
        self.subnets = nn.ModuleDict({m: SubNet(s.dim, c.hidden, c.subnet_dropout) for m, s in inputs.items()})
        self.fused = fused_size([c.hidden] * len(inputs))
        self.post = nn.Sequential(nn.Dropout(c.dropout), nn.Linear(self.fused, c.post_hidden), nn.ReLU(),
                                  nn.Linear(c.post_hidden, c.post_hidden), nn.ReLU(),
                                  nn.Linear(c.post_hidden, n_outputs))

    @classmethod
    def check_inputs(cls, config: TFNConfig, inputs: dict[str, InputSpec]) -> None:
        n = fused_size([config.hidden] * len(inputs)) * config.post_hidden
        if n > MAX_FUSION_WEIGHTS:
            raise ConfigError(f"head 'tfn' options hidden={config.hidden}, post_hidden={config.post_hidden} on "
                              f"{len(inputs)} modalities give a {n:,}-weight post-fusion layer; lower hidden or "
                              f"post_hidden, or use --head lmf (the same fusion in low rank)")

    def structure(self) -> dict:
        return {"h": {m: self.config.hidden for m in self.modalities}, "fused_width": self.fused}

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        z = tensor_fusion(pooled_subnets(self.subnets, batch, self.modalities))  # (B, prod (h + 1))
        return self.post(z)                                        # (B, C)
