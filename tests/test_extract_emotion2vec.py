"""emotion2vec: tiny random-init checkpoints in FunASR's released layout, checked against an
independent forward built from ``transformers`` modules, through the extractor, store and CLI."""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml

from audio_utils import tone, write_manifest_lines
from extractors import build_extractor
from extractors.emotion2vec_model import Emotion2vecModel, alibi_slopes, read_arch
from imo_pipeline.errors import ConfigError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store

AUDIO = "modality_encoders.AUDIO"
SPEC = "[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16,2,2)] + [(16,2,2)]"   # the released stack, 16 channels wide
TINY = dict(embed_dim=32, num_heads=4, depth=2, mlp_ratio=2.0, norm_eps=1e-05, layer_norm_first=False,
            normalize=True, prenet_depth=1, num_extra_tokens=3, conv_pos_width=10, conv_pos_depth=2,
            conv_pos_groups=4, num_alibi_heads=4, extractor_mode="layer_norm", use_alibi_encoder=True,
            learned_alibi_scale_per_head=True, learned_alibi_scale_per_layer=False)
MODEL_KEYS = {"embed_dim", "num_heads", "depth", "mlp_ratio", "norm_eps", "layer_norm_first", "normalize"}


def funasr_config(**over) -> dict:
    """A config.yaml as FunASR ships emotion2vec (its template's keys, training ones included), made tiny."""
    c = {**TINY, **over}
    model_conf = {"loss_beta": 0.0, "loss_scale": None, "start_drop_path_rate": 0.0, "end_drop_path_rate": 0.0,
                  "norm_affine": True, "encoder_dropout": 0.1, "post_mlp_drop": 0.1, "attention_dropout": 0.1,
                  "activation_dropout": 0.0, "dropout_input": 0.0, "layerdrop": 0.05, "average_top_k_layers": 8,
                  "end_of_block_targets": False, "clone_batch": 8, "ema_decay": 0.999, "ema_end_decay": 0.99999,
                  "ema_anneal_end_step": 20000, "max_update": 100000, "extractor_mode": "layer_norm",
                  "supported_modality": "AUDIO", "cls_loss": 1.0, "d2v_loss": 1.0, "cls_type": "chunk",
                  **{k: c[k] for k in MODEL_KEYS}}
    audio = {"type": "AUDIO", "prenet_layerdrop": 0.05, "prenet_dropout": 0.1, "start_drop_path_rate": 0.0,
             "end_drop_path_rate": 0.0, "init_extra_token_zero": True, "mask_noise_std": 0.01, "mask_prob": 0.5,
             "mask_length": 5, "encoder_zero_mask": True, "local_grad_mult": 1.0, "alibi_scale": 1.0,
             "learned_alibi": False, "alibi_max_pos": None, "learned_alibi_scale": True,
             "model_depth": c["depth"], "feature_encoder_spec": SPEC, "conv_pos_pre_ln": False,
             "decoder": {"decoder_dim": 16, "decoder_groups": 4, "decoder_kernel": 3, "decoder_layers": 1,
                         "input_dropout": 0.1, "add_positions_masked": False, "add_positions_all": False,
                         "decoder_residual": True, "projection_layers": 1, "projection_ratio": 2.0},
             **{k: v for k, v in c.items() if k not in MODEL_KEYS}}
    model_conf["modalities"] = {"audio": audio}
    return {"model": "Emotion2vec", "model_conf": model_conf}


def released_tensors(c: dict, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random tensors under the key names and shapes of a released model.pt (e.g. emotion2vec_plus_large's
    185 tensors), written out here by hand rather than taken from imo's module."""
    D, H, E = c["embed_dim"], int(c["embed_dim"] * c["mlp_ratio"]), c["num_extra_tokens"]
    k_pos = max(3, c["conv_pos_width"] // c["conv_pos_depth"])
    shapes: dict[str, tuple] = {}
    c_in = 1
    for i, (ch, k, _) in enumerate([(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2):
        shapes[f"{AUDIO}.local_encoder.conv_layers.{i}.0.weight"] = (ch, c_in, k)
        if c["extractor_mode"] == "layer_norm":
            shapes[f"{AUDIO}.local_encoder.conv_layers.{i}.2.1.weight"] = (ch,)
            shapes[f"{AUDIO}.local_encoder.conv_layers.{i}.2.1.bias"] = (ch,)
        elif i == 0:
            shapes[f"{AUDIO}.local_encoder.conv_layers.0.2.weight"] = (ch,)
            shapes[f"{AUDIO}.local_encoder.conv_layers.0.2.bias"] = (ch,)
        c_in = ch
    shapes.update({f"{AUDIO}.project_features.1.weight": (16,), f"{AUDIO}.project_features.1.bias": (16,),
                   f"{AUDIO}.project_features.2.weight": (D, 16), f"{AUDIO}.project_features.2.bias": (D,)})
    if c["use_alibi_encoder"]:
        shapes[f"{AUDIO}.alibi_scale"] = (c["prenet_depth"] + c["depth"] if c["learned_alibi_scale_per_layer"] else 1,
                                          1, c["num_alibi_heads"] if c["learned_alibi_scale_per_head"] else 1, 1, 1)
    if E:
        shapes[f"{AUDIO}.extra_tokens"] = (1, E, D)
    for j in range(1, c["conv_pos_depth"] + 1):
        shapes[f"{AUDIO}.relative_positional_encoder.{j}.0.weight"] = (D, D // c["conv_pos_groups"], k_pos)
        shapes[f"{AUDIO}.relative_positional_encoder.{j}.0.bias"] = (D,)
    if not c["layer_norm_first"]:
        shapes[f"{AUDIO}.context_encoder.norm.weight"] = shapes[f"{AUDIO}.context_encoder.norm.bias"] = (D,)
    else:
        shapes["norm.weight"] = shapes["norm.bias"] = (D,)
    blocks = [f"{AUDIO}.context_encoder.blocks.{i}" for i in range(c["prenet_depth"])] + \
             [f"blocks.{i}" for i in range(c["depth"])]
    for b in blocks:
        shapes.update({f"{b}.attn.qkv.weight": (3 * D, D), f"{b}.attn.qkv.bias": (3 * D,),
                       f"{b}.attn.proj.weight": (D, D), f"{b}.attn.proj.bias": (D,),
                       f"{b}.mlp.fc1.weight": (H, D), f"{b}.mlp.fc1.bias": (H,),
                       f"{b}.mlp.fc2.weight": (D, H), f"{b}.mlp.fc2.bias": (D,),
                       f"{b}.norm1.weight": (D,), f"{b}.norm1.bias": (D,),
                       f"{b}.norm2.weight": (D,), f"{b}.norm2.bias": (D,)})
    out = {}
    for name, shape in shapes.items():
        if name.endswith("alibi_scale"):
            v = rng.uniform(0.3, 1.5, shape)
            v.flat[min(1, v.size - 1)] = -0.5                       # a negative learned scale: FunASR clamps it to 0
        elif len(shape) == 1:                      # 1-D weights are norm gains; biases small
            v = (1.0 if name.endswith("weight") else 0.0) + 0.1 * rng.standard_normal(shape)
        else:
            v = rng.standard_normal(shape) / math.sqrt(int(np.prod(shape[1:])))
        out[name] = torch.tensor(v, dtype=torch.float32)
    return out


def save_tiny_emotion2vec(folder: Path, layout: str = "plus", seed: int = 0, **over) -> Path:
    """config.yaml + model.pt of a tiny random emotion2vec in FunASR's layout.

    ``layout``: ``plus`` = ``{"model": {"d2v_model.<key>": ...}}`` with the 9-class ``proj`` head
    (emotion2vec_plus_large's file); ``plain`` = a bare state dict with pre-training decoder tensors.
    """
    folder.mkdir(parents=True, exist_ok=True)
    cfg = funasr_config(**over)
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    c = {**TINY, **over}
    rng = np.random.default_rng(seed)
    sd = released_tensors(c, rng)
    if layout == "plus":
        sd = {f"d2v_model.{k}": v for k, v in sd.items()}
        sd["proj.weight"], sd["proj.bias"] = torch.randn(9, c["embed_dim"]), torch.randn(9)
        obj = {"model": sd}
    else:
        sd[f"{AUDIO}.decoder.blocks.0.0.weight"] = torch.randn(16, c["embed_dim"] // 4, 3)
        sd[f"{AUDIO}.decoder.proj.weight"] = torch.randn(c["embed_dim"], 16)
        obj = sd
    torch.save(obj, folder / "model.pt")
    return folder


def tiny_emotion2vec(folder: Path) -> tuple[str, dict]:
    """Contract-test hook: a tiny emotion2vec folder -> (``--encoder`` string, extractor options)."""
    save_tiny_emotion2vec(Path(folder))
    return f"emotion2vec:{folder}", {}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny_emotion2vec(tmp_path_factory.mktemp("e2v") / "plus")


# --- an independent reference: the same weights in transformers' wav2vec2 / data2vec-audio modules ----

def reference_hidden(folder: Path, wave: np.ndarray) -> torch.Tensor:
    """All hidden states ``(T, n_hidden, D)`` of one utterance, computed with transformers' modules
    (feature encoder, projection, positional convolutions, encoder layers) where data2vec 2.0 uses
    the same computation, plus ALiBi slopes from transformers' BLOOM code."""
    import transformers as tf
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    cfg = yaml.safe_load((folder / "config.yaml").read_text())["model_conf"]
    audio = cfg["modalities"]["audio"]
    obj = torch.load(folder / "model.pt", weights_only=True)
    sd = obj.get("model", obj)
    sd = {k.removeprefix("d2v_model."): v for k, v in sd.items()}
    D, heads, E, pre_ln = cfg["embed_dim"], cfg["num_heads"], audio["num_extra_tokens"], cfg["layer_norm_first"]
    group = audio["extractor_mode"] == "default"
    k_pos = max(3, audio["conv_pos_width"] // audio["conv_pos_depth"])
    w2v = tf.Wav2Vec2Config(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2),
                            conv_bias=False, feat_extract_norm="group" if group else "layer", hidden_size=D,
                            num_attention_heads=heads, intermediate_size=int(D * cfg["mlp_ratio"]),
                            layer_norm_eps=cfg["norm_eps"], hidden_act="gelu", feat_extract_activation="gelu")
    w2v._attn_implementation = "eager"
    d2v = tf.Data2VecAudioConfig(hidden_size=D, num_conv_pos_embeddings=audio["conv_pos_depth"],
                                 conv_pos_kernel_size=k_pos, num_conv_pos_embedding_groups=audio["conv_pos_groups"])

    fe = tf.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeatureEncoder(w2v).eval()
    fe_sd = {}
    for i in range(7):
        fe_sd[f"conv_layers.{i}.conv.weight"] = sd[f"{AUDIO}.local_encoder.conv_layers.{i}.0.weight"]
        if group and i == 0:
            fe_sd["conv_layers.0.layer_norm.weight"] = sd[f"{AUDIO}.local_encoder.conv_layers.0.2.weight"]
            fe_sd["conv_layers.0.layer_norm.bias"] = sd[f"{AUDIO}.local_encoder.conv_layers.0.2.bias"]
        elif not group:
            fe_sd[f"conv_layers.{i}.layer_norm.weight"] = sd[f"{AUDIO}.local_encoder.conv_layers.{i}.2.1.weight"]
            fe_sd[f"conv_layers.{i}.layer_norm.bias"] = sd[f"{AUDIO}.local_encoder.conv_layers.{i}.2.1.bias"]
    fe.load_state_dict(fe_sd)
    proj = tf.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeatureProjection(
        tf.Wav2Vec2Config(conv_dim=(16,) * 7, hidden_size=D, layer_norm_eps=1e-5)).eval()
    proj.load_state_dict({"layer_norm.weight": sd[f"{AUDIO}.project_features.1.weight"],
                          "layer_norm.bias": sd[f"{AUDIO}.project_features.1.bias"],
                          "projection.weight": sd[f"{AUDIO}.project_features.2.weight"],
                          "projection.bias": sd[f"{AUDIO}.project_features.2.bias"]})
    pos = tf.models.data2vec.modeling_data2vec_audio.Data2VecAudioPositionalConvEmbedding(d2v).eval()
    pos.load_state_dict({f"layers.{j - 1}.conv.{p}": sd[f"{AUDIO}.relative_positional_encoder.{j}.0.{p}"]
                         for j in range(1, audio["conv_pos_depth"] + 1) for p in ("weight", "bias")})

    def layer(prefix: str):
        m = tf.models.wav2vec2.modeling_wav2vec2.Wav2Vec2EncoderLayer(w2v).eval()
        qkv_w, qkv_b = sd[f"{prefix}.attn.qkv.weight"], sd[f"{prefix}.attn.qkv.bias"]
        m.load_state_dict({
            "attention.q_proj.weight": qkv_w[:D], "attention.k_proj.weight": qkv_w[D:2 * D],
            "attention.v_proj.weight": qkv_w[2 * D:], "attention.q_proj.bias": qkv_b[:D],
            "attention.k_proj.bias": qkv_b[D:2 * D], "attention.v_proj.bias": qkv_b[2 * D:],
            "attention.out_proj.weight": sd[f"{prefix}.attn.proj.weight"],
            "attention.out_proj.bias": sd[f"{prefix}.attn.proj.bias"],
            "layer_norm.weight": sd[f"{prefix}.norm1.weight"], "layer_norm.bias": sd[f"{prefix}.norm1.bias"],
            "final_layer_norm.weight": sd[f"{prefix}.norm2.weight"],
            "final_layer_norm.bias": sd[f"{prefix}.norm2.bias"],
            "feed_forward.intermediate_dense.weight": sd[f"{prefix}.mlp.fc1.weight"],
            "feed_forward.intermediate_dense.bias": sd[f"{prefix}.mlp.fc1.bias"],
            "feed_forward.output_dense.weight": sd[f"{prefix}.mlp.fc2.weight"],
            "feed_forward.output_dense.bias": sd[f"{prefix}.mlp.fc2.bias"]}, strict=True)
        if not pre_ln:
            return lambda h, mask: m(h, attention_mask=mask)

        def pre_ln_block(h, mask):   # data2vec 2.0's pre-LN AltBlock: x += attn(norm1 x); x = 2 * mlp(norm2 x)
            h = h + m.attention(m.layer_norm(h), attention_mask=mask)[0]
            f = m.feed_forward(m.final_layer_norm(h))
            return f + f
        return pre_ln_block

    with torch.no_grad():
        x = torch.from_numpy(wave)
        if cfg["normalize"]:
            x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
        feats = fe(x[None]).transpose(1, 2)                                 # (1, T, 16)
        h, _ = proj(feats)                                                  # (1, T, D)
        h = h + pos(h)
        T = h.shape[1]
        if E:
            h = torch.cat([sd[f"{AUDIO}.extra_tokens"], h], dim=1)
        slopes = build_alibi_tensor(torch.ones(1, 2), audio["num_alibi_heads"], torch.float32)[:, 0, 1]
        dist = -(torch.arange(T)[:, None] - torch.arange(T)[None]).abs().float()
        scale = sd[f"{AUDIO}.alibi_scale"].reshape(-1).clamp(min=0)
        bias = F.pad(slopes[:, None, None] * dist * scale[:, None, None], (E, 0, E, 0))[None]   # (1, H, N, N)
        if not pre_ln:
            h = F.layer_norm(h, (D,), sd[f"{AUDIO}.context_encoder.norm.weight"],
                             sd[f"{AUDIO}.context_encoder.norm.bias"], cfg["norm_eps"])
        hidden = [h]
        prefixes = [f"{AUDIO}.context_encoder.blocks.{i}" for i in range(audio["prenet_depth"])] + \
                   [f"blocks.{i}" for i in range(cfg["depth"])]
        for p in prefixes:
            h = layer(p)(h, bias)
            hidden.append(h)
        if pre_ln:
            hidden[-1] = F.layer_norm(h, (D,), sd["norm.weight"], sd["norm.bias"], cfg["norm_eps"])
        return torch.stack(hidden, dim=2)[0, E:]                            # (T, n_hidden, D)


def test_alibi_slopes_equal_bloom():
    from transformers.models.bloom.modeling_bloom import build_alibi_tensor

    for heads in (4, 12, 16, 6):   # emotion2vec base has 12 heads (not a power of two), large 16
        ref = build_alibi_tensor(torch.ones(1, 2), heads, torch.float32)[:, 0, 1]
        np.testing.assert_allclose(alibi_slopes(heads), ref.numpy(), rtol=1e-6)


@pytest.mark.parametrize("over", [{}, {"extractor_mode": "default", "conv_pos_width": 8},
                                  {"layer_norm_first": True, "normalize": False, "num_extra_tokens": 0}],
                         ids=["released", "groupnorm-even-kernel", "pre-ln"])
def test_port_equals_transformers_reference(tmp_path, over):
    folder = save_tiny_emotion2vec(tmp_path / "m", layout="plain", seed=3, **over)
    ext = build_extractor(f"emotion2vec:{folder}", "audio", layers="all", device="cpu")
    wave = tone(1.3, 16000, 170, seed=4)[:, 0]
    ours = ext.embed([wave])[0]
    ref = reference_hidden(folder, wave).numpy()
    assert ours.shape == ref.shape == (int((len(wave) - 400) // 320 + 1), ext.n_hidden, 32)
    np.testing.assert_allclose(ours, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("over", [{}, {"extractor_mode": "default", "conv_pos_width": 8, "num_heads": 8,
                                        "num_alibi_heads": 8, "learned_alibi_scale_per_layer": True},
                                  {"layer_norm_first": True, "learned_alibi_scale_per_head": False}],
                         ids=["released", "groupnorm-8heads-per-layer-scale", "pre-ln"])
def test_equals_funasr_own_code(tmp_path, over):
    """FunASR's own ``Emotion2vec`` (where FunASR is installed) on the same file: same frames, every layer.
    (Checked here with funasr 1.4.16: differences 0.0 on these and four more variants.)"""
    model_py = pytest.importorskip("funasr.models.emotion2vec.model", reason="FunASR not installed (optional check)")
    from funasr.train_utils.load_pretrained_model import load_pretrained_model

    folder = save_tiny_emotion2vec(tmp_path / "m", layout="plus", seed=7, **over)
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    ref = model_py.Emotion2vec(model_conf=cfg["model_conf"], vocab_size=9).eval()
    load_pretrained_model(str(folder / "model.pt"), ref, scope_map=["d2v_model.", "none"])
    ext = build_extractor(f"emotion2vec:{folder}", "audio", layers="all", device="cpu")
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in ext.model.state_dict().items())
    enc = ref.modality_encoders["AUDIO"]
    blocks = list(enc.context_encoder.blocks) + list(ref.blocks)
    caught = []
    blocks[0].register_forward_pre_hook(lambda m, args: caught.append(args[0]))
    for b in blocks:
        b.register_forward_hook(lambda m, args, out: caught.append(out[0]))
    wave = tone(1.7, 16000, 200, seed=3)[:, 0]
    with torch.no_grad():
        src = torch.from_numpy(wave)
        x = ref.extract_features(F.layer_norm(src, src.shape).view(1, -1), padding_mask=None)["x"][0]
        hidden = torch.stack([c[0, enc.modality_cfg.num_extra_tokens:] for c in caught], dim=1)
        if ref.norm is not None:
            hidden[:, -1] = ref.norm(hidden[:, -1])
    ours = torch.from_numpy(ext.embed([wave])[0])
    np.testing.assert_allclose(ours[:, -1], x, atol=1e-6)
    np.testing.assert_allclose(ours, hidden, atol=1e-6)


def test_released_layout_loads_every_layer_at_50_frames_per_second(tiny):
    ext = build_extractor(f"emotion2vec:{tiny}", "audio", layers="all", device="cpu")
    arch = read_arch(tiny / "config.yaml")
    assert (ext.frame_rate, ext.dim, ext.n_hidden) == (50.0, 32, 1 + 1 + 2) and ext.layers == [0, 1, 2, 3]
    assert (arch.hop, arch.receptive_field) == (320, 400)
    assert ext.batching == "mask" and ext.config.normalize is True
    for n in (400, 719, 720, 16000, 16399, 16400, 23456):
        assert ext.embed([tone(n / 16000, 16000)[:, 0]])[0].shape == ((n - 400) // 320 + 1, 4, 32)
    assert build_extractor(f"emotion2vec:{tiny}/model.pt", "audio", layers="0,3", device="cpu").layers == [0, 3]
    assert build_extractor(f"emotion2vec:{tiny}", "audio", device="cpu").layers == [3]
    with pytest.raises(ConfigError, match="--layers '4'"):
        build_extractor(f"emotion2vec:{tiny}", "audio", layers="4")


def test_last_layer_is_funasr_frame_output_with_its_normalisation(tiny):
    """FunASR: ``source = F.layer_norm(source, source.shape)`` when config.yaml says normalize, then
    ``extract_features(...)["x"]`` (extra tokens removed) is the frame output."""
    ext = build_extractor(f"emotion2vec:{tiny}", "audio", device="cpu")
    raw = build_extractor(f"emotion2vec:{tiny}", "audio", device="cpu", normalize=False)
    wave = 0.01 * tone(1.0, 16000, seed=2)[:, 0]   # quiet: FunASR's eps (1e-5) matters
    with torch.no_grad():
        x = torch.from_numpy(wave)
        h, frames = ext.model(F.layer_norm(x, x.shape)[None])
    np.testing.assert_allclose(ext.embed([wave])[0][:, 0], h[0, :, -1].numpy(), atol=1e-6)
    normed = ((wave - wave.mean()) / np.sqrt(wave.var() + 1e-5)).astype(np.float32)
    np.testing.assert_allclose(raw.embed([normed])[0], ext.embed([wave])[0], atol=1e-4)
    assert np.abs(raw.embed([wave])[0] - ext.embed([wave])[0]).max() > 0.1
    assert ext.fingerprint() != raw.fingerprint()


def test_padding_never_changes_an_embedding(tiny):
    ext = build_extractor(f"emotion2vec:{tiny}", "audio", layers="all", device="cpu")
    waves = [tone(s, 16000, 140 + 30 * i, seed=i)[:, 0] for i, s in enumerate([0.3, 2.7, 1.01, 0.026, 1.9])]
    batched = ext.embed(waves)
    for w, b in zip(waves, batched):
        np.testing.assert_allclose(b, ext.embed([w])[0], atol=1e-5)


def test_group_norm_extractor_batches_equal_lengths_only(tmp_path):
    folder = save_tiny_emotion2vec(tmp_path / "g", extractor_mode="default")
    ext = build_extractor(f"emotion2vec:{folder}", "audio", device="cpu")
    assert ext.batching == "equal"
    a, b = tone(1.0, 16000)[:, 0], tone(0.6, 16000, 300)[:, 0]
    np.testing.assert_array_equal(ext.embed([a, b])[0], ext.embed([a])[0])


def test_long_utterance_attention_in_query_chunks(tiny, monkeypatch):
    from extractors.emotion2vec_model import Attention

    ext = build_extractor(f"emotion2vec:{tiny}", "audio", layers="all", device="cpu")
    wave = tone(6.0, 16000, seed=5)[:, 0]
    whole = ext.embed([wave])[0]
    monkeypatch.setattr(Attention, "max_scores", 4 * 300 * 37)   # 37 query rows at a time
    np.testing.assert_allclose(ext.embed([wave])[0], whole, atol=1e-5)


def test_fingerprint_is_stable_and_follows_the_weights(tmp_path, tiny):
    a = build_extractor(f"emotion2vec:{tiny}", "audio", device="cpu")
    assert a.fingerprint() == build_extractor(f"emotion2vec:{tiny}", "audio", device="cpu").fingerprint()
    plain = save_tiny_emotion2vec(tmp_path / "plain", layout="plain")   # same tensors, other file layout
    b = build_extractor(f"emotion2vec:{plain}", "audio", device="cpu")
    assert b.weights().keys() == a.weights().keys()
    assert all(torch.equal(a.weights()[k], b.weights()[k]) for k in a.weights())
    other = save_tiny_emotion2vec(tmp_path / "other", seed=1)
    assert build_extractor(f"emotion2vec:{other}", "audio", device="cpu").fingerprint() != a.fingerprint()


def test_refusals_name_the_problem(tmp_path, tiny):
    def err(folder, **opts):
        with pytest.raises(ConfigError) as e:
            build_extractor(f"emotion2vec:{folder}", "audio", device="cpu", **opts)
        return str(e.value)

    assert "no such folder" in err(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "has no config.yaml" in err(tmp_path / "empty")
    with pytest.raises(ConfigError, match="emotion2vec needs a model"):
        build_extractor("emotion2vec", "audio")
    # a hub id that is not in the (offline) cache
    assert "as a hub id it could not be fetched" in err("emotion2vec/not_a_model_here")
    assert "emotion2vec/emotion2vec_plus_large" in err("iic/emotion2vec_plus_large")

    def variant(name, edit_cfg=None, edit_sd=None):
        f = tmp_path / name
        f.mkdir()
        cfg = yaml.safe_load((tiny / "config.yaml").read_text())
        if edit_cfg:
            edit_cfg(cfg)
        (f / "config.yaml").write_text(yaml.safe_dump(cfg))
        obj = torch.load(tiny / "model.pt", weights_only=True)
        if edit_sd:
            edit_sd(obj["model"])
        torch.save(obj, f / "model.pt")
        return f

    assert "is no local folder" in err("models/e2v_base")
    assert "'model_conf'" in err(variant("noconf", lambda c: c.pop("model_conf")))
    quiet = variant("nonorm", lambda c: c["model_conf"].pop("normalize"))
    assert "does not say whether the model takes layer-normalised audio" in err(quiet)
    assert build_extractor(f"emotion2vec:{quiet}", "audio", device="cpu", normalize=False).config.normalize is False
    assert "describes model 'Paraformer'" in err(variant("para", lambda c: c.update(model="Paraformer")))
    spec = variant("spec", lambda c: c["model_conf"]["modalities"]["audio"].update(
        feature_encoder_spec="__import__('os').system('true')"))
    assert "feature_encoder_spec" in err(spec)
    assert "num_heads 5" in err(variant("heads", lambda c: c["model_conf"].update(num_heads=5)))
    # config.yaml and model.pt that do not belong together
    msg = err(variant("deeper", lambda c: c["model_conf"].update(depth=3)))
    assert "does not fit its config.yaml" in msg and "missing ['blocks.2.attn.proj.bias'" in msg
    msg = err(variant("wide", lambda c: c["model_conf"].update(mlp_ratio=4.0)))
    assert "shapes differ" in msg and "blocks.0.mlp.fc1.weight (64, 32) (config.yaml says (128, 32))" in msg
    msg = err(variant("stray", edit_sd=lambda sd: sd.update({"d2v_model.blocks.9.attn.qkv.weight": torch.zeros(3)})))
    assert "unexpected ['d2v_model.blocks.9.attn.qkv.weight']" in msg
    msg = err(variant("nan", edit_sd=lambda sd: sd["d2v_model.blocks.1.norm2.weight"].fill_(float("nan"))))
    assert "NaN or Inf" in msg
    # a pickled class other than tensors is refused before anything runs
    bad = variant("pickle")
    torch.save({"model": torch.load(tiny / "model.pt", weights_only=True)["model"],
                "args": argparse.Namespace(arch="data2vec_multi")}, bad / "model.pt")
    assert "argparse.Namespace" in err(bad) and "imo does not load" in err(bad)
    (bad / "model.pt").write_bytes((tiny / "model.pt").read_bytes()[:5000])
    assert "truncated or not a torch checkpoint" in err(bad)


def test_too_short_audio_fails_alone(tiny, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    sf.write(media / "ok.wav", tone(0.7, 16000), 16000)
    sf.write(media / "blip.wav", tone(0.02, 16000), 16000)
    m = write_manifest_lines(tmp_path / "m.jsonl", [{"id": "ok", "label": "x", "audio": "media/ok.wav"},
                                                   {"id": "blip", "label": "x", "audio": "media/blip.wav"}])
    ext = build_extractor(f"emotion2vec:{tiny}", "audio", device="cpu")
    result = extract(load_manifest(m), ext, tmp_path / "s.zarr", progress=False)
    assert result.done == 1 and set(result.failed) == {"blip"}
    assert "shorter than emotion2vec's first frame" in result.failed["blip"]["reason"]


def _imo(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def test_cli_extract_into_a_store_and_resume(tiny, audio_set, tmp_path):
    path, lines = audio_set
    args = ["extract", "-m", "audio", "--manifest", str(path), "--encoder", f"emotion2vec:{tiny}",
            "--layers", "all", "--out", "e2v.zarr", "--no-progress"]
    r = _imo(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"done {len(lines)}, already present 0, failed 0" in r.stdout
    store = open_store(tmp_path / "e2v.zarr")
    meta = store.meta
    assert (meta.dim, meta.layers, meta.frame_rate) == (32, [0, 1, 2, 3], 50.0)
    assert meta.encoder["type"] == "emotion2vec" and meta.encoder["normalize"] is True
    ext = build_extractor(meta.encoder, "audio", device="cpu")
    assert ext.fingerprint() == meta.encoder_fingerprint
    manifest = load_manifest(path)
    for u in manifest.utterances[::3]:
        stored = store.get(u.id).astype(np.float32)
        seconds = ext.measure(u, manifest)
        assert abs(stored.shape[0] - 50 * seconds) <= 1.5
        np.testing.assert_allclose(stored, ext.embed([ext.load(u, manifest)])[0], atol=2e-3, rtol=2e-3)
    r = _imo(*args, cwd=tmp_path)
    assert r.returncode == 0 and f"done 0, already present {len(lines)}, failed 0" in r.stdout
