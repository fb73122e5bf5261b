"""``whisper``: the encoder of an OpenAI Whisper checkpoint through ``transformers``.

Whisper was trained on 30-s windows of log-mel features (100 mel frames/s; its
convolutional front end halves that to 50 encoder frames/s). Two modes:

- ``reference`` (EmoBox's way): every window is padded with silence to 30 s,
  run through ``transformers``' own encoder forward, and the first
  ``ceil(seconds * 50)`` frames are kept.
- ``trimmed``: only the frames the audio needs are encoded: the reference's
  mel frames (same zero padding, same normalisation) cut to the ``2 * K`` that
  make the utterance's ``K`` encoder frames, positions sliced to ``K``. The
  ``transformers`` forward refuses other lengths than 3,000 mel frames, so
  this mode runs its convolutions and layers directly; CTranslate2 does the
  same with such input, so both runtimes agree. Several times cheaper on short
  utterances, but not the same values: on real speech with Whisper base the
  last layer's frames keep a mean cosine of 0.83 (1 s) to 0.98 (7 s) with the
  reference (``benchmarks/extract_whisper.py --similarity``). The encoder has
  no attention mask, so only windows of equal length share a batch.

Audio longer than 30 s runs in consecutive 30-s windows (each encoded on its
own, positions restarting at 0) whose frames are concatenated, so every
utterance gets exactly ``ceil(seconds * 50)`` frames in either mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import numpy as np
import torch

from imo_pipeline.errors import ConfigError

from . import register_extractor
from .audio_common import AudioInput
from .base import Extractor, ExtractorConfig
from .hf import load_pretrained

Mode = Literal["reference", "trimmed"]
MODES = ("reference", "trimmed")
DEFAULT_MODE = "reference"        # trimmed changes the embeddings measurably (see the module docstring)
MAX_WINDOWS = 8                   # windows per encoder call (bounds memory; never changes a result)


def frames_for(n_samples: int, samples_per_frame: int) -> int:
    """Encoder frames of ``n_samples`` of audio: ``ceil(n_samples / samples_per_frame)`` (at least 1)."""
    return max(1, -(-n_samples // samples_per_frame))


def split_windows(wav: np.ndarray, window: int) -> list[np.ndarray]:
    """Consecutive windows of ``window`` samples (the last one shorter)."""
    return [wav[i: i + window] for i in range(0, max(len(wav), 1), window)]


def trimmed_waveform(wav: np.ndarray, frames: int, hop: int, window: int) -> np.ndarray:
    """The window zero-padded just far enough that its first ``2 * frames`` mel frames equal the reference's
    (every such frame's STFT window ends inside the zero padding, as in a 30-s pad)."""
    return np.pad(wav, (0, min(2 * frames * hop + 2 * hop, window) - len(wav)))


def run_grouped(items: Sequence, key: Callable, run: Callable[[list], list]) -> list:
    """``run`` on groups of items that share ``key`` (in key order), results back in input order."""
    out: list = [None] * len(items)
    keys = [key(x) for x in items]
    for k in sorted(set(keys)):
        idx = [i for i, kk in enumerate(keys) if kk == k]
        for i, r in zip(idx, run([items[i] for i in idx])):
            out[i] = r
    return out


def check_mode(mode: str, family: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"{family} option mode={mode!r}: use reference (pad every window to 30 s, EmoBox's way) "
                          f"or trimmed (encode only the frames the audio needs)")


class WhisperWindows:
    """``_forward`` shared by the Whisper families: 30-s windows, each mode's encoder, frames concatenated.

    A family sets ``config.mode``, ``window`` (samples), ``samples_per_frame``
    and implements ``_reference(windows)`` (any lengths together) and
    ``_trimmed(windows)`` (all of one frame count), each returning
    ``[K_i, n_hidden, D]`` per window.
    """

    window: int
    samples_per_frame: int

    def _forward(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        windows = [split_windows(w, self.window) for w in batch]
        flat = [w for ws in windows for w in ws]
        if self.config.mode == "reference":
            encoded = self._reference(flat)
        else:
            encoded = run_grouped(flat, lambda w: frames_for(len(w), self.samples_per_frame), self._trimmed)
        out, i = [], 0
        for ws in windows:
            out.append(torch.cat(encoded[i: i + len(ws)], dim=0))           # (T, n_hidden, D)
            i += len(ws)
        return out


@dataclass
class WhisperEncoderConfig(ExtractorConfig):
    mode: Mode = DEFAULT_MODE       # reference (30-s pad, EmoBox's way) | trimmed (only the frames needed)


@register_extractor("whisper")
class WhisperExtractor(WhisperWindows, AudioInput, Extractor):
    """Every hidden state of a Whisper encoder (index 0: conv front end + positions; last: after the final
    layer norm, the encoder output), 50 frames/s, 80 or 128 mel bins as the checkpoint says."""

    Config = WhisperEncoderConfig

    def _load(self) -> None:
        from transformers import AutoConfig, WhisperFeatureExtractor, WhisperModel

        src = self.config.source
        if not src:
            raise ConfigError("whisper needs a source: --encoder whisper:HUB_ID_OR_FOLDER "
                              "(e.g. whisper:openai/whisper-large-v3)")
        check_mode(self.config.mode, "whisper")
        model_type = getattr(load_pretrained(AutoConfig, src), "model_type", None)
        if model_type != "whisper":
            raise ConfigError(f"encoder whisper:{src} is a {model_type} checkpoint, not Whisper; "
                              f"use --encoder {src} (hf-audio) for speech SSL models")
        model, info = load_pretrained(WhisperModel, src, dtype=torch.float32, output_loading_info=True)
        missing = [k for k in info.get("missing_keys") or () if k.startswith("encoder.")]
        if missing:
            raise ConfigError(f"encoder whisper:{src}: its checkpoint lacks {len(missing)} encoder weight(s) "
                              f"({', '.join(missing[:4])}); they would be random: pass a complete checkpoint")
        self.model = model.get_encoder().eval().to(self.device)
        del model                                        # the decoder is not needed
        local = Path(src).expanduser()
        if local.is_dir() and not (local / "preprocessor_config.json").is_file():
            self.fe = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        else:
            self.fe = load_pretrained(WhisperFeatureExtractor, src)
        cfg = self.model.config
        if self.fe.feature_size != cfg.num_mel_bins:
            raise ConfigError(f"encoder whisper:{src}: the feature extractor makes {self.fe.feature_size} mel bins "
                              f"but the model takes {cfg.num_mel_bins}; fix preprocessor_config.json")
        self.sample_rate = int(self.fe.sampling_rate)
        self.hop = int(self.fe.hop_length)
        self.samples_per_frame = self.hop * self.model.conv1.stride[0] * self.model.conv2.stride[0]
        self.window = int(self.fe.n_samples)
        if self.window != cfg.max_source_positions * self.samples_per_frame:
            raise ConfigError(f"encoder whisper:{src}: {cfg.max_source_positions} positions do not cover the "
                              f"feature extractor's {self.window}-sample window; fix the checkpoint's configs")
        # reference: every window is 30 s long, so any mix batches; trimmed: no mask, equal lengths only
        self.batching = "mask" if self.config.mode == "reference" else "equal"

    def _mel(self, waves: list[np.ndarray], padding: str) -> torch.Tensor:
        if getattr(self.fe, "do_normalize", False):
            waves = [(w - w.mean()) / np.sqrt(w.var() + 1e-7) for w in waves]
        feats = self.fe(waves, sampling_rate=self.sample_rate, padding=padding, truncation=False, do_normalize=False,
                        return_tensors="pt", device="cuda" if self.device.type == "cuda" else "cpu")
        return feats["input_features"].to(self.device)                       # (B, n_mels, F)

    def _reference(self, windows: list[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for i in range(0, len(windows), MAX_WINDOWS):
            chunk = windows[i: i + MAX_WINDOWS]
            mel = self._mel([np.pad(w, (0, self.window - len(w))) for w in chunk], "longest")  # (B, n_mels, 3000)
            hidden = torch.stack(self.model(mel, output_hidden_states=True).hidden_states, 2)  # (B, 1500, L, D)
            out += [hidden[j, : frames_for(len(w), self.samples_per_frame)] for j, w in enumerate(chunk)]
        return out

    def _trimmed(self, windows: list[np.ndarray]) -> list[torch.Tensor]:
        frames = frames_for(len(windows[0]), self.samples_per_frame)          # the same for every window here
        out = []
        for i in range(0, len(windows), MAX_WINDOWS):
            waves = [trimmed_waveform(w, frames, self.hop, self.window) for w in windows[i: i + MAX_WINDOWS]]
            mel = self._mel(waves, "longest")[:, :, : 2 * frames]              # (B, n_mels, 2K)
            out += list(self.encode_frames(mel))
        return out

    def encode_frames(self, mel: torch.Tensor) -> torch.Tensor:
        """The encoder on ``2K`` mel frames of any ``K <= 1500``: ``transformers``' forward without its
        3000-frame check, positions sliced. ``(B, K, n_hidden, D)``."""
        enc = self.model
        x = torch.nn.functional.gelu(enc.conv1(mel))                         # (B, D, 2K)
        x = torch.nn.functional.gelu(enc.conv2(x)).permute(0, 2, 1)          # (B, K, D)
        h = x + enc.embed_positions.weight[: x.shape[1]]
        states = [h]
        for layer in enc.layers:
            h = layer(h, None)
            states.append(h)
        states[-1] = enc.layer_norm(h)
        return torch.stack(states, dim=2)                                    # (B, K, n_hidden, D)
