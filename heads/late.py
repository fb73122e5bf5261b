"""Late fusion: one classifier per modality and a learned weighting of their outputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec, masked_mean, option, present


@dataclass
class LateConfig(HeadConfig):
    hidden: int = option(64, min=0)   # per-modality MLP width (0: a linear classifier)
    dropout: float = 0.1


def absent_aware_softmax(logits: torch.Tensor, here: torch.Tensor) -> torch.Tensor:
    """Softmax over modalities ``(B, M, ...)`` restricted to ``here (B, M)`` (over all of them where none is here).
    Masked entries get weight 0 and no NaN reaches values or gradients."""
    h = here.reshape(*here.shape, *([1] * (logits.dim() - 2)))     # (B, M, 1...)
    none = ~here.any(1).reshape(-1, *([1] * (logits.dim() - 1)))    # (B, 1, 1...)
    masked = logits.masked_fill(~h & ~none, float("-inf"))
    return torch.softmax(masked, dim=1)


@register_head("late")
class LateHead(Head):
    """Per modality: masked mean -> LayerNorm -> MLP -> logits ``(B, C)``; output ``sum_m softmax(w)_m logits_m``
    with the learned weights ``w`` renormalised over the modalities each sample has."""

    Config = LateConfig
    layers = "last"
    min_modalities = 2

    def __init__(self, config: LateConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c = config

        def classifier(dim: int) -> nn.Sequential:
            if c.hidden == 0:
                return nn.Sequential(nn.LayerNorm(dim), nn.Dropout(c.dropout), nn.Linear(dim, n_outputs))
            return nn.Sequential(nn.LayerNorm(dim), nn.Dropout(c.dropout), nn.Linear(dim, c.hidden), nn.GELU(),
                                 nn.Dropout(c.dropout), nn.Linear(c.hidden, n_outputs))

        self.classifiers = nn.ModuleDict({m: classifier(s.dim) for m, s in inputs.items()})
        self.weight_logits = nn.Parameter(torch.zeros(len(inputs)))

    def modality_weights(self) -> dict[str, float]:
        """The learned weighting when every modality is present."""
        w = torch.softmax(self.weight_logits.detach(), 0)
        return {m: float(v) for m, v in zip(self.modalities, w)}

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        outs = torch.stack([self.classifiers[m](masked_mean(batch[m][0].mean(2), batch[m][1]))
                            for m in self.modalities], 1)          # (B, M, C)
        here = torch.stack([present(batch[m][1]) for m in self.modalities], 1)  # (B, M)
        w = absent_aware_softmax(self.weight_logits.expand(here.shape), here)  # (B, M)
        return (w[..., None] * outs).sum(1)                        # (B, C)
