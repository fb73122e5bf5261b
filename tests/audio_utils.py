"""Helpers for tests: generated audio and tiny random-init speech models saved like real checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def save_tiny_speech_model(folder: Path, kind: str = "wav2vec2", norm: str = "layer", seed: int = 0) -> Path:
    """A random-init speech SSL model + feature extractor in ``folder``, loadable with from_pretrained."""
    import transformers as tf

    cfg_cls, model_cls = {
        "wav2vec2": (tf.Wav2Vec2Config, tf.Wav2Vec2Model),
        "hubert": (tf.HubertConfig, tf.HubertModel),
        "wavlm": (tf.WavLMConfig, tf.WavLMModel),
        "data2vec-audio": (tf.Data2VecAudioConfig, tf.Data2VecAudioModel),
    }[kind]
    extra = {} if kind == "data2vec-audio" else {"feat_extract_norm": norm}
    if kind == "data2vec-audio":
        extra = {"num_conv_pos_embeddings": 5, "conv_pos_kernel_size": 5}
    torch.manual_seed(seed)
    model = model_cls(cfg_cls(**{**TINY, **extra}))
    model.save_pretrained(folder)
    tf.Wav2Vec2FeatureExtractor(return_attention_mask=(norm == "layer"), do_normalize=True).save_pretrained(folder)
    return folder


def tone(seconds: float, sr: int, freq: float = 220.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A noisy harmonic tone, ``(samples, channels)`` float32."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(len(t))
    return np.repeat(x[:, None], channels, axis=1).astype(np.float32)


def write_manifest_lines(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path
