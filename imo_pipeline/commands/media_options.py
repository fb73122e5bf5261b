"""Segmentation and transcription options shared by `imo prepare media` and `imo predict --timeline`.

One definition per option: a command declares ``vad_threshold: float = media_option("vad_threshold", PANEL)``
and builds its configs with ``segment_config(...)`` / ``asr_config(...)`` from the parsed values.
"""

from __future__ import annotations

from typing import Any

import typer

_OPTIONS: dict[str, tuple[tuple[str, ...], Any, str]] = {     # name -> (flags, default, help)
    "vad_threshold": ((), 0.5, "Speech probability that starts a segment."),
    "vad_neg_threshold": ((), None, "Probability below which speech ends (default: threshold - 0.15)."),
    "min_speech": ((), 0.25, "Shortest speech burst kept (s)."),
    "min_silence": ((), 0.1, "Silence that ends a speech region (s)."),
    "pad": ((), 0.1, "Padding around each speech region (s)."),
    "merge_gap": ((), 0.5, "Regions closer than this are joined, up to --max-len (s)."),
    "min_len": ((), 1.0, "Shorter segments are widened into the silence around them (s)."),
    "max_len": ((), 15.0, "Longer segments are cut at their quietest point (s)."),
    "asr": (("--asr",), None, "faster-whisper model folder or name for transcripts (default: the packaged "
                              "Whisper base)."),
    "no_asr": (("--no-asr",), False, "No transcripts (no text field)."),
    "compute_type": ((), "int8", "CTranslate2 compute type: int8, float32, float16 (GPU), ..."),
    "language": ((), "auto", "Spoken language code (en, de, ...), or auto: detected per segment."),
    "beam_size": ((), 5, "Whisper beam size (1 = greedy, faster)."),
    "asr_device": ((), "cpu", "cpu or cuda for Whisper."),
    "progress": ((), True, "Show a progress bar."),
}

SEGMENT_OPTIONS = ("vad_threshold", "vad_neg_threshold", "min_speech", "min_silence", "pad", "merge_gap",
                   "min_len", "max_len")
ASR_OPTIONS = ("asr", "compute_type", "language", "beam_size", "asr_device")


def media_option(name: str, panel: str, help: str | None = None):
    """The typer option ``name`` (see ``_OPTIONS``) shown under the help panel ``panel``; ``help`` replaces its text."""
    flags, default, text = _OPTIONS[name]
    return typer.Option(default, *flags, help=help or text, rich_help_panel=panel)


def segment_config(vad_threshold: float, vad_neg_threshold: float | None, min_speech: float, min_silence: float,
                   pad: float, merge_gap: float, min_len: float, max_len: float):
    """The ``SegmentConfig`` of the parsed segmentation options (ConfigError naming a bad one)."""
    from ..media.segment import SegmentConfig

    return SegmentConfig(threshold=vad_threshold, neg_threshold=vad_neg_threshold, min_speech=min_speech,
                         min_silence=min_silence, pad=pad, merge_gap=merge_gap, min_len=min_len, max_len=max_len)


def asr_config(asr: str | None, compute_type: str, language: str, beam_size: int, asr_device: str):
    """The ``ASRConfig`` of the parsed transcription options (ConfigError naming a bad one)."""
    from ..media.asr import ASRConfig

    return ASRConfig(model=asr, compute_type=compute_type, language=language, beam_size=beam_size, device=asr_device)
