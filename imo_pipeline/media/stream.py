"""Streamed audio decoding of recordings of any length: audio files with soundfile, the audio
track of video (and of formats soundfile cannot read) with PyAV.

``AudioReader`` yields mono float32 blocks at a chosen sample rate, so a long
recording never sits in memory whole; resampling is itself streamed (soxr's
``ResampleStream`` / FFmpeg's resampler), so block edges leave no seams. Time
0 is the start of the file: a video whose audio track starts late is padded
with silence up to its first sample, so audio times match video times.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from ..errors import MediaError
from . import regular_file

#: Suffixes ``imo prepare media`` collects from a folder (anything PyAV or soundfile decodes is
#: accepted when a file is named directly).
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".wma", ".aif", ".aiff",
                  ".au", ".caf", ".w64")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp", ".ts")
MEDIA_SUFFIXES = AUDIO_SUFFIXES + VIDEO_SUFFIXES
_SOUNDFILE_FIRST = (".wav", ".flac", ".ogg", ".oga", ".aif", ".aiff", ".au", ".caf", ".w64", ".mp3")
_PREROLL = 1.0            # seconds decoded (and dropped) before a seek target
_MAX_LEAD_IN = 3600.0      # seconds of silence a late-starting audio track may be padded with


@dataclass(frozen=True)
class MediaInfo:
    """What the header of a recording says."""

    path: str
    duration: float         # seconds of audio
    sample_rate: int
    channels: int
    has_video: bool
    backend: str            # "soundfile" or "pyav"


def _av():
    try:
        import av
    except ImportError:
        raise MediaError("decoding this file needs PyAV: pip install 'imo-pipeline[video]'") from None
    return av


def _undecodable(path: Path, e: Exception) -> MediaError:
    if not path.exists():
        return MediaError(f"media file {path} does not exist; check the path")
    return MediaError(f"media file {path} could not be decoded ({type(e).__name__}: {e}); "
                      f"re-encode it (e.g. as wav, flac or H.264/AAC mp4)")


def _video_streams(container) -> list:
    """Real video streams (not the cover picture an mp3 or m4a may carry)."""
    av = _av()
    attached = getattr(getattr(av, "stream", None), "Disposition", None)
    out = []
    for s in container.streams.video:
        pic = False
        if attached is not None and hasattr(attached, "attached_pic"):
            pic = bool(s.disposition & attached.attached_pic)
        if not pic:
            out.append(s)
    return out


def probe(path: str | Path) -> MediaInfo:
    """Duration, rate, channels and whether ``path`` holds video, from the header (no decoding).
    Raises MediaError for a missing file, an unreadable one, or one without audio."""
    path = regular_file(path, "media file")      # never opens a FIFO or device (it could block forever)
    if path.suffix.lower() in _SOUNDFILE_FIRST:
        try:
            info = sf.info(str(path))
            if info.frames > 0 and info.samplerate > 0:
                return MediaInfo(str(path), info.frames / info.samplerate, info.samplerate, info.channels, False,
                                 "soundfile")
        except Exception:
            pass    # not readable by libsndfile: try FFmpeg
    av = _av()
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"media file {path} has no audio track; imo segments recordings by their speech")
            a = c.streams.audio[0]
            rate = int(a.sample_rate or a.codec_context.sample_rate or 0)
            channels = int(getattr(a.codec_context, "channels", 0) or len(a.layout.channels))
            if a.duration is not None and a.time_base is not None:
                duration = float(a.duration * a.time_base)
            elif c.duration is not None:
                duration = c.duration / 1_000_000
            else:
                duration = float("nan")
            return MediaInfo(str(path), duration, rate, channels, bool(_video_streams(c)), "pyav")
    except MediaError:
        raise
    except Exception as e:
        raise _undecodable(path, e) from None


class AudioReader:
    """Mono float32 blocks of a recording at ``sample_rate``, decoded and resampled as a stream.

    ``blocks()`` yields arrays of about ``block_seconds`` each (the last one shorter); their
    concatenation is the whole recording. Raises MediaError when the file cannot be decoded,
    holds NaN/Inf samples, or no sample at all.
    """

    def __init__(self, path: str | Path, sample_rate: int = 16000, block_seconds: float = 30.0,
                 info: MediaInfo | None = None):
        self.path = Path(path)
        self.info = info or probe(self.path)
        self.sample_rate = int(sample_rate)
        self.block = max(1, int(block_seconds * self.sample_rate))

    @property
    def duration(self) -> float:
        return self.info.duration

    def blocks(self) -> Iterator[np.ndarray]:
        it = self._soundfile() if self.info.backend == "soundfile" else self._pyav()
        pending: list[np.ndarray] = []
        size = total = 0
        for x in it:
            if x.size == 0:
                continue
            if not np.isfinite(x).all():
                raise MediaError(f"media file {self.path} contains NaN or Inf samples; re-export it")
            pending.append(x)
            size += x.size
            while size >= self.block:
                joined = np.concatenate(pending)
                yield joined[:self.block]
                rest = joined[self.block:]
                pending, size = ([rest] if rest.size else []), rest.size
                total += self.block
        if size:
            total += size
            yield np.concatenate(pending)
        if total == 0:
            raise MediaError(f"media file {self.path} holds no audio samples; re-export it")

    def _soundfile(self) -> Iterator[np.ndarray]:
        import soxr

        try:
            with sf.SoundFile(str(self.path)) as f:
                sr = f.samplerate
                rs = None if sr == self.sample_rate else soxr.ResampleStream(sr, self.sample_rate, 1, dtype="float32",
                                                                           quality="HQ")
                step = max(1, int(sr * 5))
                while True:
                    x = f.read(step, dtype="float32", always_2d=True)                # (S, C)
                    last = x.shape[0] < step
                    mono = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
                    if rs is not None:
                        mono = rs.resample_chunk(np.ascontiguousarray(mono), last=last)
                    yield np.asarray(mono, dtype=np.float32)
                    if last:
                        break
        except MediaError:
            raise
        except Exception as e:
            raise _undecodable(self.path, e) from None

    def _pyav(self) -> Iterator[np.ndarray]:
        for _, x in decode_av(self.path, self.sample_rate):
            yield x


def decode_av(path: str | Path, sample_rate: int, start: float = 0.0) -> Iterator[tuple[float, np.ndarray]]:
    """(time of the first sample, mono float32 samples at ``sample_rate``) chunks of the first audio track
    of ``path`` from about ``start`` on (PyAV seeks to a packet about a second before ``start``). From the file's start,
    a track that begins late is preceded by silence, so chunk times are file times."""
    av, path = _av(), Path(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.audio:
                raise MediaError(f"media file {path} has no audio track")
            s = c.streams.audio[0]
            s.thread_type = "AUTO"
            seek = start > _PREROLL and s.time_base is not None
            if seek:                     # a second early: decoders (AAC) need a few frames to settle
                c.seek(int((start - _PREROLL) / s.time_base), stream=s, backward=True, any_frame=False)
            rs = av.AudioResampler(format="fltp", rate=sample_rate)   # channels kept: averaged below, as soundfile's are
            t = None
            for frame in c.decode(s):
                if t is None:
                    t = max(0.0, float(frame.time or 0.0)) if frame.time is not None else 0.0
                    if not seek and t > 0:
                        if t > _MAX_LEAD_IN:
                            raise MediaError(f"media file {path}: its audio track starts at {t:.0f} s; re-mux it")
                        yield 0.0, np.zeros(int(round(t * sample_rate)), np.float32)
                for out in rs.resample(frame):
                    x = _mono(out.to_ndarray())
                    yield t, x
                    t += x.size / sample_rate
            for out in rs.resample(None):
                x = _mono(out.to_ndarray())
                yield (t or 0.0), x
                t = (t or 0.0) + x.size / sample_rate
    except MediaError:
        raise
    except Exception as e:
        raise _undecodable(path, e) from None


def _mono(planar: np.ndarray) -> np.ndarray:
    """(C, S) planar samples -> (S,) float32 channel mean."""
    planar = np.asarray(planar, dtype=np.float32)
    return planar.mean(axis=0) if planar.ndim == 2 and planar.shape[0] > 1 else planar.reshape(-1)


def read_range(path: str | Path, sample_rate: int, start: float = 0.0, end: float | None = None) -> np.ndarray:
    """Mono float32 samples of ``[start, end)`` at ``sample_rate`` through PyAV (seeking near ``start``).
    Raises MediaError for an undecodable file or an empty range."""
    path = Path(path)
    first = int(round(start * sample_rate))
    last = None if end is None else int(round(end * sample_rate))
    parts: list[np.ndarray] = []
    for t, x in decode_av(path, sample_rate, start):
        i0 = int(round(t * sample_rate))
        if last is not None and i0 >= last:
            break
        lo = max(0, first - i0)
        hi = x.size if last is None else min(x.size, last - i0)
        if hi > lo:
            parts.append(x[lo:hi])
    wav = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if wav.size == 0:
        raise MediaError(f"media file {path}: the segment [{start}, {end}) holds no audio samples; fix its start/end")
    if not np.isfinite(wav).all():
        raise MediaError(f"media file {path} contains NaN or Inf samples; re-export it")
    return wav
