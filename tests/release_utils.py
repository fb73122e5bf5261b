"""Helpers for the preparer tests: tiny real wav files and placeholder media in release layouts."""

from __future__ import annotations

from pathlib import Path

import soundfile as sf

from audio_utils import tone


def wav(path: Path, seconds: float = 0.2, sr: int = 16000) -> Path:
    """A short real 16-bit wav file (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr), sr, subtype="PCM_16")
    return path


def placeholder(path: Path) -> Path:
    """A stand-in video file: preparers only check that media exist, they never decode them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 16)
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path
