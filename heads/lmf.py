"""Low-rank Multimodal Fusion (Liu et al., ACL 2018): the tensor fusion of ``tfn`` with rank-r modality factors.

As the release (``LMF`` in Justin1904/Low-rank-Multimodal-Fusion) defines it:
per modality the same pooled subnetwork as ``tfn`` gives ``h_m`` and
``z_m = [1; h_m]``; each modality has factors ``W_m (r, h_m + 1, C)``; the
output is ``sum_r w_r prod_m (z_m W_m[r]) + b``, which equals the TFN tensor
``z_1 (x) ... (x) z_M`` contracted with the full weight
``W = sum_r w_r W_1[r] (x) ... (x) W_M[r]`` without ever building either. The
fusion gives the logits directly, as in the release. An absent modality has
``h_m = 0`` (its factor contributes only its constant row).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec
from .tfn import SubNet, pooled_subnets, with_one


@dataclass
class LMFConfig(HeadConfig):
    hidden: int = 32               # h_m per modality
    rank: int = 4
    subnet_dropout: float = 0.2
    dropout: float = 0.0           # on h_m before the factors


@register_head("lmf")
class LMFHead(Head):
    """Low-rank fusion: per-modality pooled subnetworks, rank-r factors, weighted sum over the rank -> logits."""

    Config = LMFConfig
    layers = "last"

    def __init__(self, config: LMFConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c = config
        self.subnets = nn.ModuleDict({m: SubNet(s.dim, c.hidden, c.subnet_dropout) for m, s in inputs.items()})
        self.factors = nn.ParameterDict({m: nn.Parameter(torch.empty(c.rank, c.hidden + 1, n_outputs))
                                         for m in inputs})
        self.rank_weights = nn.Parameter(torch.empty(1, c.rank))
        self.bias = nn.Parameter(torch.zeros(n_outputs))
        self.drop = nn.Dropout(c.dropout)
        for p in self.factors.values():
            nn.init.xavier_normal_(p)
        nn.init.xavier_normal_(self.rank_weights)

    def structure(self) -> dict:
        return {"rank": self.config.rank,
                "factors": {m: list(p.shape) for m, p in self.factors.items()}}

    def fuse(self, hs: list[torch.Tensor]) -> torch.Tensor:
        """``M x h_m (B, d)`` -> ``sum_r w_r prod_m ([1; h_m] W_m[r])`` ``(B, C)`` (without the bias)."""
        prod = None
        for m, h in zip(self.modalities, hs):
            f = torch.einsum("bd,rdc->rbc", with_one(self.drop(h)), self.factors[m])  # (r, B, C)
            prod = f if prod is None else prod * f
        return torch.einsum("r,rbc->bc", self.rank_weights[0], prod)  # (B, C)

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        return self.fuse(pooled_subnets(self.subnets, batch, self.modalities)) + self.bias  # (B, C)
