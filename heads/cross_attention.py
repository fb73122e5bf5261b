"""The inter-modal attention head of the original work, for any subset of modalities.

The head's modules hold its parameters; one functional forward (``stacked_forward``) computes it for ``K``
runs whose parameters are stacked on a leading dimension, and ``forward`` is that with ``K = 1``. So one
run alone and the same run trained stacked with others (``imo_pipeline.training.stacked``) go through the
same code. Attention runs as ``scaled_dot_product_attention`` on the layer's own projections, and a block
whose only use is its start token (the last layer of every cross-modal block; the last self-attention layer
of a single modality) computes that one query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from . import register_head
from .base import (SPEEDUPS, Head, HeadConfig, InputSpec, Stack, cached_positions, check_divides, dropout_seed,
                   option, stacked_layer_norm, stacked_linear)


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
    """Pre-norm attention + feed-forward: self-attention, or queries attending to another modality (``cross``).
    Holds the parameters; ``CrossAttentionHead`` computes the layer (``_layer``)."""

    def __init__(self, d: int, heads: int, ff: int, dropout: float, attn_dropout: float, cross: bool):
        super().__init__()
        self.norm_q, self.norm_ff = nn.LayerNorm(d), nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d) if cross else None
        self.attn = nn.MultiheadAttention(d, heads, dropout=attn_dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff, d))
        self.drop = nn.Dropout(dropout)


@register_head("cross_attention")
class CrossAttentionHead(Head):
    """Per-modality input LayerNorm + projection + start token + positions + self-attention; one cross-modal block per
    ordered pair (m queries n); start-token pooling; product of the blocks sharing a query modality;
    concatenation; dropout -> dense -> tanh -> dropout -> linear. The start token is never masked, so an absent
    modality (all-False mask row) is its start token alone and every attention row has a key."""

    Config = CrossAttentionConfig
    layers = "last"
    stackable = True
    per_run_options = ("dropout", "input_dropout", "head_dropout")

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
        self._named: list[tuple[str, nn.Parameter]] | None = None   # named_parameters(), listed at the first forward

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        if self._named is None:
            self._named = list(self.named_parameters())
        params = {n: p.unsqueeze(0) for n, p in self._named}                     # (1, *shape)
        stacked = {m: (x.unsqueeze(0), mask.unsqueeze(0)) for m, (x, mask) in batch.items()}
        stack = Stack.single(self.config, batch, dropout_seed(self.config, self.training))
        return self.stacked_forward(params, stacked, stack)[0]                     # (B, C)

    def stacked_forward(self, params: dict[str, torch.Tensor], batch: dict[str, tuple[torch.Tensor, torch.Tensor]],
                        stack: Stack) -> torch.Tensor:
        single = len(self.modalities) == 1
        enc = {}
        for m in self.modalities:
            x, mask = batch[m]                                             # (K, B, T, L, D), (K, B, T)
            x = x[..., 0, :] if x.shape[-2] == 1 else x.mean(-2)           # (K, B, T, D)
            w, c = params[f"proj.{m}.weight"], params[f"proj.{m}.bias"]  # (K, d, D), (K, d)
            if self.config.input_norm and not SPEEDUPS.fold_input_norm:    # the original path (benchmarks)
                x = stacked_layer_norm(x, params[f"in_norm.{m}.weight"], params[f"in_norm.{m}.bias"])
            elif self.config.input_norm:
                # LayerNorm(x) @ W^T + c = norm(x) @ (W * g)^T + (W b + c): the same function, whose backward
                # needs no gradient of the D-wide input (nothing before it learns).
                g, b = params[f"in_norm.{m}.weight"], params[f"in_norm.{m}.bias"]  # (K, D)
                x = F.layer_norm(x, x.shape[-1:])
                w, c = w * g.unsqueeze(1), c + torch.einsum("kdi,ki->kd", w, b)
            h = stacked_linear(x, w, c)                                     # (K, B, T, d)
            K, B, T, d = h.shape
            start = params[f"start.{m}"].reshape(K, 1, 1, d).expand(K, B, 1, d)
            h = torch.cat([start, h], dim=2) + cached_positions(T + 1, d, str(h.device))  # (K, B, 1+T, d)
            frames = [1 + t for t in stack.frames[m]]
            h = stack.dropout(h, "input_dropout", frames)
            keep = torch.cat([mask.new_ones(K, B, 1), mask], dim=2)        # (K, B, 1+T) True = attend
            n_layers = len(self.self_attn[m])
            for i, layer in enumerate(self.self_attn[m]):
                start_only = single and i == n_layers - 1                  # alone, only its start token is used
                h = self._layer(params, f"self_attn.{m}.{i}.", layer, h, None, keep, stack, frames, start_only)
            enc[m] = (h, keep, frames)
        fused = []
        for m in self.modalities:
            if single:
                fused.append(stacked_layer_norm(enc[m][0][:, :, 0], params["out_norm.weight"],
                                                params["out_norm.bias"]))  # (K, B, d) start token
                continue
            v = None
            for n in self.modalities:
                if n == m:
                    continue
                q, frames = enc[m][0], enc[m][2]                           # (K, B, 1+Tm, d)
                block = self.cross[f"{m}>{n}"]
                for i, layer in enumerate(block):
                    q = self._layer(params, f"cross.{m}>{n}.{i}.", layer, q, enc[n][0], enc[n][1], stack, frames,
                                    i == len(block) - 1)
                s = stacked_layer_norm(q[:, :, 0], params["out_norm.weight"], params["out_norm.bias"])  # (K, B, d)
                v = s if v is None else v * s                              # product of blocks sharing query m
            fused.append(v)
        z = stack.dropout(torch.cat(fused, dim=-1), "head_dropout")       # (K, B, M*d)
        z = torch.tanh(stacked_linear(z, params["classifier.1.weight"], params["classifier.1.bias"]))
        z = stack.dropout(z, "head_dropout")
        return stacked_linear(z, params["classifier.4.weight"], params["classifier.4.bias"])  # (K, B, C)

    def _layer(self, params: dict[str, torch.Tensor], pre: str, layer: AttentionLayer, q: torch.Tensor,
               kv: torch.Tensor | None, keep: torch.Tensor, stack: Stack, frames: list[int],
               start_only: bool) -> torch.Tensor:
        """One ``AttentionLayer``: ``q (K, B, Tq, d)`` attends to ``kv (K, B, Tk, d)`` (None: to itself) where
        ``keep (K, B, Tk)``; ``start_only``: compute the start-token query alone -> ``(K, B, 1, d)``."""
        def norm(x: torch.Tensor, name: str) -> torch.Tensor:
            return stacked_layer_norm(x, params[f"{pre}{name}.weight"], params[f"{pre}{name}.bias"])

        start_only = start_only and SPEEDUPS.start_only
        if kv is None:
            kvn = norm(q, "norm_q")                                        # (K, B, T, d)
            qn = kvn[:, :, :1] if start_only else kvn
        else:
            kvn = norm(kv, "norm_kv")                                      # (K, B, Tk, d)
            qn = norm(q[:, :, :1] if start_only else q, "norm_q")
        if start_only:
            q, frames = q[:, :, :1], [1] * stack.size
        a = self._attend(params, pre, layer, qn, kvn, keep, stack, same=kv is None and not start_only)
        q = q + stack.dropout(a, "dropout", frames)
        f = stacked_linear(norm(q, "norm_ff"), params[f"{pre}ff.0.weight"], params[f"{pre}ff.0.bias"])
        f = stack.dropout(F.gelu(f), "dropout", frames)
        f = stacked_linear(f, params[f"{pre}ff.3.weight"], params[f"{pre}ff.3.bias"])
        return q + stack.dropout(f, "dropout", frames)                     # (K, B, Tq, d)

    def _attend(self, params: dict[str, torch.Tensor], pre: str, layer: AttentionLayer, qn: torch.Tensor,
                kvn: torch.Tensor, keep: torch.Tensor, stack: Stack, same: bool) -> torch.Tensor:
        """Multi-head attention of ``qn (K, B, Tq, d)`` over ``kvn (K, B, Tk, d)`` where ``keep``, with the
        parameters of ``layer.attn`` (an ``nn.MultiheadAttention``) -> ``(K, B, Tq, d)``."""
        K, B, Tq, d = qn.shape
        Tk, H = kvn.shape[2], self.config.n_heads
        p_attn = self.config.attn_dropout if stack.seeds is not None else 0.0
        if not SPEEDUPS.sdpa and K == 1:                                   # the original path (benchmarks)
            layer.attn.train(stack.seeds is not None)
            a, _ = layer.attn(qn[0], kvn[0], kvn[0], key_padding_mask=~keep[0], need_weights=False)
            return a.unsqueeze(0)
        w, b = params[f"{pre}attn.in_proj_weight"], params[f"{pre}attn.in_proj_bias"]  # (K, 3d, d), (K, 3d)
        if same:
            qs, ks, vs = stacked_linear(qn, w, b).split(d, dim=-1)         # 3 x (K, B, T, d)
        else:
            qs = stacked_linear(qn, w[:, :d], b[:, :d])                    # (K, B, Tq, d)
            ks, vs = stacked_linear(kvn, w[:, d:], b[:, d:]).split(d, dim=-1)  # 2 x (K, B, Tk, d)

        def split(t: torch.Tensor, T: int) -> torch.Tensor:
            return t.reshape(K * B, T, H, d // H).transpose(1, 2)          # (K*B, H, T, d/H)

        o = F.scaled_dot_product_attention(split(qs, Tq), split(ks, Tk), split(vs, Tk),
                                           attn_mask=keep.reshape(K * B, 1, 1, Tk), dropout_p=p_attn)
        o = o.transpose(1, 2).reshape(K, B, Tq, d)                         # (K, B, Tq, d)
        return stacked_linear(o, params[f"{pre}attn.out_proj.weight"], params[f"{pre}attn.out_proj.bias"])
