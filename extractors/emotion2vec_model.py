"""emotion2vec as FunASR releases it: the architecture read from ``config.yaml``, weights from ``model.pt``.

emotion2vec (Ma et al., 2023, arXiv:2312.15185) and emotion2vec+ are
data2vec 2.0 audio models (fairseq's ``Data2VecMultiModel`` with one AUDIO
encoder). This is a PyTorch port of FunASR's ``funasr/models/emotion2vec``
(model.py, audio.py, base.py, modules.py, fairseq_modules.py,
timm_modules.py) that keeps the released module layout, so the released
state dict loads with its own key names
(``modality_encoders.AUDIO.local_encoder.conv_layers.0.0.weight``,
``blocks.3.attn.qkv.weight``, ...). The forward pass is FunASR's
``extract_features(source, padding_mask=None)`` in eval mode:

1. ``local_encoder``: strided 1-D convolutions without bias (the wav2vec 2.0
   stack, 320-sample hop, 400-sample receptive field at 16 kHz), each
   followed by a per-frame fp32 LayerNorm and GELU (``extractor_mode:
   layer_norm``; ``default`` puts a GroupNorm after the first convolution only);
2. ``project_features``: LayerNorm + Linear to ``embed_dim``;
3. ``relative_positional_encoder``: ``conv_pos_depth`` grouped convolutions
   (kernel ``max(3, conv_pos_width // conv_pos_depth)``), each followed by a
   parameter-free LayerNorm and GELU; its output is added to its input;
4. ``num_extra_tokens`` learned tokens are prepended;
5. ``context_encoder``: LayerNorm, then ``prenet_depth`` transformer blocks;
6. ``blocks``: ``depth`` transformer blocks (post-LN: ``x = norm1(x + attn(x));
   x = norm2(x + mlp(x))``); attention adds an ALiBi bias
   (``-slope_h * |i - j|`` times a learned per-head scale, zero for the extra
   tokens) to the logits;
7. the extra tokens are dropped: what is left is FunASR's frame output
   (``granularity="frame"``) at 50 frames/s.

Padding: FunASR itself would let zero padding leak into real frames through
the positional convolutions. Here padded frames are re-zeroed before every
positional convolution (which is exactly the zero padding a lone utterance
sees) and masked as attention keys, so a padded batch gives each utterance
what it gets alone.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from imo_pipeline.errors import ConfigError
from imo_pipeline.safe_load import load_checkpoint

DEFAULT_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
# Tensors a released model.pt may hold beside the encoder, none of which the frame features use:
# the pre-training decoder, the emotion2vec+ / finetuned 9-class head, fairseq's EMA teacher.
IGNORED_PREFIXES = ("modality_encoders.AUDIO.decoder.", "proj.", "_ema", "shared_decoder.", "recon_proj.")
STRIPPED_PREFIXES = ("module.", "d2v_model.")


@dataclass(frozen=True)
class Emotion2vecArch:
    """The architecture fields of FunASR's ``model_conf`` (defaults: fairseq's data2vec 2.0 dataclasses)."""

    embed_dim: int = 768
    depth: int = 8
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-6
    norm_affine: bool = True
    layer_norm_first: bool = False
    normalize: bool | None = None           # layer-norm the whole waveform first; None: config.yaml does not say
    # modalities.audio
    prenet_depth: int = 4
    num_extra_tokens: int = 0
    use_alibi_encoder: bool = False
    alibi_scale: float = 1.0
    learned_alibi: bool = False
    learned_alibi_scale_per_head: bool = False
    learned_alibi_scale_per_layer: bool = False
    num_alibi_heads: int | None = None      # None: num_heads
    model_depth: int | None = None          # None: depth
    extractor_mode: str = "layer_norm"
    feature_encoder_spec: tuple[tuple[int, int, int], ...] = ()
    conv_pos_width: int = 95
    conv_pos_groups: int = 16
    conv_pos_depth: int = 5
    conv_pos_pre_ln: bool = False

    @property
    def n_hidden(self) -> int:
        """Hidden states: the input of the first prenet block, then every block's output."""
        return 1 + self.prenet_depth + self.depth

    @property
    def hop(self) -> int:
        return math.prod(s for _, _, s in self.feature_encoder_spec)

    @property
    def receptive_field(self) -> int:
        r, jump = 1, 1
        for _, k, s in self.feature_encoder_spec:
            r += (k - 1) * jump
            jump *= s
        return r

    def frames(self, samples: torch.Tensor) -> torch.Tensor:
        """Frames the convolution stack makes of ``samples`` (``floor((n - k) / s) + 1`` per layer, 0 if too short)."""
        n = samples.long()
        for _, k, s in self.feature_encoder_spec:
            n = torch.where(n >= k, torch.div(n - k, s, rounding_mode="floor") + 1, torch.zeros_like(n))
        return n


def parse_spec(spec: Any, where: str) -> tuple[tuple[int, int, int], ...]:
    """FunASR's ``feature_encoder_spec`` (a Python expression it ``eval``s) read without eval.

    Accepts list/tuple literals of ``(dim, kernel, stride)`` triples joined by ``+`` and
    repeated by ``* n``, e.g. ``[(512, 10, 5)] + [(512, 3, 2)] * 4``, or an already parsed list.
    """
    def value(node: ast.AST) -> Any:
        if isinstance(node, (ast.List, ast.Tuple)):
            return [value(e) for e in node.elts]
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            a, b = value(node.left), value(node.right)
            if isinstance(node.op, ast.Add) and isinstance(a, list) and isinstance(b, list):
                return a + b
            if isinstance(node.op, ast.Mult) and isinstance(a, list) and type(b) is int and 0 <= b <= 64:
                return a * b
        raise ValueError(ast.dump(node)[:60])

    try:
        layers = value(ast.parse(spec, mode="eval").body) if isinstance(spec, str) else spec
        out = tuple(tuple(t) for t in layers)
        if not out or any(len(t) != 3 or any(type(v) is not int or v < 1 for v in t) for t in out):
            raise ValueError("not positive int triples")
    except (SyntaxError, ValueError, TypeError):
        raise ConfigError(f"{where}: feature_encoder_spec {str(spec)[:80]!r} is not a list of (dim, kernel, stride) "
                          f"triples such as {DEFAULT_SPEC!r}") from None
    return out


def read_arch(path: Path) -> Emotion2vecArch:
    """The architecture from a FunASR ``config.yaml`` (read with ``yaml.safe_load``)."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise ConfigError(f"emotion2vec config {path} could not be read as YAML ({type(e).__name__}: {first}); "
                          f"pass the folder the model came in") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("model_conf"), dict):
        raise ConfigError(f"emotion2vec config {path} has no 'model_conf' mapping; is it the config.yaml of a "
                          f"FunASR emotion2vec model (e.g. emotion2vec_plus_large)?")
    if doc.get("model", "Emotion2vec") != "Emotion2vec":
        raise ConfigError(f"emotion2vec config {path} describes model {doc.get('model')!r}, not Emotion2vec; "
                          f"pass an emotion2vec / emotion2vec+ folder")
    conf = doc["model_conf"]
    audio = (conf.get("modalities") or {}).get("audio") if isinstance(conf.get("modalities"), dict) else None
    if not isinstance(audio, dict):
        raise ConfigError(f"emotion2vec config {path} has no model_conf.modalities.audio section; "
                          f"is it an emotion2vec (data2vec 2.0 audio) config?")
    names = {f.name: f for f in fields(Emotion2vecArch)}
    top = {"embed_dim", "depth", "num_heads", "mlp_ratio", "norm_eps", "norm_affine", "layer_norm_first", "normalize"}
    raw = {k: conf[k] for k in top if conf.get(k) is not None}
    raw.update({k: audio[k] for k in names if k not in top and audio.get(k) is not None})
    for k, v in raw.items():
        kind = names[k].type.split(" ")[0]
        ok = {"bool": isinstance(v, bool), "float": isinstance(v, (int, float)) and not isinstance(v, bool),
              "int": type(v) is int, "str": isinstance(v, str)}.get(kind, True)
        if not ok:
            raise ConfigError(f"emotion2vec config {path}: {k}={v!r} is not a valid {kind}")
    raw["feature_encoder_spec"] = parse_spec(raw.get("feature_encoder_spec", DEFAULT_SPEC), str(path))
    if raw.get("mlp_ratio") is not None:
        raw["mlp_ratio"] = float(raw["mlp_ratio"])
    arch = Emotion2vecArch(**raw)
    problems = []
    if arch.embed_dim < 1 or arch.num_heads < 1 or arch.embed_dim % arch.num_heads:
        problems.append(f"embed_dim {arch.embed_dim} is not a multiple of num_heads {arch.num_heads}")
    if arch.conv_pos_groups < 1 or arch.embed_dim % arch.conv_pos_groups:
        problems.append(f"embed_dim {arch.embed_dim} is not a multiple of conv_pos_groups {arch.conv_pos_groups}")
    if min(arch.depth, arch.prenet_depth, arch.num_extra_tokens, arch.conv_pos_depth - 1) < 0:
        problems.append("depth, prenet_depth, num_extra_tokens must be >= 0 and conv_pos_depth >= 1")
    if arch.extractor_mode not in ("layer_norm", "default"):
        problems.append(f"extractor_mode {arch.extractor_mode!r} is not layer_norm or default")
    if arch.learned_alibi:
        problems.append("learned_alibi (a learned bias table) is not part of any released emotion2vec model")
    if not 1 <= (arch.num_alibi_heads or arch.num_heads) <= arch.num_heads:
        problems.append(f"num_alibi_heads {arch.num_alibi_heads} is not in 1..num_heads")
    if problems:
        raise ConfigError(f"emotion2vec config {path}: {'; '.join(problems)}")
    return arch


# --- modules (layout as in FunASR / fairseq so the state dict keys match) -------------------------

class TransposeLast(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(-2, -1)


class Fp32LayerNorm(nn.LayerNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).type_as(x)


class Fp32GroupNorm(nn.GroupNorm):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).type_as(x)


class SamePad(nn.Module):
    """Drops the extra last frame a symmetric ``k // 2`` padding makes for an even kernel."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, : -self.remove] if self.remove else x


class ConvFeatureExtractor(nn.Module):
    """``(B, S)`` waveform -> ``(B, C, T)``: conv (no bias) -> [norm] -> GELU per layer."""

    def __init__(self, spec: tuple[tuple[int, int, int], ...], mode: str):
        super().__init__()
        self.conv_layers = nn.ModuleList()
        c_in = 1
        for i, (dim, k, stride) in enumerate(spec):
            conv = nn.Conv1d(c_in, dim, k, stride=stride, bias=False)
            if mode == "layer_norm":
                norm = nn.Sequential(TransposeLast(), Fp32LayerNorm(dim, elementwise_affine=True), TransposeLast())
                layer = nn.Sequential(conv, nn.Identity(), norm, nn.GELU())
            elif i == 0:
                layer = nn.Sequential(conv, nn.Identity(), Fp32GroupNorm(dim, dim, affine=True), nn.GELU())
            else:
                layer = nn.Sequential(conv, nn.Identity(), nn.GELU())
            self.conv_layers.append(layer)
            c_in = dim

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = wave.unsqueeze(1)                                               # (B, 1, S)
        for layer in self.conv_layers:
            x = layer(x)                                                    # (B, C, T_i)
        return x


class RelativePositionalEncoder(nn.Sequential):
    """fairseq's ``Sequential(TransposeLast, *[conv, SamePad, LN, GELU] * depth, TransposeLast)``.

    ``forward`` re-zeroes padded frames before each convolution so that padding
    acts like the convolution's own zero padding at the end of a lone utterance.
    """

    def __init__(self, dim: int, width: int, depth: int, groups: int):
        k = max(3, width // depth)
        layers = [nn.Sequential(nn.Conv1d(dim, dim, k, padding=k // 2, groups=groups), SamePad(k), TransposeLast(),
                                nn.LayerNorm(dim, elementwise_affine=False), TransposeLast(), nn.GELU())
                  for _ in range(depth)]
        super().__init__(TransposeLast(), *layers, TransposeLast())

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        x = x.transpose(1, 2)                                               # (B, D, T)
        for layer in list(self)[1:-1]:
            if keep is not None:
                x = x * keep[:, None, :].to(x.dtype)
            x = layer(x)                                                    # (B, D, T)
        return x.transpose(1, 2)                                            # (B, T, D)


class PreLNPositionalEncoder(nn.Sequential):
    """``conv_pos_pre_ln``: fairseq wraps the encoder as ``Sequential(LayerNorm, encoder)``."""

    def __init__(self, dim: int, inner: RelativePositionalEncoder):
        super().__init__(nn.LayerNorm(dim), inner)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self[1](self[0](x), keep)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Alibi:
    """One pass's ALiBi bias: ``(slope_h * -|i - j|) * scale_h`` between real frames, 0 for extra tokens."""

    def __init__(self, slopes: torch.Tensor, n_extra: int, n: int):
        self.slopes, self.n_extra, self.n = slopes, n_extra, n             # (H_a,)

    def rows(self, start: int, stop: int, scale: torch.Tensor) -> torch.Tensor:
        """Bias for query rows ``start:stop``: ``(1, H_a, Q, N)`` float32; ``scale`` is ``(1, H_a or 1, 1, 1)``."""
        dev = self.slopes.device
        i = torch.arange(start, stop, device=dev)[:, None] - self.n_extra
        j = torch.arange(self.n, device=dev)[None, :] - self.n_extra
        dist = -(i - j).abs()                                               # (Q, N) int64
        bias = (self.slopes[:, None, None] * dist[None]).unsqueeze(0) * scale
        real = (i >= 0) & (j >= 0)
        return bias * real                                                  # (1, H_a, Q, N)


def alibi_slopes(heads: int) -> list[float]:
    """ALiBi head slopes (Press et al.), with the usual interleaving when ``heads`` is not a power of 2."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection, ALiBi and a key padding mask.

    Queries are processed in chunks so that a long utterance never holds the
    whole ``(B, H, N, N)`` score tensor; softmax is per query row, so chunking
    changes nothing.
    """

    max_scores = 1 << 24   # score elements held at once

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor | None, alibi: Alibi | None,
                alibi_scale: torch.Tensor | None) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]                                    # (B, H, N, Dh)
        dtype = q.dtype
        q = q * self.scale
        kt = k.transpose(-2, -1)                                            # (B, H, Dh, N)
        step = max(1, self.max_scores // max(1, B * self.heads * N))
        out = []
        for s in range(0, N, step):
            e = min(N, s + step)
            a = q[:, :, s:e] @ kt                                           # (B, H, Q, N)
            if alibi is not None:
                a = a.float()
                bias = alibi.rows(s, e, alibi_scale)                        # (1, H_a, Q, N)
                a = torch.cat([a[:, : bias.shape[1]] + bias, a[:, bias.shape[1]:]], dim=1)
            if key_pad is not None:
                a = a.masked_fill(key_pad[:, None, None, :], float("-inf"))
            a = a.softmax(dim=-1, dtype=torch.float32).to(dtype)
            out.append(a @ v)                                               # (B, H, Q, Dh)
        x = torch.cat(out, dim=2).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class AltBlock(nn.Module):
    """data2vec 2.0's transformer block (fairseq ``AltBlock``), eval mode."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float, affine: bool, layer_norm_first: bool):
        super().__init__()
        self.layer_norm_first = layer_norm_first
        self.norm1 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps, elementwise_affine=affine)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, key_pad, alibi, alibi_scale):
        if self.layer_norm_first:
            x = x + self.attn(self.norm1(x), key_pad, alibi, alibi_scale)
            r = self.mlp(self.norm2(x))
            return r + r   # fairseq's pre-LN AltBlock adds the MLP output to itself, not to x; kept as released
        x = self.norm1(x + self.attn(x, key_pad, alibi, alibi_scale))
        return self.norm2(x + self.mlp(x))


class BlockEncoder(nn.Module):
    """The ``prenet``: a LayerNorm before its blocks (post-LN models; pre-LN models have none) and the blocks."""

    def __init__(self, blocks: nn.ModuleList, norm: nn.Module | None):
        super().__init__()
        self.blocks = blocks
        self.norm = norm


class AudioEncoder(nn.Module):
    def __init__(self, a: Emotion2vecArch, make_block, make_norm):
        super().__init__()
        d = a.embed_dim
        c = a.feature_encoder_spec[-1][0]
        self.local_encoder = ConvFeatureExtractor(a.feature_encoder_spec, a.extractor_mode)
        self.project_features = nn.Sequential(TransposeLast(), nn.LayerNorm(c), nn.Linear(c, d))
        pos = RelativePositionalEncoder(d, a.conv_pos_width, a.conv_pos_depth, a.conv_pos_groups)
        self.relative_positional_encoder = PreLNPositionalEncoder(d, pos) if a.conv_pos_pre_ln else pos
        self.context_encoder = BlockEncoder(nn.ModuleList(make_block() for _ in range(a.prenet_depth)),
                                            make_norm(d) if not a.layer_norm_first else None)
        self.extra_tokens = nn.Parameter(torch.zeros(1, a.num_extra_tokens, d)) if a.num_extra_tokens > 0 else None
        self.alibi_scale = None
        if a.use_alibi_encoder:
            n_scales = (a.prenet_depth + (a.model_depth if a.model_depth is not None else a.depth)
                        if a.learned_alibi_scale_per_layer else 1)
            heads = (a.num_alibi_heads or a.num_heads) if a.learned_alibi_scale_per_head else 1
            self.alibi_scale = nn.Parameter(torch.full((n_scales, 1, heads, 1, 1), float(a.alibi_scale)))


class Emotion2vecModel(nn.Module):
    """FunASR's ``Emotion2vec`` without its training-only parts; ``forward`` returns every hidden state."""

    def __init__(self, arch: Emotion2vecArch):
        super().__init__()
        a = self.arch = arch

        def make_norm(dim: int) -> nn.LayerNorm:
            return nn.LayerNorm(dim, eps=a.norm_eps, elementwise_affine=a.norm_affine)

        def make_block() -> AltBlock:
            return AltBlock(a.embed_dim, a.num_heads, a.mlp_ratio, a.norm_eps, a.norm_affine, a.layer_norm_first)

        self.modality_encoders = nn.ModuleDict({"AUDIO": AudioEncoder(a, make_block, make_norm)})
        self.blocks = nn.ModuleList(make_block() for _ in range(a.depth))
        self.norm = make_norm(a.embed_dim) if a.layer_norm_first else None
        self.register_buffer("slopes", torch.tensor(alibi_slopes(a.num_alibi_heads or a.num_heads)), persistent=False)

    def _scale(self, layer: int) -> torch.Tensor | None:
        s = self.modality_encoders["AUDIO"].alibi_scale
        if s is None:
            return None
        return s.clamp_min(0)[layer if s.shape[0] > 1 else 0].float()      # (1, H_a or 1, 1, 1)

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``wave`` ``(B, S)`` (zero-padded; ``lengths`` in samples, None: all full) ->
        (hidden ``(B, T, n_hidden, D)``, frames ``(B,)``); frames past an item's count are padding."""
        enc = self.modality_encoders["AUDIO"]
        a = self.arch
        B = wave.shape[0]
        lengths = torch.full((B,), wave.shape[1], dtype=torch.long) if lengths is None else lengths.cpu()
        x = enc.project_features(enc.local_encoder(wave))                   # (B, T, D)
        T = x.shape[1]
        frames = a.frames(lengths).clamp_max(T)
        keep = None
        if int(frames.min()) < T:
            keep = (torch.arange(T)[None] < frames[:, None]).to(x.device)   # (B, T) True on real frames
        x = x + enc.relative_positional_encoder(x, keep)
        key_pad = None if keep is None else F.pad(~keep, (a.num_extra_tokens, 0))   # (B, E + T)
        if enc.extra_tokens is not None:
            x = torch.cat([enc.extra_tokens.expand(B, -1, -1).to(x.dtype), x], dim=1)  # (B, E + T, D)
        alibi = Alibi(self.slopes, a.num_extra_tokens, x.shape[1]) if enc.alibi_scale is not None else None
        ctx = enc.context_encoder
        if ctx.norm is not None:
            x = ctx.norm(x)
        hidden = [x]
        layer = 0
        for blk in ctx.blocks:
            x = blk(x, key_pad, alibi, self._scale(layer))
            layer += 1
            hidden.append(x)
        for i, blk in enumerate(self.blocks):
            x = blk(x, key_pad, alibi, self._scale(layer))
            layer += 1
            if self.norm is not None and i == len(self.blocks) - 1:
                x = self.norm(x)
            hidden.append(x)
        h = torch.stack(hidden, dim=2)[:, a.num_extra_tokens:]             # (B, T, n_hidden, D)
        return h, frames


# --- loading ---------------------------------------------------------------------------------------

def _unwrap(obj: Any, path: Path) -> dict[str, Any]:
    for key in ("state_dict", "model_state_dict", "model"):   # FunASR's load_pretrained_model order
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"emotion2vec checkpoint {path} holds no state dict; pass the model.pt of a FunASR "
                          f"emotion2vec folder (a state dict, or one under 'model')")
    return obj


def encoder_state(sd: dict[str, Any], model: Emotion2vecModel, path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under the model's key names; refuses missing, unknown or misshapen tensors."""
    want = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in sd.items():
        k = key
        while k.startswith(STRIPPED_PREFIXES):
            k = k.split(".", 1)[1]
        if k.startswith(IGNORED_PREFIXES):
            continue
        if k not in want or not isinstance(value, torch.Tensor):
            unknown.append(key)
            continue
        if k.endswith("alibi_scale") and value.dim() == 4:   # older fairseq layout (fairseq upgrades it the same way)
            value = value.unsqueeze(0)
        out[k] = value
    missing = sorted(set(want) - set(out))
    bad = [f"{k} {tuple(out[k].shape)} (config.yaml says {tuple(want[k].shape)})"
           for k in want if k in out and out[k].shape != want[k].shape]
    if missing or unknown or bad:
        parts = ([f"missing {missing[:6]}{' ...' if len(missing) > 6 else ''}"] if missing else []) + \
                ([f"unexpected {unknown[:6]}{' ...' if len(unknown) > 6 else ''}"] if unknown else []) + \
                ([f"shapes differ: {'; '.join(bad[:3])}"] if bad else [])
        raise ConfigError(f"emotion2vec checkpoint {path} does not fit its config.yaml: {', '.join(parts)}; "
                          f"pass model.pt together with the config.yaml it was released with")
    bad_values = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad_values:
        raise ConfigError(f"emotion2vec checkpoint {path} has NaN or Inf in {bad_values[:4]}; the file is damaged")
    return out


def load_emotion2vec(folder: Path) -> Emotion2vecModel:
    """An ``Emotion2vecModel`` from ``folder/config.yaml`` + ``folder/model.pt`` (``torch.load(weights_only=True)``)."""
    arch = read_arch(folder / "config.yaml")
    obj = load_checkpoint(folder / "model.pt", "emotion2vec checkpoint",
                          fix="pass a FunASR emotion2vec folder (config.yaml + model.pt holding a state dict)")
    model = Emotion2vecModel(arch)
    sd = encoder_state(_unwrap(obj, folder / "model.pt"), model, folder / "model.pt")
    model.load_state_dict(sd, strict=True)
    return model.eval()
