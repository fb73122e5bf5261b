"""Tiny fairseq checkpoints written the way fairseq writes them, without fairseq.

Each is a ``torch.save`` of a plain dict with fairseq's real key names
(``args`` Namespace or ``cfg`` dict, ``model`` state dict with fairseq's
parameter names, training state beside it). The reference models here are
re-implemented from fairseq's own code (``fairseq/models/wav2vec/wav2vec.py``,
``fairseq/modules/transformer_sentence_encoder*.py``,
``fairseq/modules/multihead_attention.py``) to compare imo's ports against.
The ``*_fixture`` functions build a checkpoint in a folder and return the
``--encoder`` string plus extraction options (hook for the contract tests).
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# --- wav2vec (v1), as fairseq's wav2vec.py builds it ---------------------------------------------------------

LARGE = dict(conv_feature_layers="[(W, 10, 5), (W, 8, 4), (W, 4, 2), (W, 4, 2), (W, 4, 2), (W, 1, 1), (W, 1, 1), "
                                 "(W, 1, 1)]",
             conv_aggregator_layers="[(W, 2, 1), (W, 3, 1), (W, 4, 1), (W, 5, 1), (W, 6, 1), (W, 7, 1), (W, 8, 1), "
                                    "(W, 9, 1), (W, 10, 1), (W, 11, 1), (W, 12, 1), (W, 13, 1)]",
             skip_connections_agg=True, residual_scale=0.5, log_compression=True)   # wav2vec_large.pt's options
BASE = dict(conv_feature_layers="[(W, 10, 5)] + [(W, 8, 4)] + [(W, 4, 2)] * 3",
            conv_aggregator_layers="[(W, 3, 1)] * 9")                               # base_wav2vec_architecture


class Fp32GroupNorm(nn.GroupNorm):
    def forward(self, input):
        output = F.group_norm(input.float(), self.num_groups, self.weight.float() if self.weight is not None else None,
                              self.bias.float() if self.bias is not None else None, self.eps)
        return output.type_as(input)


class ZeroPad1d(nn.Module):
    def __init__(self, pad_left, pad_right):
        super().__init__()
        self.pad_left, self.pad_right = pad_left, pad_right

    def forward(self, x):
        return F.pad(x, (self.pad_left, self.pad_right))


class ConvFeatureExtractionModel(nn.Module):
    def __init__(self, conv_layers, dropout, log_compression, skip_connections, residual_scale,
                 non_affine_group_norm, activation):
        super().__init__()

        def block(n_in, n_out, k, stride):
            return nn.Sequential(nn.Conv1d(n_in, n_out, k, stride=stride, bias=False), nn.Dropout(p=dropout),
                                 Fp32GroupNorm(1, n_out, affine=not non_affine_group_norm), activation)

        in_d = 1
        self.conv_layers = nn.ModuleList()
        for dim, k, stride in conv_layers:
            self.conv_layers.append(block(in_d, dim, k, stride))
            in_d = dim
        self.log_compression = log_compression
        self.skip_connections = skip_connections
        self.residual_scale = math.sqrt(residual_scale)

    def forward(self, x):
        x = x.unsqueeze(1)
        for conv in self.conv_layers:
            residual = x
            x = conv(x)
            if self.skip_connections and x.size(1) == residual.size(1):
                tsz = x.size(2)
                r_tsz = residual.size(2)
                residual = residual[..., :: r_tsz // tsz][..., :tsz]
                x = (x + residual) * self.residual_scale
        if self.log_compression:
            x = x.abs()
            x = x + 1
            x = x.log()
        return x


class ConvAggegator(nn.Module):
    def __init__(self, conv_layers, embed, dropout, skip_connections, residual_scale, non_affine_group_norm,
                 conv_bias, zero_pad, activation):
        super().__init__()

        def block(n_in, n_out, k, stride):
            ka = k // 2
            kb = ka - 1 if k % 2 == 0 else ka
            pad = ZeroPad1d(ka + kb, 0) if zero_pad else nn.ReplicationPad1d((ka + kb, 0))
            return nn.Sequential(pad, nn.Conv1d(n_in, n_out, k, stride=stride, bias=conv_bias), nn.Dropout(p=dropout),
                                 Fp32GroupNorm(1, n_out, affine=not non_affine_group_norm), activation)

        in_d = embed
        self.conv_layers = nn.ModuleList()
        self.residual_proj = nn.ModuleList()
        for dim, k, stride in conv_layers:
            if in_d != dim and skip_connections:
                self.residual_proj.append(nn.Conv1d(in_d, dim, 1, bias=False))
            else:
                self.residual_proj.append(None)
            self.conv_layers.append(block(in_d, dim, k, stride))
            in_d = dim
        self.conv_layers = nn.Sequential(*self.conv_layers)
        self.skip_connections = skip_connections
        self.residual_scale = math.sqrt(residual_scale)

    def forward(self, x):
        for rproj, conv in zip(self.residual_proj, self.conv_layers):
            residual = x
            x = conv(x)
            if self.skip_connections:
                if rproj is not None:
                    residual = rproj(residual)
                x = (x + residual) * self.residual_scale
        return x


class FairseqWav2Vec(nn.Module):
    """``Wav2VecModel`` as fairseq builds it from ``args`` (cnn encoder/aggregator), prediction head included."""

    def __init__(self, args):
        super().__init__()
        activation = nn.ReLU() if args.activation == "relu" else nn.GELU()
        feature_enc_layers = eval(args.conv_feature_layers)  # noqa: S307  (test-built literal, as fairseq does)
        self.feature_extractor = ConvFeatureExtractionModel(feature_enc_layers, 0.0, args.log_compression,
                                                            args.skip_connections_feat, args.residual_scale,
                                                            args.non_affine_group_norm, activation)
        embed = feature_enc_layers[-1][0]
        agg_layers = eval(args.conv_aggregator_layers)  # noqa: S307
        self.feature_aggregator = ConvAggegator(agg_layers, embed, args.dropout, args.skip_connections_agg,
                                                args.residual_scale, args.non_affine_group_norm,
                                                not args.no_conv_bias, args.agg_zero_pad, activation)
        self.wav2vec_predictions = nn.Module()
        self.wav2vec_predictions.project_to_steps = nn.ConvTranspose2d(agg_layers[-1][0], embed,
                                                                       (1, args.prediction_steps))

    def forward(self, source):
        features = self.feature_extractor(source)
        return features, self.feature_aggregator(features)


def wav2vec_args(config: str = "large", width: int = 16, **extra) -> argparse.Namespace:
    """The stored ``args`` of a wav2vec checkpoint (fairseq 0.8 style), layer stack of ``config`` at ``width``."""
    spec = {k: (v.replace("W", str(width)) if isinstance(v, str) else v)
            for k, v in (LARGE if config == "large" else BASE).items()}
    base = dict(arch="wav2vec", task="audio_pretraining", criterion="binary_cross_entropy", sample_rate=16000,
                max_sample_size=150000, prediction_steps=12, num_negatives=10, sample_distance=None,
                cross_sample_negatives=0, dropout=0.0, dropout_features=0.0, dropout_agg=0.0, encoder="cnn",
                aggregator="cnn", skip_connections_feat=False, skip_connections_agg=False, residual_scale=0.5,
                gru_dim=512, no_conv_bias=False, agg_zero_pad=False, log_compression=False, balanced_classes=False,
                project_features="none", non_affine_group_norm=False, offset="auto", activation="relu",
                vq_type="none", lr=[1e-06], optimizer="adam", seed=1)
    return argparse.Namespace(**{**base, **spec, **extra})


def random_wav2vec(args, seed: int = 0) -> FairseqWav2Vec:
    torch.manual_seed(seed)
    model = FairseqWav2Vec(args)
    for m in model.modules():                  # trained group norms are not the identity
        if isinstance(m, nn.GroupNorm) and m.affine:
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def training_state() -> dict:
    """What fairseq stores beside the weights (plain data only)."""
    return {"optimizer_history": [{"criterion_name": "BinaryCrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                                   "lr_scheduler_state": {"best": 2.31}, "num_updates": 400000}],
            "extra_state": {"train_iterator": {"epoch": 12, "iterations_in_epoch": 0, "shuffle": True},
                            "val_loss": 2.31},
            "last_optimizer_state": None}


def save_fairseq(path, model_state: dict, args=None, cfg=None, legacy: bool = False, **extra) -> Path:
    """``legacy``: torch's pre-1.6 (non-zip) format, as the 2019 releases (wav2vec_large.pt, roberta.large) were saved."""
    obj = {"args": args, "model": model_state, **training_state(), **extra}
    if cfg is not None:
        obj["cfg"] = cfg
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return Path(path)


def wav2vec_fixture(folder, config: str = "large") -> tuple[str, dict]:
    """A tiny wav2vec (v1) checkpoint in fairseq's layout in ``folder``: ``--encoder`` string and options."""
    os.makedirs(folder, exist_ok=True)
    args = wav2vec_args(config, width=8)
    path = save_fairseq(Path(folder) / f"wav2vec_{config}.pt", random_wav2vec(args).state_dict(), args)
    return f"fairseq:{path}", {"layers": "c"}


# --- wav2vec 2.0 / HuBERT: a transformers model written back under fairseq's names ---------------------------

TINY_W2V2 = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
_BACK = {"attention.k_proj": "self_attn.k_proj", "attention.v_proj": "self_attn.v_proj",
         "attention.q_proj": "self_attn.q_proj", "attention.out_proj": "self_attn.out_proj",
         "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
         "feed_forward.output_dense": "fc2", "final_layer_norm": "final_layer_norm"}


def tiny_hf_speech(kind: str = "wav2vec2", norm: str = "group", stable: bool = False, seed: int = 0):
    import transformers as tf

    cfg_cls, model_cls = (tf.HubertConfig, tf.HubertModel) if kind == "hubert" else (tf.Wav2Vec2Config, tf.Wav2Vec2Model)
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**TINY_W2V2, feat_extract_norm=norm, do_stable_layer_norm=stable,
                              layer_norm_eps=1e-5))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif "layer_norm" in name and name.endswith("bias"):
                p.uniform_(-0.2, 0.2)
    return model.eval()


def fairseq_w2v2_state(hf_model) -> dict[str, torch.Tensor]:
    """A transformers wav2vec2/HuBERT state dict under fairseq's parameter names (what fairseq saves)."""
    out = {}
    layer_mode = hf_model.config.feat_extract_norm == "layer"
    for k, v in hf_model.state_dict().items():
        parts = k.split(".")
        if k.startswith("feature_extractor.conv_layers."):
            i, sub, kind = parts[2], parts[3], parts[4]
            key = f"feature_extractor.conv_layers.{i}.0.{kind}" if sub == "conv" else \
                f"feature_extractor.conv_layers.{i}.2.{'1.' if layer_mode else ''}{kind}"
        elif k.startswith("feature_projection.layer_norm."):
            key = f"layer_norm.{parts[-1]}"
        elif k.startswith("feature_projection.projection."):
            key = f"post_extract_proj.{parts[-1]}"
        elif k == "masked_spec_embed":
            key = "mask_emb"
        elif k.startswith("encoder.pos_conv_embed.conv."):
            key = {"bias": "encoder.pos_conv.0.bias", "original0": "encoder.pos_conv.0.weight_g",
                   "original1": "encoder.pos_conv.0.weight_v"}[parts[-1]]
        elif k.startswith("encoder.layers."):
            key = f"encoder.layers.{parts[2]}.{_BACK['.'.join(parts[3:-1])]}.{parts[-1]}"
        elif k.startswith("encoder.layer_norm."):
            key = k
        else:
            raise KeyError(k)
        out[key] = v.clone()
    return out


def w2v2_model_options(hf_model, kind: str) -> dict:
    c = hf_model.config
    return dict(extractor_mode="layer_norm" if c.feat_extract_norm == "layer" else "default",
                encoder_layers=c.num_hidden_layers, encoder_embed_dim=c.hidden_size,
                encoder_ffn_embed_dim=c.intermediate_size, encoder_attention_heads=c.num_attention_heads,
                activation_fn="gelu", dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
                encoder_layerdrop=0.05, dropout_input=0.1, dropout_features=0.1, final_dim=16,
                layer_norm_first=bool(c.do_stable_layer_norm),
                conv_feature_layers="[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16,2,2)] * 2",
                conv_bias=False, logit_temp=0.1, feature_grad_mult=0.1, mask_length=10, mask_prob=0.65,
                conv_pos=c.num_conv_pos_embeddings, conv_pos_groups=c.num_conv_pos_embedding_groups,
                latent_temp=[2.0, 0.5, 0.999995], **({"label_rate": 50} if kind == "hubert" else
                                                      {"quantize_targets": True, "latent_vars": 8}))


def save_fairseq_w2v2(path, hf_model, kind: str = "wav2vec2", layout: str = "args", normalize: bool = False) -> Path:
    """``layout``: ``args`` (Namespace, fairseq <= 0.10), ``cfg`` (plain dict, hydra era),
    ``omegaconf`` (a pickled DictConfig) or ``ctc`` (fine-tuned wav2vec_ctc wrapping the model)."""
    sd = fairseq_w2v2_state(hf_model)
    d = hf_model.config.hidden_size
    if kind == "hubert":
        sd.update({"label_embs_concat": torch.randn(8, 16), "final_proj.weight": torch.randn(16, d),
                   "final_proj.bias": torch.zeros(16)})
    else:
        sd.update({"quantizer.vars": torch.randn(1, 16, 8), "quantizer.weight_proj.weight": torch.randn(16, 16),
                   "quantizer.weight_proj.bias": torch.zeros(16), "project_q.weight": torch.randn(16, 8),
                   "project_q.bias": torch.zeros(16), "final_proj.weight": torch.randn(16, d),
                   "final_proj.bias": torch.zeros(16)})
    model_opts = {"_name": kind, **w2v2_model_options(hf_model, kind)}
    task = {"_name": "hubert_pretraining" if kind == "hubert" else "audio_pretraining", "data": "/data/manifest",
            "sample_rate": 16000, "normalize": normalize, "max_sample_size": 250000}
    if layout == "args":
        args = argparse.Namespace(arch=kind, task=task["_name"], **{k: v for k, v in model_opts.items() if k != "_name"},
                                  sample_rate=16000, normalize=normalize, criterion="wav2vec")
        return save_fairseq(path, sd, args)
    if layout == "ctc":
        inner = argparse.Namespace(arch=kind, task=task["_name"], **{k: v for k, v in model_opts.items() if k != "_name"},
                                   sample_rate=16000, normalize=normalize)
        args = argparse.Namespace(arch=f"{'hubert' if kind == 'hubert' else 'wav2vec'}_ctc", w2v_args=inner,
                                  w2v_path="/ckpt/pretrained.pt", normalize=normalize, task="audio_finetuning",
                                  apply_mask=True, mask_prob=0.5)
        sd = {f"w2v_encoder.w2v_model.{k}": v for k, v in sd.items()}
        sd.update({"w2v_encoder.proj.weight": torch.randn(32, d), "w2v_encoder.proj.bias": torch.zeros(32)})
        return save_fairseq(path, sd, args)
    cfg = {"_name": None, "common": {"seed": 1, "fp16": True}, "model": model_opts, "task": task,
           "criterion": {"_name": kind}, "optimization": {"lr": [0.0005], "max_update": 400000}}
    if layout == "omegaconf":
        from omegaconf import OmegaConf

        cfg = OmegaConf.create(cfg)
    return save_fairseq(path, sd, None, cfg)


def w2v2_fixture(folder, kind: str = "wav2vec2") -> tuple[str, dict]:
    """A tiny fairseq wav2vec 2.0 (or HuBERT) checkpoint in ``folder``: ``--encoder`` string and options."""
    os.makedirs(folder, exist_ok=True)
    path = save_fairseq_w2v2(Path(folder) / f"{kind}_tiny.pt", tiny_hf_speech(kind), kind,
                             layout="args" if kind == "wav2vec2" else "cfg")
    return f"fairseq:{path}", {"layers": "all"}


# --- RoBERTa: fairseq's sentence encoder, GPT-2 BPE files and dict.txt ---------------------------------------

def gpt2_byte_chars() -> list[str]:
    """GPT-2's 256 byte characters in encoder.json order (printable bytes first)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in keep] + [table[b] for b in range(256) if b not in keep]


MERGES = [("h", "e"), ("Ġ", "t"), ("t", "he"), ("Ġt", "he"), ("a", "t"), ("Ġ", "c"), ("Ġc", "at"), ("Ã", "©"),
          ("'", "s"), ("l", "o"), ("Ġ", "w"), ("o", "r")]


def write_gpt2_bpe(folder: Path) -> dict[str, int]:
    """A tiny but complete GPT-2 BPE (every byte + MERGES) as encoder.json / vocab.bpe; returns the vocab."""
    vocab = {c: i for i, c in enumerate(gpt2_byte_chars())}
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    (folder / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES), encoding="utf-8")
    return vocab


def write_dict(folder: Path, vocab: dict[str, int], left_out: tuple[str, ...] = ("z", "q")) -> dict[int, int]:
    """A dict.txt listing GPT-2 ids in a frequency order of its own (merged tokens first), some ids left out;
    returns GPT-2 id -> fairseq index (4 + line number)."""
    order = [t for t in sorted(vocab, key=lambda t: (-len(t), vocab[t])) if t not in left_out]
    lines = [f"{vocab[t]} {1000 - i}" for i, t in enumerate(order)]
    (folder / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {vocab[t]: 4 + i for i, t in enumerate(order)}


class FairseqRoberta(nn.Module):
    """fairseq RoBERTa's sentence encoder (2019 layout), forward re-implemented from fairseq's code.

    ``decoder.sentence_encoder``: learned positions (padding_idx 1), embedding
    layer norm, post-norm layers of MultiheadAttention (one ``in_proj`` for q, k, v,
    q scaled by head_dim ** -0.5) and gelu FFN; ``decoder.lm_head`` beside it.
    """

    def __init__(self, vocab: int, dim: int = 32, layers: int = 2, heads: int = 2, ffn: int = 64, max_pos: int = 64):
        super().__init__()
        self.heads = heads
        se = nn.Module()
        se.embed_tokens = nn.Embedding(vocab, dim, padding_idx=1)
        se.embed_positions = nn.Embedding(max_pos + 2, dim, padding_idx=1)
        se.emb_layer_norm = nn.LayerNorm(dim)
        se.layers = nn.ModuleList()
        for _ in range(layers):
            layer = nn.Module()
            layer.self_attn = nn.Module()
            layer.self_attn.in_proj_weight = nn.Parameter(torch.randn(3 * dim, dim) * 0.2)
            layer.self_attn.in_proj_bias = nn.Parameter(torch.randn(3 * dim) * 0.1)
            layer.self_attn.out_proj = nn.Linear(dim, dim)
            layer.self_attn_layer_norm = nn.LayerNorm(dim)
            layer.fc1, layer.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
            layer.final_layer_norm = nn.LayerNorm(dim)
            se.layers.append(layer)
        self.decoder = nn.Module()
        self.decoder.sentence_encoder = se
        self.decoder.lm_head = nn.Module()
        self.decoder.lm_head.dense = nn.Linear(dim, dim)
        self.decoder.lm_head.layer_norm = nn.LayerNorm(dim)
        self.decoder.lm_head.weight = se.embed_tokens.weight
        self.decoder.lm_head.bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5) if name.endswith("weight") else p.uniform_(-0.2, 0.2)

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Inner states ``(B, T, D)`` of every layer (index 0: embeddings), as fairseq's extract_features."""
        se = self.decoder.sentence_encoder
        padding_mask = tokens.eq(1)
        mask = tokens.ne(1).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + 1        # utils.make_positions
        x = se.embed_tokens(tokens) + se.embed_positions(positions)
        x = se.emb_layer_norm(x)
        x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
        states = [x]
        b, t, d = x.shape
        hd = d // self.heads
        for layer in se.layers:
            residual = x
            q, k, v = F.linear(x, layer.self_attn.in_proj_weight, layer.self_attn.in_proj_bias).chunk(3, dim=-1)
            q = q * hd ** -0.5
            q, k, v = (y.view(b, t, self.heads, hd).transpose(1, 2) for y in (q, k, v))
            w = q @ k.transpose(-1, -2)                                               # (B, H, T, T)
            w = w.masked_fill(padding_mask[:, None, None, :], float("-inf"))
            attn = (F.softmax(w.float(), dim=-1).type_as(w) @ v).transpose(1, 2).reshape(b, t, d)
            x = layer.self_attn_layer_norm(residual + layer.self_attn.out_proj(attn))
            residual = x
            x = layer.final_layer_norm(residual + layer.fc2(F.gelu(layer.fc1(x))))
            states.append(x)
        return states


def roberta_args(**extra) -> argparse.Namespace:
    return argparse.Namespace(arch="roberta_base", task="masked_lm", criterion="masked_lm", encoder_layers=2,
                              encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=2,
                              activation_fn="gelu", pooler_activation_fn="tanh", dropout=0.1, attention_dropout=0.1,
                              activation_dropout=0.0, pooler_dropout=0.0, max_positions=64, tokens_per_sample=64,
                              sample_break_mode="complete", mask_prob=0.15, bpe="gpt2", **extra)


def save_fairseq_roberta(folder: Path, seed: int = 0, split_qkv: bool = False) -> tuple[Path, FairseqRoberta, dict]:
    """``folder``/model.pt + dict.txt + encoder.json + vocab.bpe; returns (model.pt, reference model, id map).

    ``split_qkv``: save with q/k/v projections and fairseq's newer ``encoder.`` prefix instead of the
    2019 ``decoder.`` prefix with one ``in_proj``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_gpt2_bpe(folder)
    ids = write_dict(folder, vocab)
    torch.manual_seed(seed)
    model = FairseqRoberta(4 + len(ids) + 1).eval()
    sd = model.state_dict()
    if split_qkv:
        new = {}
        for k, v in sd.items():
            k = "encoder." + k[len("decoder."):]
            if ".in_proj_" in k:
                prefix, kind = k.rsplit(".in_proj_", 1)
                for name, part in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, dim=0)):
                    new[f"{prefix}.{name}.{kind}"] = part
            else:
                new[k] = v
        sd = new
    path = save_fairseq(folder / "model.pt", sd, roberta_args(), legacy=not split_qkv)
    return path, model, ids


def roberta_fixture(folder) -> tuple[str, dict]:
    """A tiny fairseq RoBERTa (model.pt, dict.txt, GPT-2 BPE files) in ``folder``: ``--encoder`` string and options."""
    path, _, _ = save_fairseq_roberta(Path(folder))
    return f"fairseq:{path}", {"layers": "all"}
