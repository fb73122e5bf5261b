"""The inter-modal attention head of the original work, for any subset of modalities."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec, check_divides, option, sinusoidal_positions


@dataclass
class CrossAttentionConfig(HeadConfig):
    d_model: int = 64            # width of every modality after projection
    n_heads: int = 4
    self_layers: int = option(1, min=0)  # self-attention layers per modality
    cross_layers: int = 1        # layers per cross-modal block (m queries n)
    ff_mult: int = 2             # feed-forward width = ff_mult * d_model
    dropout: float = 0.1         # on residual branches and inside the feed-forward
    attn_dropout: float = 0.0    # on attention weights (costly on CPU; off by default)
    input_dropout: float = 0.1   # on projected inputs
    head_dropout: float = 0.1    # before the dense and the output layer
    input_norm: bool = True      # LayerNorm over each modality's features before the projection

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "head") -> "CrossAttentionConfig":
        """As ``HeadConfig.from_dict``; a run's description written before ``input_norm`` existed (it has a
        ``type`` tag but no ``input_norm``) rebuilds the head it was trained with, without the LayerNorm."""
        if "type" in d and "input_norm" not in d:
            d = {**d, "input_norm": False}
        return super().from_dict(d, name)

    def check(self, name: str = "head") -> None:
        super().check(name)
        check_divides(name, "n_heads", self.n_heads, "d_model", self.d_model)


class AttentionLayer(nn.Module):
    """Pre-norm attention + feed-forward. Self-attention when ``kv`` is None, else queries ``q`` attend to ``kv``."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float, attn_dropout: float, cross: bool):
        super().__init__()
        self.norm_q, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d) if cross else None
        self.attn = nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor | None, kv_pad: torch.Tensor) -> torch.Tensor:
        # q (B, Tq, d), kv (B, Tk, d) or None (= q), kv_pad (B, Tk) True = padding
        qn = self.norm_q(q)
        kvn = qn if self.norm_kv is None else self.norm_kv(kv)
        a, _ = self.attn(qn, kvn, kvn, key_padding_mask=kv_pad, need_weights=False)
        q = q + self.drop(a)
        return q + self.drop(self.ff(self.norm_ff(q)))  # (B, Tq, d)


@register_head("cross_attention")
class CrossAttentionHead(Head):
    """Per-modality projection + start token + positions + self-attention; one cross-modal block per
    ordered pair (m queries n); start-token pooling; product of the blocks sharing a query modality;
    concatenation; dropout -> dense -> tanh -> dropout -> linear. The start token is never masked, so an absent
    modality (all-False mask row) is its start token alone and every attention row has a key."""

    Config = CrossAttentionConfig
    layers = "last"

    def __init__(self, config: CrossAttentionConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c, d = config, config.d_model
        # Stored features differ wildly in scale and offset (log-mel ~15 +- 2, pixels 0.36 +- 0.09, outlier
        # dimensions of text encoders): normalised first, every modality starts on an equal footing.
        self.in_norm = nn.ModuleDict({m: nn.LayerNorm(s.dim) if c.input_norm else nn.Identity()
                                      for m, s in inputs.items()})
        self.proj = nn.ModuleDict({m: nn.Linear(s.dim, d) for m, s in inputs.items()})
        self.start = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, d) * 0.02) for m in inputs})
        self.in_drop = nn.Dropout(c.input_dropout)
        def layers(n: int, cross: bool) -> nn.ModuleList:
            return nn.ModuleList(AttentionLayer(d, c.n_heads, c.ff_mult * d, c.dropout, c.attn_dropout, cross)
                                 for _ in range(n))

        self.self_attn = nn.ModuleDict({m: layers(c.self_layers, False) for m in inputs})
        self.pairs = [(m, n) for m in self.modalities for n in self.modalities if m != n]
        self.cross = nn.ModuleDict({f"{m}>{n}": layers(c.cross_layers, True) for m, n in self.pairs})
        self.out_norm = nn.LayerNorm(d)
        k = len(self.modalities)
        self.classifier = nn.Sequential(nn.Dropout(c.head_dropout), nn.Linear(k * d, d), nn.Tanh(),
                                        nn.Dropout(c.head_dropout), nn.Linear(d, n_outputs))

    def encode(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project, prepend the start token, add positions, self-attend. Returns ``(B, 1+T, d)`` and padding ``(B, 1+T)``."""
        h = self.proj[m](self.in_norm[m](x.mean(2)))                    # (B, T, L, D) -> (B, T, D) -> (B, T, d)
        B, T, d = h.shape
        h = torch.cat([self.start[m].expand(B, 1, d), h], dim=1)       # (B, 1+T, d)
        h = self.in_drop(h + sinusoidal_positions(T + 1, d, h.device))
        pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)  # (B, 1+T)
        for layer in self.self_attn[m]:
            h = layer(h, None, pad)                                    # (B, 1+T, d)
        return h, pad

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        enc = {m: self.encode(m, *batch[m]) for m in self.modalities}
        fused = []
        for m in self.modalities:
            if len(self.modalities) == 1:
                fused.append(self.out_norm(enc[m][0][:, 0]))             # (B, d) start token
                continue
            v = None
            for n in self.modalities:
                if n == m:
                    continue
                q = enc[m][0]                                          # (B, 1+Tm, d)
                for layer in self.cross[f"{m}>{n}"]:
                    q = layer(q, enc[n][0], enc[n][1])
                s = self.out_norm(q[:, 0])                             # (B, d) start-token output
                v = s if v is None else v * s                          # product of blocks sharing query m
            fused.append(v)
        return self.classifier(torch.cat(fused, dim=-1))               # (B, M*d) -> (B, C)
