"""fairseq models rebuilt without fairseq: wav2vec (v1), and the mappings of wav2vec 2.0 / HuBERT / RoBERTa
checkpoints onto ``transformers`` models, with fairseq's GPT-2 BPE + ``dict.txt`` tokenisation.

wav2vec (Schneider et al., 2019) is re-implemented from fairseq's
``fairseq/models/wav2vec/wav2vec.py`` (``Wav2VecModel``): a convolutional
feature extractor (``z``: Conv1d without bias -> group norm over all time
steps -> ReLU per layer, optional skip connections, log compression
``log(|x| + 1)``) and a causal convolutional context network (``c``:
replication pad of ``k - 1`` on the left -> Conv1d -> group norm -> ReLU per
layer, skip connections scaled by ``sqrt(residual_scale)``). Module names
follow fairseq's, so a released state dict loads as is; the prediction head
used only in training (``wav2vec_predictions``) is left out.

The ``transformers`` mappings follow transformers' own conversion scripts
(``convert_wav2vec2_original_pytorch_checkpoint_to_pytorch.py``,
``convert_hubert_...``, ``convert_roberta_original_pytorch_checkpoint_to_pytorch.py``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imo_pipeline.errors import ConfigError

from .fairseq_ckpt import FairseqCheckpoint, literal_layers

# --- wav2vec (v1) --------------------------------------------------------------------------------------------

# fairseq's base_wav2vec_architecture: the defaults of options an older checkpoint may not store
WAV2VEC_DEFAULTS = {
    "conv_feature_layers": "[(512, 10, 5)] + [(512, 8, 4)] + [(512, 4, 2)] * 3",
    "conv_aggregator_layers": "[(512, 3, 1)] * 9",
    "skip_connections_feat": False, "skip_connections_agg": False, "residual_scale": 0.5,
    "log_compression": False, "no_conv_bias": False, "agg_zero_pad": False, "non_affine_group_norm": False,
    "activation": "relu", "aggregator": "cnn", "encoder": "cnn", "vq_type": "none",
}


class Fp32GroupNorm(nn.GroupNorm):
    """Group norm computed in float32 (fairseq's ``Fp32GroupNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float() if self.weight is not None else None,
                           self.bias.float() if self.bias is not None else None, self.eps)
        return out.type_as(x)


class ZeroPad1d(nn.Module):
    def __init__(self, left: int, right: int):
        super().__init__()
        self.left, self.right = left, right

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, (self.left, self.right))


class Wav2VecFeatureExtractor(nn.Module):
    """``(B, S)`` waveform -> ``(B, C, T)`` features ``z``; layer ``i`` is ``conv_layers.i.{0: conv, 2: norm}``."""

    def __init__(self, layers, log_compression, skip_connections, residual_scale, affine, activation):
        super().__init__()
        self.conv_layers = nn.ModuleList()
        c_in = 1
        for dim, k, stride in layers:
            self.conv_layers.append(nn.Sequential(nn.Conv1d(c_in, dim, k, stride=stride, bias=False), nn.Identity(),
                                                  Fp32GroupNorm(1, dim, affine=affine), activation))
            c_in = dim
        self.log_compression = log_compression
        self.skip_connections = skip_connections
        self.residual_scale = math.sqrt(residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)                                                   # (B, 1, S)
        for conv in self.conv_layers:
            residual = x
            x = conv(x)                                                      # (B, C, T_i)
            if self.skip_connections and x.size(1) == residual.size(1):
                t, rt = x.size(2), residual.size(2)
                x = (x + residual[..., :: rt // t][..., :t]) * self.residual_scale
        if self.log_compression:
            x = (x.abs() + 1).log()
        return x                                                             # (B, C, T)


class Wav2VecAggregator(nn.Module):
    """``(B, C, T)`` -> ``(B, C', T)`` context ``c``; causal: frame t sees frames <= t only."""

    def __init__(self, layers, embed, skip_connections, residual_scale, affine, conv_bias, zero_pad, activation):
        super().__init__()
        self.conv_layers = nn.Sequential()
        self.residual_proj = nn.ModuleList()
        c_in = embed
        for dim, k, stride in layers:
            ka = k // 2
            kb = ka - 1 if k % 2 == 0 else ka
            pad = ZeroPad1d(ka + kb, 0) if zero_pad else nn.ReplicationPad1d((ka + kb, 0))
            self.residual_proj.append(nn.Conv1d(c_in, dim, 1, bias=False) if c_in != dim and skip_connections else None)
            self.conv_layers.append(nn.Sequential(pad, nn.Conv1d(c_in, dim, k, stride=stride, bias=conv_bias),
                                                  nn.Identity(), Fp32GroupNorm(1, dim, affine=affine), activation))
            c_in = dim
        self.skip_connections = skip_connections
        self.residual_scale = math.sqrt(residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for rproj, conv in zip(self.residual_proj, self.conv_layers):
            residual = x
            x = conv(x)                                                      # (B, C', T)
            if self.skip_connections:
                if rproj is not None:
                    residual = rproj(residual)
                x = (x + residual) * self.residual_scale
        return x


class Wav2VecModel(nn.Module):
    """fairseq's ``Wav2VecModel`` for inference: waveform ``(B, S)`` -> ``z`` and ``c``, each ``(B, T, C)``."""

    def __init__(self, opts: dict[str, Any]):
        super().__init__()
        o = {**WAV2VEC_DEFAULTS, **{k: v for k, v in opts.items() if v is not None}}
        act = {"relu": nn.ReLU(), "gelu": nn.GELU()}.get(o["activation"])
        if act is None or o["aggregator"] != "cnn" or o["encoder"] != "cnn" or o["vq_type"] not in ("none", None):
            raise ValueError(f"activation={o['activation']}, aggregator={o['aggregator']}, encoder={o['encoder']}, "
                             f"vq_type={o['vq_type']}")
        feat = literal_layers(o["conv_feature_layers"], "wav2vec conv_feature_layers")
        agg = literal_layers(o["conv_aggregator_layers"], "wav2vec conv_aggregator_layers")
        affine = not o["non_affine_group_norm"]
        self.opts = o
        self.feature_extractor = Wav2VecFeatureExtractor(feat, bool(o["log_compression"]),
                                                         bool(o["skip_connections_feat"]), float(o["residual_scale"]),
                                                         affine, act)
        self.feature_aggregator = Wav2VecAggregator(agg, feat[-1][0], bool(o["skip_connections_agg"]),
                                                    float(o["residual_scale"]), affine, not o["no_conv_bias"],
                                                    bool(o["agg_zero_pad"]), act)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.feature_extractor(wav)                                      # (B, C, T)
        c = self.feature_aggregator(z)                                       # (B, C', T)
        return z.transpose(1, 2), c.transpose(1, 2)                          # (B, T, C), (B, T, C')


def build_wav2vec(ck: FairseqCheckpoint) -> tuple[Wav2VecModel, list[str]]:
    """The wav2vec model of checkpoint ``ck`` with its weights; also the weight groups left out."""
    try:
        model = Wav2VecModel(ck.model_args)
    except ValueError as e:
        raise ConfigError(f"fairseq checkpoint {ck.path}: a wav2vec model imo does not rebuild ({e}); supported: "
                          f"the convolutional wav2vec of wav2vec_large.pt (cnn encoder and aggregator, no "
                          f"vector quantizer: vq-wav2vec is not supported)") from None
    want = model.state_dict()
    used = {k: v for k, v in ck.state.items() if k in want}
    left_out = sorted({k.split(".")[0] for k in ck.state if k not in want})
    _check_fit(ck, want, used)
    model.load_state_dict(used, strict=True)
    return model, left_out


def _check_fit(ck: FairseqCheckpoint, want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> None:
    missing = sorted(set(want) - set(got))
    bad = [k for k in got if tuple(got[k].shape) != tuple(want[k].shape)]
    if missing or bad:
        raise ConfigError(f"fairseq checkpoint {ck.path} ({ck.arch}) does not fit the model its stored options "
                          f"describe: missing {missing[:6]}{' ...' if len(missing) > 6 else ''}, shape differs "
                          f"for {bad[:4]}; was the file edited, or its args replaced?")


# --- wav2vec 2.0 / HuBERT onto transformers -------------------------------------------------------------------

W2V2_DEFAULTS = {"extractor_mode": "default", "encoder_layers": 12, "encoder_embed_dim": 768,
                 "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12, "activation_fn": "gelu",
                 "conv_feature_layers": "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] * 2",
                 "conv_bias": False, "conv_pos": 128, "conv_pos_groups": 16, "layer_norm_first": False,
                 "pos_conv_depth": 1, "layer_type": "transformer"}
_LAYER_MAP = {"self_attn.k_proj": "attention.k_proj", "self_attn.v_proj": "attention.v_proj",
              "self_attn.q_proj": "attention.q_proj", "self_attn.out_proj": "attention.out_proj",
              "self_attn_layer_norm": "layer_norm", "fc1": "feed_forward.intermediate_dense",
              "fc2": "feed_forward.output_dense", "final_layer_norm": "final_layer_norm"}
_W2V2_UNUSED = ("quantizer", "project_q", "final_proj", "label_embs_concat", "target_glu", "project_inp")


def w2v2_config(ck: FairseqCheckpoint):
    """The ``transformers`` config (Wav2Vec2Config or HubertConfig) equal to the checkpoint's model options."""
    import transformers as tf

    o = {**W2V2_DEFAULTS, **{k: v for k, v in ck.model_args.items() if v is not None}}
    if int(o["pos_conv_depth"]) != 1 or o["layer_type"] != "transformer" or o["extractor_mode"] not in (
            "default", "layer_norm"):
        raise ConfigError(f"fairseq checkpoint {ck.path}: {ck.arch} with layer_type={o['layer_type']}, "
                          f"pos_conv_depth={o['pos_conv_depth']}, extractor_mode={o['extractor_mode']} has no direct "
                          f"transformers equivalent; supported: the wav2vec 2.0 / HuBERT transformer encoders")
    conv = literal_layers(o["conv_feature_layers"], f"{ck.arch} conv_feature_layers")
    cls = tf.HubertConfig if ck.arch.startswith("hubert") else tf.Wav2Vec2Config
    return cls(conv_dim=[c[0] for c in conv], conv_kernel=[c[1] for c in conv], conv_stride=[c[2] for c in conv],
               conv_bias=bool(o["conv_bias"]), feat_extract_norm="layer" if o["extractor_mode"] == "layer_norm"
               else "group", feat_extract_activation="gelu", hidden_size=int(o["encoder_embed_dim"]),
               num_hidden_layers=int(o["encoder_layers"]), num_attention_heads=int(o["encoder_attention_heads"]),
               intermediate_size=int(o["encoder_ffn_embed_dim"]), hidden_act=str(o["activation_fn"]),
               num_conv_pos_embeddings=int(o["conv_pos"]), num_conv_pos_embedding_groups=int(o["conv_pos_groups"]),
               do_stable_layer_norm=bool(o["layer_norm_first"]), layer_norm_eps=1e-5, hidden_dropout=0.0,
               attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0, final_dropout=0.0,
               layerdrop=0.0)


def w2v2_state(ck: FairseqCheckpoint, hf_keys: set[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """fairseq wav2vec 2.0 / HuBERT weights renamed to ``transformers``' (conversion-script mapping)."""
    out: dict[str, torch.Tensor] = {}
    left_out: set[str] = set()
    for name, value in ck.state.items():
        m = re.fullmatch(r"feature_extractor\.conv_layers\.(\d+)\.(\d+)\.(?:1\.)?(weight|bias)", name)
        if m:
            i, part, kind = m.groups()
            out[f"feature_extractor.conv_layers.{i}.{'conv' if part == '0' else 'layer_norm'}.{kind}"] = value
            continue
        m = re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)\.(weight|bias)", name)
        if m and m.group(2) in _LAYER_MAP:
            out[f"encoder.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{m.group(3)}"] = value
            continue
        simple = {"layer_norm.weight": "feature_projection.layer_norm.weight",
                  "layer_norm.bias": "feature_projection.layer_norm.bias",
                  "post_extract_proj.weight": "feature_projection.projection.weight",
                  "post_extract_proj.bias": "feature_projection.projection.bias",
                  "encoder.layer_norm.weight": "encoder.layer_norm.weight",
                  "encoder.layer_norm.bias": "encoder.layer_norm.bias",
                  "encoder.pos_conv.0.bias": "encoder.pos_conv_embed.conv.bias", "mask_emb": "masked_spec_embed"}
        if name in simple:
            out[simple[name]] = value
        elif name in ("encoder.pos_conv.0.weight_g", "encoder.pos_conv.0.weight_v", "encoder.pos_conv.0.weight"):
            g, v = "encoder.pos_conv_embed.conv.parametrizations.weight.original0", \
                   "encoder.pos_conv_embed.conv.parametrizations.weight.original1"
            if g not in hf_keys:   # transformers built with the older weight_norm names
                g, v = "encoder.pos_conv_embed.conv.weight_g", "encoder.pos_conv_embed.conv.weight_v"
            if name.endswith("weight_g"):
                out[g] = value
            elif name.endswith("weight_v"):
                out[v] = value
            else:                  # weight norm already folded in: g = |w| over all but dim 2, v = w
                out[g] = torch.linalg.vector_norm(value, dim=(0, 1), keepdim=True)
                out[v] = value
        elif name.split(".")[0] in _W2V2_UNUSED:
            left_out.add(name.split(".")[0])
        else:
            raise ConfigError(f"fairseq checkpoint {ck.path} ({ck.arch}): weight {name!r} has no place in the "
                              f"transformers model; imo maps only the plain wav2vec 2.0 / HuBERT encoder")
    return out, sorted(left_out)


def build_w2v2(ck: FairseqCheckpoint):
    """A ``transformers`` Wav2Vec2Model / HubertModel holding the checkpoint's weights; also what was left out."""
    import transformers as tf

    config = w2v2_config(ck)
    model = (tf.HubertModel if isinstance(config, tf.HubertConfig) else tf.Wav2Vec2Model)(config)
    want = model.state_dict()
    sd, left_out = w2v2_state(ck, set(want))
    if "feature_projection.projection.weight" not in sd and config.conv_dim[-1] == config.hidden_size:
        sd["feature_projection.projection.weight"] = torch.eye(config.hidden_size)   # fairseq has no projection
        sd["feature_projection.projection.bias"] = torch.zeros(config.hidden_size)   # when the widths agree
    if "masked_spec_embed" in want:   # used only for masking in training; absent from some fine-tuned files
        sd.setdefault("masked_spec_embed", want["masked_spec_embed"])
    _check_fit(ck, want, sd)
    unexpected = sorted(set(sd) - set(want))
    if unexpected:
        raise ConfigError(f"fairseq checkpoint {ck.path} ({ck.arch}): weights {unexpected[:4]} do not fit "
                          f"the transformers model its options describe")
    model.load_state_dict(sd, strict=True)
    return model, left_out


# --- RoBERTa onto transformers --------------------------------------------------------------------------------

ROBERTA_ARCHS = {"roberta": (12, 768, 3072, 12), "roberta_base": (12, 768, 3072, 12),
                 "roberta_large": (24, 1024, 4096, 16), "xlm": (16, 1280, 5120, 16)}


def roberta_state(ck: FairseqCheckpoint) -> dict[str, torch.Tensor]:
    """The sentence encoder's weights renamed to ``transformers``' RobertaModel (conversion-script mapping)."""
    sd = {}
    for k, v in ck.state.items():
        m = re.match(r"(?:decoder|encoder)\.sentence_encoder\.(.+)", k)
        if m:
            sd[m.group(1)] = v
    if not sd:
        raise ConfigError(f"fairseq checkpoint {ck.path} ({ck.arch}) holds no 'decoder.sentence_encoder.*' or "
                          f"'encoder.sentence_encoder.*' weights; is it a RoBERTa model.pt?")
    # fairseq's MultiheadAttention.upgrade_state_dict_named: one in_proj of q, k, v -> three projections
    for k in [k for k in sd if k.endswith("self_attn.in_proj_weight") or k.endswith("self_attn.in_proj_bias")]:
        prefix, kind = k.rsplit(".in_proj_", 1)
        for name, part in zip(("q_proj", "k_proj", "v_proj"), sd.pop(k).chunk(3, dim=0)):
            sd[f"{prefix}.{name}.{kind}"] = part
    out = {"embeddings.word_embeddings.weight": sd.get("embed_tokens.weight"),
           "embeddings.position_embeddings.weight": sd.get("embed_positions.weight"),
           "embeddings.LayerNorm.weight": sd.get("emb_layer_norm.weight", sd.get("layernorm_embedding.weight")),
           "embeddings.LayerNorm.bias": sd.get("emb_layer_norm.bias", sd.get("layernorm_embedding.bias"))}
    names = {"self_attn.q_proj": "attention.self.query", "self_attn.k_proj": "attention.self.key",
             "self_attn.v_proj": "attention.self.value", "self_attn.out_proj": "attention.output.dense",
             "self_attn_layer_norm": "attention.output.LayerNorm", "fc1": "intermediate.dense",
             "fc2": "output.dense", "final_layer_norm": "output.LayerNorm"}
    unmapped = []
    for k, v in sd.items():
        m = re.fullmatch(r"layers\.(\d+)\.(.+)\.(weight|bias)", k)
        if m and m.group(2) in names:
            out[f"encoder.layer.{m.group(1)}.{names[m.group(2)]}.{m.group(3)}"] = v
        elif not m and k.split(".")[0] not in ("embed_tokens", "embed_positions", "emb_layer_norm",
                                                 "layernorm_embedding", "version"):
            unmapped.append(k)
        elif m:
            unmapped.append(k)
    if unmapped:   # e.g. a final layer_norm: pre-norm layers, which RobertaModel does not have
        raise ConfigError(f"fairseq checkpoint {ck.path} ({ck.arch}): sentence-encoder weights {unmapped[:4]} have no "
                          f"place in transformers' RobertaModel; imo maps the post-norm RoBERTa encoder only")
    return {k: v for k, v in out.items() if v is not None}


def build_roberta(ck: FairseqCheckpoint):
    """A ``transformers`` RobertaModel (no pooler) equal to the checkpoint's sentence encoder."""
    import transformers as tf

    sd = roberta_state(ck)
    emb, pos = sd.get("embeddings.word_embeddings.weight"), sd.get("embeddings.position_embeddings.weight")
    if emb is None or pos is None:
        raise ConfigError(f"fairseq checkpoint {ck.path}: no embed_tokens / embed_positions weights; "
                          f"is it a RoBERTa model.pt?")
    layers, dim, ffn, heads = ROBERTA_ARCHS.get(ck.arch, ROBERTA_ARCHS["roberta"])
    config = tf.RobertaConfig(
        vocab_size=emb.shape[0], hidden_size=int(ck.opt("encoder_embed_dim", dim)),
        num_hidden_layers=int(ck.opt("encoder_layers", layers)),
        num_attention_heads=int(ck.opt("encoder_attention_heads", heads)),
        intermediate_size=int(ck.opt("encoder_ffn_embed_dim", ffn)), hidden_act=str(ck.opt("activation_fn", "gelu")),
        max_position_embeddings=pos.shape[0], type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = tf.RobertaModel(config, add_pooling_layer=False)
    want = model.state_dict()
    sd["embeddings.token_type_embeddings.weight"] = torch.zeros_like(want["embeddings.token_type_embeddings.weight"])
    for k in want:   # buffers transformers derives itself
        if k.startswith("embeddings.") and k.endswith(("position_ids", "token_type_ids")):
            sd[k] = want[k]
    _check_fit(ck, want, sd)
    model.load_state_dict(sd, strict=True)
    return model


# --- fairseq's GPT-2 BPE + Dictionary -------------------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars)))


class FairseqRobertaTokenizer:
    """Text -> the token ids fairseq's ``RobertaHubInterface.encode`` gives.

    fairseq runs GPT-2's byte-level BPE (``encoder.json`` + ``vocab.bpe``), writes
    the GPT-2 ids as words, wraps them as ``"<s> " + ids + " </s>"`` and maps
    each word through the model's ``dict.txt`` (``Dictionary.encode_line``):
    ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, then the file's entries in
    order from 4; a GPT-2 id missing from ``dict.txt`` becomes ``<unk>``.
    """

    bos, pad, eos, unk = 0, 1, 2, 3

    def __init__(self, encoder_json: Path, vocab_bpe: Path, dict_txt: Path):
        import regex

        for p in (encoder_json, vocab_bpe, dict_txt):
            if not p.is_file():
                raise ConfigError(f"fairseq RoBERTa needs {p.name} at {p}: put the GPT-2 BPE files encoder.json and "
                                  f"vocab.bpe (fairseq's gpt2_bpe download) and the model's dict.txt beside model.pt, "
                                  f"or name them with --encoder-opt bpe_dir=... / dictionary=...")
        try:
            self.encoder: dict[str, int] = json.loads(encoder_json.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{encoder_json} is not GPT-2's encoder.json (JSON: {e})") from None
        # fairseq's reading: the first line is a version header, the last one is empty
        merges = vocab_bpe.read_text(encoding="utf-8").split("\n")[1:-1]
        self.bpe_ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.byte_encoder = _bytes_to_unicode()
        self.pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
        self.cache: dict[str, str] = {}
        self.symbols = ["<s>", "<pad>", "</s>", "<unk>"]
        self.indices = {s: i for i, s in enumerate(self.symbols)}
        for n, line in enumerate(dict_txt.read_text(encoding="utf-8").splitlines(), 1):   # Dictionary.add_from_file
            word, sep, count = line.rstrip().rpartition(" ")
            overwrite = count == "#fairseq:overwrite"
            if overwrite:
                word, sep, count = word.rpartition(" ")
            if not sep or not count.lstrip("-").isdigit():
                raise ConfigError(f"{dict_txt}:{n}: not a fairseq dictionary line '<token> <count>': {line[:60]!r}")
            if word in self.indices and not overwrite:
                raise ConfigError(f"{dict_txt}:{n}: duplicate token {word!r} (fairseq refuses this dictionary too)")
            self.indices[word] = len(self.symbols)
            self.symbols.append(word)

    def __len__(self) -> int:
        return len(self.symbols)

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    merged.append(word[i] + word[i + 1])
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        self.cache[token] = out = " ".join(word)
        return out

    def gpt2_ids(self, text: str) -> list[int]:
        """GPT-2 BPE ids of ``text`` (fairseq's ``GPT2BPE.encode`` before it joins them)."""
        ids = []
        for piece in self.pat.findall(text):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            for tok in self._bpe(piece).split(" "):
                if tok not in self.encoder:
                    raise ConfigError(f"GPT-2 BPE token {tok!r} is not in encoder.json; the BPE files do not belong "
                                      f"together (encoder.json / vocab.bpe)")
                ids.append(self.encoder[tok])
        return ids

    def encode(self, text: str) -> list[int]:
        """``<s>`` + dictionary ids of the BPE words + ``</s>``, as fairseq's ``roberta.encode(text)``."""
        return [self.bos] + [self.indices.get(str(i), self.unk) for i in self.gpt2_ids(text)] + [self.eos]
