"""What every audio extractor shares: manifest segment -> mono float32 waveform."""

from __future__ import annotations

import numpy as np

from imo_pipeline.errors import MediaError
from imo_pipeline.manifest import Manifest, Utterance
from imo_pipeline.media.audio import audio_duration, load_audio


class AudioInput:
    """Mixin for audio extractors with a ``sample_rate``; lengths are in seconds."""

    modality = "audio"
    unit = "s"
    sample_rate: int

    def media_path(self, utt: Utterance) -> str | None:
        return utt.audio.path if utt.audio else None

    def _segment(self, utt: Utterance, manifest: Manifest):
        if utt.audio is None:
            raise MediaError(f"utterance {utt.id!r} has no 'audio' field in the manifest")
        return manifest.resolve(utt.audio.path), utt.audio.start, utt.audio.end

    def measure(self, utt: Utterance, manifest: Manifest) -> float:
        path, start, end = self._segment(utt, manifest)
        seconds = audio_duration(path, start, end)
        if seconds <= 0:
            raise MediaError(f"audio file {path}: the segment [{start}, {end}) holds no samples; fix its start/end")
        return seconds

    def load(self, utt: Utterance, manifest: Manifest) -> np.ndarray:
        path, start, end = self._segment(utt, manifest)
        return load_audio(path, self.sample_rate, start, end)

    def dummy(self, size: float) -> np.ndarray:
        rng = np.random.default_rng(0)
        return (0.1 * rng.standard_normal(int(size * self.sample_rate))).astype(np.float32)
