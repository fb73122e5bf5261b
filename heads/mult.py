"""MulT, the Multimodal Transformer (Tsai et al., ACL 2019), on cached sequences of any two or three modalities.

As the released code (yaohungt/Multimodal-Transformer, ``src/models.py`` and
``modules/transformer.py``) defines it: a temporal 1-D convolution projects
every modality to ``d_model``; for each target modality, one crossmodal
transformer per other (source) modality lets the target's frames attend to the
source's; the target's crossmodal outputs are concatenated and passed through a
self-attention ("memory") transformer; the last frame is pooled; the pooled
vectors of all targets are concatenated and fused by a residual MLP
(``proj2(dropout(relu(proj1(h)))) + h -> linear``). Transformer layers are
pre-LN (keys and values normalised with the query's LayerNorm), inputs are
scaled by ``sqrt(d)`` and get sinusoidal positions and embedding dropout, and
each transformer ends with a LayerNorm; the feed-forward is ``4 d`` with ReLU.

Differences from the release, for padded variable-length batches: padding is
masked (the release pads nothing and has no masks), the last *real* frame is
pooled, and there is no future mask (the release's default ``attn_mask``
builds a causal mask from the padded lengths). An absent source or target is a
learned placeholder frame (see ``heads.base``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imo_pipeline.errors import ConfigError

from . import register_head
from .base import (Head, HeadConfig, InputSpec, check_divides, fill_absent, last_frame, masked_mean, option,
                   sinusoidal_positions)


@dataclass
class MulTConfig(HeadConfig):
    d_model: int = 30              # width of every modality after the convolution (d_l = d_a = d_v)
    n_heads: int = 5
    layers: int = 5                # crossmodal transformer layers per (target, source) pair (nlevels)
    mem_layers: int = 5            # self-attention layers over each target's concatenation (max(nlevels, 3))
    kernel_size: int = 1           # temporal convolution (1 in the released code; odd sizes keep lengths)
    dropout: float = 0.1           # residual dropout (res_dropout)
    attn_dropout: float = 0.1
    relu_dropout: float = 0.1      # inside the feed-forward
    embed_dropout: float = 0.2     # on scaled inputs + positions
    out_dropout: float = 0.0       # inside the fusion MLP
    pooling: str = option("last", choices=("last", "mean"))  # last real frame (MulT) or masked mean

    def check(self, name: str = "head") -> None:
        super().check(name)
        check_divides(name, "n_heads", self.n_heads, "d_model", self.d_model)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"head {name!r} option kernel_size={self.kernel_size}: expected an odd integer "
                              f"(1, 3, 5, ...) so the convolution keeps every sequence's length")


class MulTLayer(nn.Module):
    """Pre-LN transformer layer; crossmodal when ``kv`` is given (queries attend to ``kv``), else self-attention."""

    def __init__(self, d: int, heads: int, c: MulTConfig):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, dropout=c.attn_dropout, batch_first=True)
        self.norm_attn, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.res_drop, self.relu_drop = nn.Dropout(c.dropout), nn.Dropout(c.relu_dropout)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None, kv_pad: torch.Tensor) -> torch.Tensor:
        # x (B, Tq, d); kv (B, Tk, d) or None (self-attention); kv_pad (B, Tk) True = padding
        q = self.norm_attn(x)
        k = q if kv is None else self.norm_attn(kv)               # the release normalises k, v with the same LN
        a, _ = self.attn(q, k, k, key_padding_mask=kv_pad, need_weights=False)
        x = x + self.res_drop(a)
        h = self.fc2(self.relu_drop(F.relu(self.fc1(self.norm_ff(x)))))
        return x + self.res_drop(h)                                # (B, Tq, d)


class MulTEncoder(nn.Module):
    """``sqrt(d)`` scaling + sinusoidal positions + embedding dropout, ``n`` layers, final LayerNorm."""

    def __init__(self, d: int, heads: int, n: int, c: MulTConfig):
        super().__init__()
        self.d = d
        self.drop = nn.Dropout(c.embed_dropout)
        self.layers = nn.ModuleList(MulTLayer(d, heads, c) for _ in range(n))
        self.norm = nn.LayerNorm(d)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        pe = sinusoidal_positions(x.shape[1], self.d, x.device)    # (T, d)
        return self.drop(math.sqrt(self.d) * x + pe)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None, kv_pad: torch.Tensor) -> torch.Tensor:
        # x (B, Tq, d) queries; kv (B, Tk, d) or None; kv_pad (B, Tk) True = padding
        x = self.embed(x)
        kv = None if kv is None else self.embed(kv)
        for layer in self.layers:
            x = layer(x, kv, kv_pad)
        return self.norm(x)                                        # (B, Tq, d)


@register_head("mult")
class MulTHead(Head):
    """MulT: per target modality, crossmodal transformers from each other modality, a self-attention
    transformer over their concatenation, last-frame pooling; a residual MLP over all targets."""

    Config = MulTConfig
    layers = "last"
    min_modalities = 2

    def __init__(self, config: MulTConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c, d = config, config.d_model
        self.proj = nn.ModuleDict({m: nn.Conv1d(s.dim, d, c.kernel_size, padding=c.kernel_size // 2, bias=False)
                                   for m, s in inputs.items()})
        self.placeholder = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in inputs})
        self.sources = {m: [n for n in self.modalities if n != m] for m in self.modalities}
        self.cross = nn.ModuleDict({f"{m}<{n}": MulTEncoder(d, c.n_heads, c.layers, c)
                                    for m in self.modalities for n in self.sources[m]})
        width = (len(self.modalities) - 1) * d                     # each target's concatenation
        self.memory = nn.ModuleDict({m: MulTEncoder(width, c.n_heads, c.mem_layers, c) for m in self.modalities})
        combined = len(self.modalities) * width
        self.proj1, self.proj2 = nn.Linear(combined, combined), nn.Linear(combined, combined)
        self.out_drop = nn.Dropout(c.out_dropout)
        self.out = nn.Linear(combined, n_outputs)

    def structure(self) -> dict:
        d, c = self.config.d_model, self.config
        return {"targets": {m: {"crossmodal": [f"{m} <- {n}" for n in self.sources[m]],
                                "crossmodal_layers": c.layers, "memory_width": len(self.sources[m]) * d,
                                "memory_layers": c.mem_layers, "pooling": c.pooling}
                            for m in self.modalities},
                "fused_width": self.proj1.in_features}

    def project(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Temporal convolution to ``d_model``; absent samples get the placeholder frame."""
        x = x.mean(2) * mask[..., None]                            # (B, T, L, D) -> (B, T, D), padding zeroed
        h = self.proj[m](x.transpose(1, 2)).transpose(1, 2)        # (B, T, d)
        return fill_absent(h, mask, self.placeholder[m])           # (B, T, d), (B, T)

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        seq = {m: self.project(m, *batch[m]) for m in self.modalities}
        pooled = []
        for m in self.modalities:
            h, mask = seq[m]
            cross = [self.cross[f"{m}<{n}"](h, seq[n][0], ~seq[n][1]) for n in self.sources[m]]  # each (B, Tm, d)
            mem = self.memory[m](torch.cat(cross, -1), None, ~mask)  # (B, Tm, (M-1) d)
            pooled.append(last_frame(mem, mask) if self.config.pooling == "last" else masked_mean(mem, mask))
        hs = torch.cat(pooled, -1)                                 # (B, M (M-1) d)
        hs = self.proj2(self.out_drop(F.relu(self.proj1(hs)))) + hs
        return self.out(hs)                                        # (B, C)
