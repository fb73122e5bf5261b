"""The inter-modal attention head of the original work, for any subset of modalities."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import register_head
from .base import Head, HeadConfig, InputSpec, sinusoidal_positions


@dataclass
class CrossAttentionConfig(HeadConfig):
    d_model: int = 128           # width of every modality after projection
    n_heads: int = 4
    self_layers: int = 1         # self-attention layers per modality
    cross_layers: int = 1        # layers per cross-modal block (m queries n)
    ff_mult: int = 2             # feed-forward width = ff_mult * d_model
    dropout: float = 0.1         # inside attention blocks
    input_dropout: float = 0.1   # on projected inputs
    head_dropout: float = 0.1    # before the dense and the output layer


class CrossBlockLayer(nn.Module):
    """Pre-norm cross-attention (queries from m, keys/values from n) + feed-forward."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_pad: torch.Tensor) -> torch.Tensor:
        # q (B, Tq, d), kv (B, Tk, d), kv_pad (B, Tk) True = padding
        kv_n = self.norm_kv(kv)
        a, _ = self.attn(self.norm_q(q), kv_n, kv_n, key_padding_mask=kv_pad, need_weights=False)
        q = q + self.drop(a)
        return q + self.drop(self.ff(self.norm_ff(q)))  # (B, Tq, d)


@register_head("cross_attention")
class CrossAttentionHead(Head):
    """Per-modality projection + start token + positions + self-attention; one cross-modal block per
    ordered pair (m queries n); start-token pooling; product of the blocks sharing a query modality;
    concatenation; dropout -> dense -> tanh -> dropout -> linear."""

    Config = CrossAttentionConfig
    layers = "last"

    def __init__(self, config: CrossAttentionConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c, d = config, config.d_model
        self.proj = nn.ModuleDict({m: nn.Linear(s.dim, d) for m, s in inputs.items()})
        self.start = nn.ParameterDict({m: nn.Parameter(torch.randn(1, 1, d) * 0.02) for m in inputs})
        self.in_drop = nn.Dropout(c.input_dropout)
        self.self_attn = nn.ModuleDict({
            m: nn.TransformerEncoder(
                nn.TransformerEncoderLayer(d, c.n_heads, c.ff_mult * d, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True),
                c.self_layers, enable_nested_tensor=False)
            for m in inputs})
        self.pairs = [(m, n) for m in self.modalities for n in self.modalities if m != n]
        self.cross = nn.ModuleDict({
            f"{m}>{n}": nn.ModuleList(CrossBlockLayer(d, c.n_heads, c.ff_mult * d, c.dropout)
                                      for _ in range(c.cross_layers))
            for m, n in self.pairs})
        self.out_norm = nn.LayerNorm(d)
        k = len(self.modalities)
        self.classifier = nn.Sequential(nn.Dropout(c.head_dropout), nn.Linear(k * d, d), nn.Tanh(),
                                        nn.Dropout(c.head_dropout), nn.Linear(d, n_outputs))

    def encode(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project, prepend the start token, add positions, self-attend. Returns ``(B, 1+T, d)`` and padding ``(B, 1+T)``."""
        h = self.proj[m](x.mean(2))                                     # (B, T, L, D) -> (B, T, d)
        B, T, d = h.shape
        h = torch.cat([self.start[m].expand(B, 1, d), h], dim=1)       # (B, 1+T, d)
        h = self.in_drop(h + sinusoidal_positions(T + 1, d, h.device))
        pad = torch.cat([torch.zeros(B, 1, dtype=torch.bool, device=mask.device), ~mask], dim=1)  # (B, 1+T)
        return self.self_attn[m](h, src_key_padding_mask=pad), pad

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
