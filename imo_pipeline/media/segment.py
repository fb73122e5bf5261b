"""Speech segments of a recording of any length: Silero VAD, then lengths brought into a range.

One recording in, its speech segments out (with transcripts when an ASR is given)::

    from imo_pipeline.media.segment import SegmentConfig, Segmenter
    from imo_pipeline.media.asr import ASRConfig, WhisperASR

    seg = Segmenter(SegmentConfig(min_len=1.0, max_len=15.0))
    asr = WhisperASR(ASRConfig(language="en"))            # or None: no transcripts
    for s in seg.segment("talk.mp4", asr=asr):            # list[SpeechSegment]
        print(s.start, s.end, s.text, s.asr)

How (all times in seconds; the VAD sees 16 kHz mono in frames of 512 samples = 32 ms):

1. The recording is decoded in blocks (``media.stream.AudioReader``) and each 32-ms frame gets
   Silero's speech probability (the model's state runs across blocks, as over one long array)
   and its energy; only these two numbers per frame are kept, so memory stays flat.
2. Speech regions: a region starts at a frame with probability >= ``threshold`` and ends
   when the probability stays below ``neg_threshold`` for ``min_silence``; regions shorter than
   ``min_speech`` are dropped; each is padded by ``pad`` (never into its neighbour).
3. Merge: neighbours closer than ``merge_gap`` are joined while the result stays <= ``max_len``.
4. Short segments (< ``min_len``) are widened symmetrically into the silence around them
   (never over a neighbour or past the file's ends) up to ``min_len``.
5. Long segments (> ``max_len``) are cut at their quietest point: the frame boundary with
   the lowest energy (smoothed over ``smooth`` s) that leaves both parts >= ``min_len``; the
   parts are cut again until every one is <= ``max_len``.

A second streamed pass (``iter_segment_audio``) hands each segment's samples to the ASR, one
segment in memory at a time.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import ConfigError, MediaError
from .stream import AudioReader, MediaInfo, probe

VAD_RATE = 16000
FRAME = 512                   # samples per Silero frame at 16 kHz
HOP = FRAME / VAD_RATE        # 0.032 s


@dataclass
class SegmentConfig:
    """Voice activity detection and segment-length rules (seconds; probabilities in [0, 1])."""

    type: str = "silero"
    threshold: float = 0.5
    neg_threshold: float | None = None      # default: threshold - 0.15
    min_speech: float = 0.25
    min_silence: float = 0.1
    pad: float = 0.1
    merge_gap: float = 0.5
    min_len: float = 1.0
    max_len: float = 15.0
    smooth: float = 0.25
    block_seconds: float = 30.0

    def __post_init__(self) -> None:
        self.validate()

    @property
    def exit_threshold(self) -> float:
        return self.neg_threshold if self.neg_threshold is not None else max(0.01, self.threshold - 0.15)

    def validate(self) -> None:
        """ConfigError naming the option for any value out of range."""
        if self.type != "silero":
            raise ConfigError(f"segmenter type {self.type!r} is unknown; use 'silero'")
        if not 0 < self.threshold < 1:
            raise ConfigError(f"--vad-threshold {self.threshold}: give a speech probability between 0 and 1, e.g. 0.5")
        if not 0 < self.exit_threshold <= self.threshold:
            raise ConfigError(f"--vad-neg-threshold {self.neg_threshold}: must be above 0 and at most "
                              f"--vad-threshold ({self.threshold})")
        for name in ("min_speech", "min_silence", "pad", "merge_gap", "smooth"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"--{name.replace('_', '-')} {v}: give a number of seconds >= 0")
        if not (math.isfinite(self.min_len) and self.min_len > 0):
            raise ConfigError(f"--min-len {self.min_len}: give a positive number of seconds, e.g. 1")
        if not (math.isfinite(self.max_len) and self.max_len >= 2 * self.min_len):
            raise ConfigError(f"--max-len {self.max_len}: must be at least twice --min-len ({self.min_len}) so that "
                              f"an over-long segment can be cut into parts within the range, e.g. --max-len 15")
        if self.block_seconds < 1:
            raise ConfigError(f"block_seconds {self.block_seconds}: decode at least 1 s at a time")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "SegmentConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class SpeechSegment:
    """One segment of a recording: ``[start, end)`` in seconds, with its transcript when ASR ran."""

    index: int
    start: float
    end: float
    text: str | None = None
    asr: dict[str, Any] | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class FrameScores:
    """Per-32-ms-frame speech probability and energy (dB) of a recording, plus its length."""

    prob: np.ndarray            # (F,) float32
    energy_db: np.ndarray       # (F,) float32
    duration: float             # seconds of audio decoded
    info: MediaInfo | None = None
    notes: list[str] = field(default_factory=list)


class SileroVAD:
    """Silero VAD (TorchScript model shipped in the ``silero-vad`` package), one frame at a time,
    state carried across calls so any number of blocks behaves as one long signal."""

    def __init__(self):
        import torch

        threads = torch.get_num_threads()
        try:
            from importlib import resources

            import silero_vad  # noqa: F401  (its import sets torch threads to 1; restored below)
            path = resources.files("silero_vad.data") / "silero_vad.jit"
        except ImportError:
            raise ConfigError("voice activity detection needs the silero-vad package: "
                              "pip install 'imo-pipeline[media]'") from None
        finally:
            torch.set_num_threads(threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = torch.jit.load(str(path), map_location="cpu")
        self.model.eval()
        self._torch = torch

    def reset(self) -> None:
        self.model.reset_states()

    def frames(self, x: np.ndarray) -> np.ndarray:
        """Speech probabilities of consecutive 512-sample frames of ``x`` (len a multiple of 512)."""
        torch = self._torch
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        out = np.empty(len(x) // FRAME, np.float32)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)        # 32-ms frames: more threads only wait on each other (20x slower on 2 busy cores)
        try:
            with torch.inference_mode():
                for i in range(len(out)):
                    out[i] = float(self.model(t[i * FRAME:(i + 1) * FRAME].unsqueeze(0), VAD_RATE))
        finally:
            torch.set_num_threads(threads)
        return out


def _energy_db(frames: np.ndarray) -> np.ndarray:
    """RMS level in dB of each row of ``frames`` (F, 512)."""
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    return (20 * np.log10(np.maximum(rms, 1e-6))).astype(np.float32)


def score_frames(path: str | Path, vad: SileroVAD, cfg: SegmentConfig, info: MediaInfo | None = None,
                 progress: Callable[[float], None] | None = None) -> FrameScores:
    """Stream ``path`` through the VAD: per-frame probability and energy (see module doc, step 1).
    ``progress`` is called with the seconds decoded in each block."""
    reader = AudioReader(path, VAD_RATE, cfg.block_seconds, info)
    vad.reset()
    probs: list[np.ndarray] = []
    energy: list[np.ndarray] = []
    carry = np.zeros(0, np.float32)
    total = 0
    for block in reader.blocks():
        total += block.size
        x = np.concatenate([carry, block]) if carry.size else block
        n = (x.size // FRAME) * FRAME
        if n:
            probs.append(vad.frames(x[:n]))
            energy.append(_energy_db(x[:n].reshape(-1, FRAME)))
        carry = x[n:]
        if progress:
            progress(block.size / VAD_RATE)
    if carry.size:                       # last partial frame, zero-padded as Silero's own loop does
        x = np.concatenate([carry, np.zeros(FRAME - carry.size, np.float32)])
        probs.append(vad.frames(x))
        energy.append(_energy_db(carry[None, :]))
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.float32)  # noqa: E731
    return FrameScores(cat(probs), cat(energy), total / VAD_RATE, reader.info)


def speech_regions(prob: np.ndarray, cfg: SegmentConfig, duration: float) -> list[tuple[float, float]]:
    """Step 2: hysteresis on the frame probabilities -> padded speech regions ``[(start, end)]``."""
    enter, leave = cfg.threshold, cfg.exit_threshold
    quiet_frames = max(1, int(math.ceil(cfg.min_silence / HOP - 1e-9)))
    raw: list[tuple[int, int]] = []
    start, silent_from = None, None
    for i, p in enumerate(prob):
        if start is None:
            if p >= enter:
                start, silent_from = i, None
            continue
        if p >= enter:
            silent_from = None
        elif p < leave:
            if silent_from is None:
                silent_from = i
            if i - silent_from + 1 >= quiet_frames:
                raw.append((start, silent_from))
                start, silent_from = None, None
    if start is not None:
        raw.append((start, silent_from if silent_from is not None else len(prob)))
    regions = [(a * HOP, min(b * HOP, duration)) for a, b in raw if (b - a) * HOP >= cfg.min_speech]
    return _pad(regions, cfg.pad, duration)


def _pad(regions: list[tuple[float, float]], pad: float, duration: float) -> list[tuple[float, float]]:
    out = []
    for i, (a, b) in enumerate(regions):
        lo = 0.0 if i == 0 else (regions[i - 1][1] + a) / 2
        hi = duration if i == len(regions) - 1 else (b + regions[i + 1][0]) / 2
        out.append((max(lo, a - pad), min(hi, b + pad)))
    return out


def merge_regions(regions: list[tuple[float, float]], cfg: SegmentConfig) -> list[tuple[float, float]]:
    """Step 3: join neighbours closer than ``merge_gap`` while the union stays <= ``max_len``."""
    out: list[tuple[float, float]] = []
    for a, b in regions:
        if out and a - out[-1][1] < cfg.merge_gap and b - out[-1][0] <= cfg.max_len:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def widen_short(regions: list[tuple[float, float]], cfg: SegmentConfig, duration: float) -> list[tuple[float, float]]:
    """Step 4: widen segments shorter than ``min_len`` into the silence around them."""
    out = list(regions)
    for i, (a, b) in enumerate(out):
        need = cfg.min_len - (b - a)
        if need <= 0:
            continue
        lo = 0.0 if i == 0 else out[i - 1][1]
        hi = duration if i == len(out) - 1 else out[i + 1][0]
        left = min(need / 2, a - lo)
        right = min(need - left, hi - b)
        left = min(need - right, a - lo)          # give the rest to the left when the right is short
        out[i] = (a - left, b + right)
    return out


def split_long(regions: list[tuple[float, float]], energy_db: np.ndarray, cfg: SegmentConfig) -> list[tuple[float, float]]:
    """Step 5: cut segments longer than ``max_len`` at their quietest frame boundary (recursively)."""
    width = max(1, int(round(cfg.smooth / HOP)))
    smooth = np.convolve(energy_db, np.ones(width) / width, mode="same") if energy_db.size else energy_db
    out: list[tuple[float, float]] = []
    todo = list(reversed(regions))
    while todo:
        a, b = todo.pop()
        if b - a <= cfg.max_len:
            out.append((a, b))
            continue
        lo = int(math.ceil((a + cfg.min_len) / HOP))
        hi = int(math.floor((b - cfg.min_len) / HOP))
        if hi < lo:                        # cannot happen with max_len >= 2 * min_len; cut in the middle
            cut = (a + b) / 2
        else:
            cand = np.arange(lo, hi + 1)
            # a boundary between frames k-1 and k: the quieter of the two frames' smoothed levels
            level = np.minimum(smooth[np.clip(cand - 1, 0, len(smooth) - 1)], smooth[np.clip(cand, 0, len(smooth) - 1)]) \
                if smooth.size else np.zeros(len(cand))
            mid = (a + b) / 2
            order = np.lexsort((np.abs(cand * HOP - mid), np.round(level, 3)))
            cut = float(cand[order[0]] * HOP)
        todo.append((cut, b))
        todo.append((a, cut))
    return out


def plan_segments(scores: FrameScores, cfg: SegmentConfig) -> list[tuple[float, float]]:
    """Steps 2-5 on a recording's frame scores: the final ``[(start, end)]`` in seconds."""
    regions = speech_regions(scores.prob, cfg, scores.duration)
    regions = merge_regions(regions, cfg)
    regions = widen_short(regions, cfg, scores.duration)
    regions = split_long(regions, scores.energy_db, cfg)
    return [(round(a, 3), round(b, 3)) for a, b in regions if b - a > 0]


def fixed_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """Windows of ``window`` s every ``hop`` s over ``[0, duration)``; the last one ends at ``duration``."""
    if not (window > 0 and hop > 0):
        raise ConfigError(f"--window {window} --hop {hop}: both must be positive seconds")
    out, t = [], 0.0
    while t < duration:
        out.append((round(t, 3), round(min(duration, t + window), 3)))
        if t + window >= duration:
            break
        t += hop
    return out


def iter_segment_audio(path: str | Path, segments: Iterable[tuple[float, float]], sample_rate: int = VAD_RATE,
                       info: MediaInfo | None = None, block_seconds: float = 30.0,
                       progress: Callable[[float], None] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """One streamed pass over ``path``: ``(i, samples)`` for each ``segments[i] = (start, end)``
    (sorted by start), mono float32 at ``sample_rate``; one segment is held in memory at a time
    (overlapping segments are supported: each keeps its own buffer while open)."""
    segs = sorted(enumerate(segments), key=lambda s: s[1][0])
    reader = AudioReader(path, sample_rate, block_seconds, info)
    bounds = [(i, int(round(a * sample_rate)), int(round(b * sample_rate))) for i, (a, b) in segs]
    open_: dict[int, list[np.ndarray]] = {}
    k, pos = 0, 0
    for block in reader.blocks():
        end = pos + block.size
        while k < len(bounds) and bounds[k][1] < end:
            open_[bounds[k][0]] = []
            k += 1
        for i, lo, hi in bounds:
            if i in open_ and lo < end and hi > pos:
                open_[i].append(block[max(lo, pos) - pos:min(hi, end) - pos])
        for i, lo, hi in bounds:
            if i in open_ and hi <= end:
                yield i, _joined(open_.pop(i))
        if progress:
            progress(block.size / sample_rate)
        pos = end
        if k == len(bounds) and not open_:
            return
    for i in list(open_):              # segments reaching past the decoded end
        parts = open_.pop(i)
        if sum(p.size for p in parts):
            yield i, _joined(parts)


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


class Segmenter:
    """A loaded VAD plus segment rules: ``segment(path, asr=None)`` -> ``list[SpeechSegment]``."""

    def __init__(self, config: SegmentConfig | None = None, vad: SileroVAD | None = None):
        self.config = config or SegmentConfig()
        self.vad = vad or SileroVAD()

    def times(self, path: str | Path, info: MediaInfo | None = None,
              progress: Callable[[float], None] | None = None) -> tuple[list[tuple[float, float]], FrameScores]:
        """The segments' ``(start, end)`` of ``path`` and the frame scores they came from."""
        scores = score_frames(path, self.vad, self.config, info, progress)
        return plan_segments(scores, self.config), scores

    def segment(self, path: str | Path, asr=None, info: MediaInfo | None = None,
                progress: Callable[[float], None] | None = None) -> list[SpeechSegment]:
        """Speech segments of one recording, transcribed by ``asr`` (a ``media.asr.WhisperASR``) when given.

        ``progress`` receives seconds of audio processed: the VAD pass, then (with ``asr``) the
        transcription pass. Raises MediaError if the file cannot be decoded; an empty list means
        no speech was found.
        """
        info = info or probe(path)
        times, scores = self.times(path, info, progress)
        segs = [SpeechSegment(i, a, b) for i, (a, b) in enumerate(times)]
        if asr is None or not segs:
            if progress and asr is not None:
                progress(scores.duration)
            return segs
        done = 0.0
        for i, wave in iter_segment_audio(path, times, asr.sample_rate, info, self.config.block_seconds):
            try:
                result = asr.transcribe(wave)
            except MediaError:
                raise
            except Exception as e:       # a decoder failure on this segment only
                raise MediaError(f"{path}: transcribing segment {i} [{segs[i].start}, {segs[i].end}) failed "
                                 f"({type(e).__name__}: {e})") from None
            segs[i].text, segs[i].asr = result.text, result.info
            if progress:
                progress(segs[i].end - done)
                done = segs[i].end
        if progress:
            progress(max(0.0, scores.duration - done))
        return segs
