"""Audio decoding with soundfile: segment cut, mono downmix, resampling, sanity checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import MediaError
from . import regular_file


def audio_duration(path: str | Path, start: float = 0.0, end: float | None = None) -> float:
    """Seconds of the segment, read from the header only (no decoding). MediaError for a missing,
    non-regular (FIFO, device, folder) or unreadable file."""
    regular_file(path, "audio file")
    try:
        info = sf.info(str(path))
        total = info.frames / info.samplerate
    except Exception as e:  # soundfile raises RuntimeError / LibsndfileError
        if not Path(path).is_file():
            raise MediaError(_why(path, e)) from None
        from .stream import probe   # not a soundfile format (e.g. a video's audio track): PyAV

        total = probe(path).duration
    stop = total if end is None else min(end, total)
    return max(0.0, stop - start)


def _why(path: str | Path, e: Exception) -> str:
    if not Path(path).exists():
        return f"audio file {path} does not exist; check the manifest path and --data-root"
    return f"audio file {path} could not be decoded ({e}); re-encode it as wav/flac/ogg"


def load_audio(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Decode ``[start, end)`` of ``path`` as mono float32 at ``sample_rate``.

    Raises MediaError for a missing/unreadable or non-regular file, a segment
    outside the file, an empty result or NaN/Inf samples.
    """
    regular_file(path, "audio file")
    try:
        with sf.SoundFile(str(path)) as f:
            sr = f.samplerate
            first = int(round(start * sr))
            last = f.frames if end is None else min(f.frames, int(round(end * sr)))
            if first >= f.frames:
                raise MediaError(f"audio file {path}: start {start:.3f}s is past its end ({f.frames / sr:.3f}s); fix the segment")
            f.seek(first)
            wav = f.read(max(0, last - first), dtype="float32", always_2d=True)  # (S, C)
    except MediaError:
        raise
    except Exception as e:
        if not Path(path).is_file():
            raise MediaError(_why(path, e)) from None
        from .stream import probe, read_range   # not a soundfile format (e.g. a video's audio track): PyAV

        info = probe(path)
        return conform_audio(read_range(path, info.sample_rate, start, end), info.sample_rate, sample_rate,
                             f"audio file {path}")
    if wav.shape[0] == 0:
        raise MediaError(f"audio file {path}: the segment [{start}, {end}) holds no samples; fix its start/end or the file")
    return conform_audio(wav, sr, sample_rate, f"audio file {path}")


def conform_audio(wav: np.ndarray, rate: int, sample_rate: int, name: str = "audio array") -> np.ndarray:
    """Samples ``(S,)`` or ``(S, C)`` at ``rate`` -> mono float32 ``(S',)`` at ``sample_rate``; MediaError
    (naming ``name``) for an empty signal or NaN/Inf samples."""
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim == 1:
        wav = wav[:, None]
    if wav.ndim != 2 or wav.shape[0] == 0:
        raise MediaError(f"{name}: expected samples of shape (S,) or (S, channels) with S > 0, got {wav.shape}")
    if not np.isfinite(wav).all():
        raise MediaError(f"{name}: contains NaN or Inf samples; re-export the file")
    mono = wav.mean(axis=1) if wav.shape[1] > 1 else wav[:, 0]
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return np.ascontiguousarray(mono, dtype=np.float32)
