"""``fbank``: 80 log-mel filterbank energies at 100 frames/s (Kaldi-compatible), no weights."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from . import register_extractor
from .audio_common import AudioInput
from .base import Extractor, ExtractorConfig


@dataclass
class FbankConfig(ExtractorConfig):
    num_mel_bins: int = 80
    sample_rate: int = 16000


@register_extractor("fbank")
class FbankExtractor(AudioInput, Extractor):
    """The built-in audio baseline: log-mel filterbanks, one layer, ``dim = num_mel_bins``."""

    Config = FbankConfig
    batching = "single"

    def _load(self) -> None:
        self.sample_rate = self.config.sample_rate

    def _forward(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for wav in batch:
            x = torch.from_numpy(wav).unsqueeze(0) * 32768.0            # (1, S), Kaldi's int16 scale
            if x.shape[1] < int(0.025 * self.sample_rate):             # shorter than one window
                x = torch.nn.functional.pad(x, (0, int(0.025 * self.sample_rate) - x.shape[1]))
            feats = torchaudio.compliance.kaldi.fbank(
                x, num_mel_bins=self.config.num_mel_bins, sample_frequency=self.sample_rate, dither=0.0)
            out.append(feats.unsqueeze(1))                             # (T, 1, n_mels)
        return out
