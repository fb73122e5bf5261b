"""The original work's fusion forward, as its code defines it (Siriwardhana et al., 2020).

Read from the fairseq fork shamanez/Self-Supervised-Embedding-Fusion-Transformer
(``fairseq/models/mulT_emo.py``, ``fairseq/modules/transformer_multi_encoder.py``,
``transformer_sentence_encoder_layer.py``, ``transformer_multi_encoder_layer.py``,
``multihead_cross_attention.py``, ``learned_positional_embedding_mul.py``):

- no projection: every modality keeps its width (RoBERTa-large 1024, wav2vec
  ``c`` 512, FAb-Net 256); cross-attention takes keys and values from the other
  modality and projects them to the query's width;
- text is passed through untouched: its sequence is the stored RoBERTa states,
  and it is pooled as RoBERTa's own ``<s>`` state (frame 0);
- audio and video get a learned start token, learned positions (up to 936
  audio / 301 video positions, start token included), an embedding LayerNorm,
  dropout, then post-LN self-attention layers (2 layers, 4 heads, FFN 1024,
  GELU, dropout and attention dropout 0.05);
- one post-LN cross-modal layer per directed pair (m <- n: m queries n);
- token-0 pooling; ``T = T<-A (.) T<-V``, ``A = A<-T (.) A<-V``,
  ``V = V<-T (.) V<-A`` (elementwise products of the blocks sharing a query);
  with two modalities each is its one block, with one modality its token 0;
- concatenation (1792 wide for the three) -> dropout -> dense 1792 -> 1792 ->
  tanh -> dropout -> linear.

Initialisation follows the fork's ``init_bert_params`` (``init=bert``): Linear
weights N(0, 0.02) with zero bias, the packed self-attention projections
N(0, 0.02), cross-attention projections Xavier-uniform, positions N(0, 0.02),
and start tokens zero (the fork's init zeroes the whole start-token table,
whose ``padding_idx`` is None); the classifier keeps PyTorch's defaults, as it
is registered after that init. Concatenation follows imo's modality order
(the fork concatenates T, V, A: the same dense layer up to a permutation of its
input weights). Sequences longer than the positions are cut to their first
frames (the fork crops its inputs to these caps). An absent text is a learned
placeholder ``<s>``; an absent audio or video is its start token alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imo_pipeline.errors import ConfigError
from imo_pipeline.project import MODALITIES

from . import register_head
from .base import Head, HeadConfig, InputSpec, check_divides, fill_absent, option

ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "tanh": torch.tanh}


@dataclass
class SSEFTConfig(HeadConfig):
    n_heads: int = 4                       # --encoder-attention-heads
    self_layers: int = option(2, min=0)    # --encoder-layers: self-attention layers for audio and video
    cross_layers: int = 1                  # --encoder-layers-cross: layers per directed pair
    ffn_dim: int = 1024                    # --encoder-ffn-embed-dim
    activation: str = option("gelu", choices=tuple(ACTIVATIONS))
    dropout: float = 0.05                  # embeddings and residual branches
    attn_dropout: float = 0.05             # on attention weights
    activation_dropout: float = 0.0        # after the feed-forward activation
    pooler_dropout: float = 0.05           # before the dense and the output layer
    pooler_dim: int = option(0, min=0)     # dense width; 0: the concatenation's width (1792 for the three)
    untouched: str = "text"                # comma list of modalities passed through untouched ("none": none)
    max_positions_audio: int = option(936, min=2)  # learned positions, start token included
    max_positions_video: int = option(301, min=2)  # 300 frames + start token
    max_positions_text: int = option(512, min=2)   # used only when text is not untouched
    init: str = option("bert", choices=("bert", "torch"))

    def untouched_set(self) -> set[str]:
        return {m.strip() for m in self.untouched.split(",") if m.strip() and m.strip().lower() != "none"}

    def check(self, name: str = "head") -> None:
        super().check(name)
        bad = sorted(self.untouched_set() - set(MODALITIES))
        if bad:
            raise ConfigError(f"head {name!r} option untouched={self.untouched!r}: {', '.join(bad)} is not a "
                              f"modality; use a comma list of {', '.join(MODALITIES)}, or none")


class PostLNLayer(nn.Module):
    """fairseq's post-LN encoder layer: ``LN(x + drop(attn))``, then ``LN(x + drop(fc2(act_drop(act(fc1 x)))))``.
    Self-attention when ``kv`` is None; else the queries ``x`` (width d) attend to ``kv`` (width ``kv_dim``)."""

    def __init__(self, d: int, kv_dim: int | None, c: SSEFTConfig):
        super().__init__()
        self.cross = kv_dim is not None
        self.attn = nn.MultiheadAttention(d, c.n_heads, dropout=c.attn_dropout, kdim=kv_dim, vdim=kv_dim,
                                          batch_first=True)
        self.attn_norm, self.final_norm = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, c.ffn_dim), nn.Linear(c.ffn_dim, d)
        self.act = ACTIVATIONS[c.activation]
        self.drop, self.act_drop = nn.Dropout(c.dropout), nn.Dropout(c.activation_dropout)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None, kv_pad: torch.Tensor) -> torch.Tensor:
        # x (B, Tq, d); kv (B, Tk, kv_dim) or None (= x); kv_pad (B, Tk) True = padding
        kv = x if kv is None else kv
        a, _ = self.attn(x, kv, kv, key_padding_mask=kv_pad, need_weights=False)
        x = self.attn_norm(x + self.drop(a))
        h = self.fc2(self.act_drop(self.act(self.fc1(x))))
        return self.final_norm(x + self.drop(h))                  # (B, Tq, d)


@register_head("sse_ft")
class SSEFTHead(Head):
    """The original work's inter-modal attention forward (see the module docstring)."""

    Config = SSEFTConfig
    layers = "last"

    def __init__(self, config: SSEFTConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__(config, inputs, n_outputs)
        c = config
        self.untouched = [m for m in self.modalities if m in c.untouched_set()]
        self.encoded = [m for m in self.modalities if m not in self.untouched]
        dims = {m: s.dim for m, s in inputs.items()}
        self.start = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, dims[m])) for m in self.encoded})
        self.positions = nn.ModuleDict({m: nn.Embedding(getattr(c, f"max_positions_{m}"), dims[m])
                                        for m in self.encoded})
        self.emb_norm = nn.ModuleDict({m: nn.LayerNorm(dims[m]) for m in self.encoded})
        self.emb_drop = nn.Dropout(c.dropout)
        self.self_attn = nn.ModuleDict({m: nn.ModuleList(PostLNLayer(dims[m], None, c) for _ in range(c.self_layers))
                                        for m in self.encoded})
        self.placeholder = nn.ParameterDict({m: nn.Parameter(torch.zeros(dims[m])) for m in self.untouched})
        self.pairs = [(m, n) for m in self.modalities for n in self.modalities if m != n]
        self.cross = nn.ModuleDict({f"{m}<{n}": nn.ModuleList(PostLNLayer(dims[m], dims[n], c)
                                                              for _ in range(c.cross_layers))
                                    for m, n in self.pairs})
        width = sum(dims.values())
        inner = c.pooler_dim or width
        self.pooler = nn.Sequential(nn.Dropout(c.pooler_dropout), nn.Linear(width, inner), nn.Tanh(),
                                    nn.Dropout(c.pooler_dropout), nn.Linear(inner, n_outputs))
        self._init(c.init)

    def _init(self, how: str) -> None:
        if how == "torch":
            for p in list(self.start.values()) + list(self.placeholder.values()):
                nn.init.normal_(p, std=0.02)
            return
        for name, mod in self.named_modules():
            if name.startswith("pooler"):
                continue                                           # registered after init_bert_params in the fork
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
            elif isinstance(mod, nn.Embedding):
                nn.init.normal_(mod.weight, std=0.02)
            elif isinstance(mod, PostLNLayer):
                a = mod.attn
                if not mod.cross:                                  # fairseq MultiheadAttention: N(0, 0.02)
                    nn.init.normal_(a.in_proj_weight, std=0.02)
                elif a.in_proj_weight is not None:                 # MultiheadCrossAttention: Xavier per projection
                    for w in a.in_proj_weight.data.chunk(3):
                        nn.init.xavier_uniform_(w)
                if a.in_proj_bias is not None:
                    nn.init.zeros_(a.in_proj_bias)
        for p in self.placeholder.values():
            nn.init.normal_(p, std=0.02)
        # start tokens stay zero, as the fork's init_bert_params leaves them

    @classmethod
    def check_inputs(cls, config: SSEFTConfig, inputs: dict[str, InputSpec]) -> None:
        untouched = config.untouched_set()
        for m, s in inputs.items():
            if len(inputs) > 1 or m not in untouched:              # m queries some attention at its own width
                check_divides(cls.registered_name, "n_heads", config.n_heads, f"the {m} width", s.dim)

    def structure(self) -> dict:
        dims = {m: s.dim for m, s in self.inputs.items()}
        fusion = {m: " * ".join(f"{m}<-{n}" for n in self.modalities if n != m) or f"{m}[0]"
                  for m in self.modalities}
        return {"widths": dims, "untouched": self.untouched,
                "self_layers": {m: len(self.self_attn[m]) for m in self.encoded},
                "cross": {k: {"query_width": dims[k.split("<")[0]], "kv_width": dims[k.split("<")[1]],
                              "layers": len(v)} for k, v in self.cross.items()},
                "fusion": fusion, "pooler": [self.pooler[1].in_features, self.pooler[1].out_features,
                                             self.pooler[4].out_features]}

    def encode(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One modality's sequence ``(B, T', D)`` and frame mask ``(B, T')`` before the cross-modal layers."""
        x = x.mean(2) * mask[..., None]                            # (B, T, L, D) -> (B, T, D), padding zeroed
        if m in self.untouched:
            return fill_absent(x, mask, self.placeholder[m])        # frame 0 = <s> (or the placeholder)
        cap = self.positions[m].num_embeddings - 1                  # frames that fit beside the start token
        x, mask = x[:, :cap], mask[:, :cap]
        B, T, D = x.shape
        x = torch.cat([self.start[m].expand(B, 1, D), x], 1)       # (B, 1+T, D)
        mask = torch.cat([mask.new_ones(B, 1), mask], 1)           # (B, 1+T)
        x = x + self.positions[m].weight[: T + 1]
        x = self.emb_drop(self.emb_norm[m](x)) * mask[..., None]   # (B, 1+T, D)
        for layer in self.self_attn[m]:
            x = layer(x, None, ~mask)
        return x, mask

    def forward(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        enc = {m: self.encode(m, *batch[m]) for m in self.modalities}
        fused = []
        for m in self.modalities:
            if len(self.modalities) == 1:
                fused.append(enc[m][0][:, 0])                      # (B, D_m) token 0
                continue
            v = None
            for n in self.modalities:
                if n == m:
                    continue
                q = enc[m][0]                                      # (B, Tm, D_m)
                for layer in self.cross[f"{m}<{n}"]:
                    q = layer(q, enc[n][0], ~enc[n][1])
                v = q[:, 0] if v is None else v * q[:, 0]          # (B, D_m) product of blocks sharing query m
            fused.append(v)
        return self.pooler(torch.cat(fused, -1))                   # (B, sum D_m) -> (B, C)
