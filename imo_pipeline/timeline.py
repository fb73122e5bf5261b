"""Emotion timelines of recordings of any length: cut, transcribe, embed and label one segment at a time.

``imo predict RUN --timeline FILE`` in Python::

    from imo_pipeline.predict import Predictor
    from imo_pipeline.timeline import Timeline, TimelineConfig

    tl = Timeline(Predictor.load("runs/atv"), TimelineConfig(asr=ASRConfig(language="en")))
    scan = tl.scan("interview.mp4")                 # pass 1: segments (Silero VAD, or fixed windows)
    for seg in tl.label(scan):                      # pass 2: one TimelineSegment per segment, in order
        print(seg.start, seg.end, seg.text, seg.label, seg.error)
    tl.run("interview.mp4", "out/")                 # both passes + CSV, JSON and PNG in out/

How:

1. **Scan** (one streamed decode at 16 kHz): the segments of ``imo prepare media`` (``Segmenter``
   with the same ``SegmentConfig``), or fixed windows of ``window`` s every ``hop`` s over the
   decoded length. Either way the 32-ms energy of the whole recording is kept (4 bytes a frame) for
   the waveform of the PNG.
2. **Label** (a second streamed decode, ``iter_segment_audio``): each segment's samples at the audio
   encoder's rate, one segment in memory at a time; its transcript from Whisper when the run uses text
   (or transcripts were asked for); its video segment decoded and its faces cropped by the run's video
   extractor with the run's own face options, as any video utterance; then ``Predictor.embed`` and the
   head, exactly as ``imo predict --manifest`` on the manifest ``imo prepare media`` writes.

A segment that fails (no face in its frames, no words heard for a text run) gets its error and the
rest goes on. Memory stays flat: only per-segment results and the per-frame energy are kept.
"""

from __future__ import annotations

import csv
import json
import math
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .errors import ConfigError, ImoError, MediaError
from .manifest import Manifest, Segment, Utterance
from .media.asr import ASRConfig
from .media.audio import conform_audio
from .media.segment import HOP, VAD_RATE, FrameScores, SegmentConfig, fixed_windows, score_frames
from .media.stream import MediaInfo, probe
from .paths import child, safe_name
from .predict import Prediction, Predictor


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else repr(v)


@dataclass
class TimelineConfig:
    """How a recording is cut and transcribed. ``window`` (s) set: fixed windows every ``hop`` s (default:
    ``window``, no overlap) instead of speech segments; ``asr`` None: no transcripts (a run that uses text
    needs them)."""

    type: str = "timeline"
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    window: float | None = None
    hop: float | None = None
    asr: ASRConfig | None = None

    def __post_init__(self) -> None:
        if self.hop is not None and self.window is None:
            raise ConfigError(f"--hop {_num(self.hop)} needs --window: give the window length in seconds too")
        if self.window is not None:
            if self.hop is None:
                self.hop = self.window
            for name in ("window", "hop"):
                v = getattr(self, name)
                if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                    raise ConfigError(f"--{name} {_num(v)}: give a positive number of seconds, e.g. --window 4 --hop 2")
            if self.window < 0.1:
                raise ConfigError(f"--window {_num(self.window)}: windows shorter than 0.1 s hold too little to label; "
                                  f"use e.g. --window 4")

    @property
    def windows(self) -> bool:
        return self.window is not None

    def to_json(self) -> dict[str, Any]:
        seg = ({"type": "windows", "window": self.window, "hop": self.hop} if self.windows
               else self.segment.to_json())
        return {"type": self.type, "segmentation": seg, "asr": self.asr.to_json() if self.asr else None}


@dataclass
class TimelineSegment(Prediction):
    """One segment's prediction (``Prediction``: scores, labels, error) with its place in the recording."""

    index: int = 0
    start: float = 0.0
    end: float = 0.0
    text: str | None = None
    asr: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)     # e.g. frames without a face, left out

    def csv_row(self) -> dict[str, Any]:
        """segment, start, end, text, then label + one ``p_<class>`` per class (or ``value``), then error."""
        row: dict[str, Any] = {"segment": self.index, "start": f"{self.start:.3f}", "end": f"{self.end:.3f}",
                               "text": self.text or ""}
        if self.labels is None:
            row["value"] = "" if self.scores is None else f"{float(self.scores):.6f}"
        else:
            row["label"] = self.label or ""
            scores = self.scores if self.scores is not None else [None] * len(self.labels)
            row.update({f"p_{n}": "" if p is None else f"{p:.6f}" for n, p in zip(self.labels, scores)})
        row["error"] = self.error or ""
        return row

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"segment": self.index, "id": self.id, "start": self.start, "end": self.end,
                               "text": self.text}
        if self.asr is not None:
            out["asr"] = self.asr
        if self.notes:
            out["notes"] = self.notes
        if self.labels is None:
            out["value"] = None if self.scores is None else float(self.scores)
        else:
            out["label"] = self.label
            out["scores"] = None if self.scores is None else {n: float(p) for n, p in zip(self.labels, self.scores)}
        out["error"] = self.error
        return out


@dataclass
class Scan:
    """Pass 1 over a recording: its segments ``[(start, end)]`` and per-32-ms energy (and VAD probability)."""

    path: Path
    info: MediaInfo
    times: list[tuple[float, float]]
    frames: FrameScores

    @property
    def duration(self) -> float:
        return self.frames.duration


class _Energy:
    """Stands in for the VAD in ``score_frames`` when windows are fixed: the energy pass alone."""

    def reset(self) -> None:
        pass

    def frames(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x) // 512, np.float32)


@dataclass
class TimelineResult:
    segments: list[TimelineSegment]
    scan: Scan
    csv: Path
    json: Path
    png: Path

    @property
    def failed(self) -> list[TimelineSegment]:
        return [s for s in self.segments if s.error]


class Timeline:
    """A ``Predictor`` plus how recordings are cut (``TimelineConfig``): ``scan`` then ``label``, or ``run``."""

    def __init__(self, predictor: Predictor, config: TimelineConfig | None = None, segmenter=None, asr=None):
        self.predictor = predictor
        self.config = config or TimelineConfig()
        if "text" in predictor.modalities and self.config.asr is None and asr is None:
            raise ConfigError("this run uses text: a timeline gets it from Whisper transcripts; give the timeline an "
                              "ASR config (TimelineConfig(asr=ASRConfig()))")
        self.segmenter = segmenter
        if self.segmenter is None and not self.config.windows:
            from .media.segment import Segmenter

            self.segmenter = Segmenter(self.config.segment)
        self.asr = asr
        if self.asr is None and self.config.asr is not None:
            from .media.asr import WhisperASR

            self.asr = WhisperASR(self.config.asr)

    @property
    def sample_rate(self) -> int:
        """The rate segments are decoded at: the audio encoder's, else Whisper's."""
        ext = self.predictor.extractors.get("audio")
        return int(ext.sample_rate) if ext is not None else VAD_RATE

    def scan(self, path: str | Path, progress: Callable[[float], None] | None = None) -> Scan:
        """Pass 1: the segments of ``path`` and its energy envelope. MediaError for an undecodable file,
        ConfigError when the run uses video and the file has none, or when no segment is found."""
        path = Path(path)
        info = probe(path)
        if "video" in self.predictor.modalities and not info.has_video:
            raise ConfigError(f"--timeline {path}: this run uses video (faces) but the file has no video track; "
                              f"give the video recording")
        cfg = self.config
        if cfg.windows:
            frames = score_frames(path, _Energy(), SegmentConfig(), info, progress)
            times = fixed_windows(frames.duration, cfg.window, cfg.hop)
        else:
            times, frames = self.segmenter.times(path, info, progress)
            if not times:
                raise MediaError(f"--timeline {path}: no speech found (Silero VAD threshold "
                                 f"{self.segmenter.config.threshold}); lower --vad-threshold if it holds quiet "
                                 f"speech, or label fixed windows with --window 4")
        return Scan(path, info, times, frames)

    def label(self, scan: Scan, progress: Callable[[float], None] | None = None) -> Iterator[TimelineSegment]:
        """Pass 2: one ``TimelineSegment`` per ``scan.times`` entry, in order; a failed one carries its error.
        ``progress`` receives seconds of the recording done."""
        from .media.segment import iter_segment_audio

        rate, done, nxt = self.sample_rate, 0.0, 0
        ready: dict[int, TimelineSegment] = {}
        broken = None
        stream = iter_segment_audio(scan.path, scan.times, rate, scan.info, self.config.segment.block_seconds)
        try:
            for i, wave in stream:
                ready[i] = self._one(scan, i, wave, rate)
                while nxt in ready:
                    seg = ready.pop(nxt)
                    nxt += 1
                    if progress:
                        progress(max(0.0, seg.end - done))
                        done = max(done, seg.end)
                    yield seg
        except MediaError as e:          # the file stopped decoding: the segments not reached carry why
            broken = str(e)
        for i in range(nxt, len(scan.times)):
            yield ready.pop(i, None) or self._failed(scan, i, broken or (
                "the recording ended before this segment (its header states a longer duration)"))
        if progress:
            progress(max(0.0, scan.duration - done))

    def _new(self, scan: Scan, i: int) -> TimelineSegment:
        a, b = scan.times[i]
        return TimelineSegment(f"{scan.path.stem}_{i:04d}", labels=self.predictor.run.labels, index=i, start=a, end=b)

    def _failed(self, scan: Scan, i: int, error: str) -> TimelineSegment:
        seg = self._new(scan, i)
        seg.error = error
        return seg

    def _one(self, scan: Scan, i: int, wave: np.ndarray, rate: int) -> TimelineSegment:
        seg = self._new(scan, i)
        where = f"{scan.path} [{seg.start:.2f}, {seg.end:.2f})"
        try:
            wave = conform_audio(wave, rate, rate, f"audio of {where}")
            if self.asr is not None:
                seg.text, seg.asr = self._transcribe(wave, rate, where)
            pred = self.predictor
            if "text" in pred.modalities and not seg.text:
                raise MediaError(f"{where}: Whisper heard no words in this segment and the run needs text")
            whole = Segment(str(scan.path.resolve()), seg.start, seg.end)
            utt = Utterance(id=seg.id, label=None, audio=whole, text=seg.text,
                            video=whole if scan.info.has_video else None)
            manifest = Manifest([utt], scan.path.parent, f"--timeline {scan.path}")
            decoded = {"audio": wave} if "audio" in pred.modalities else {}
            feats = pred.embed(utt, manifest, decoded)
            seg.scores = np.asarray(pred.predict_features([feats])[0])
            if not np.isfinite(seg.scores).all():
                raise MediaError(f"{where}: the run gave a non-finite output")
        except ImoError as e:
            seg.error = str(e)
        finally:                           # what an extractor noted about this segment (kept per segment only)
            for ext in self.predictor.extractors.values():
                note = getattr(ext, "notes", {}).pop(seg.id, None)
                if note:
                    seg.notes.append(note)
        return seg

    def _transcribe(self, wave: np.ndarray, rate: int, where: str) -> tuple[str | None, dict[str, Any]]:
        x = wave if rate == self.asr.sample_rate else conform_audio(wave, rate, self.asr.sample_rate)
        try:
            t = self.asr.transcribe(x)
        except ImoError:
            raise
        except Exception as e:             # a decoder failure on this segment only
            raise MediaError(f"{where}: transcribing failed ({type(e).__name__}: {e})") from None
        return (t.text.strip() or None), t.info

    def run(self, path: str | Path, out: str | Path, progress: bool = True) -> TimelineResult:
        """Both passes over ``path``, writing ``<stem>.timeline.csv`` (row by row), ``.json`` and ``.png`` into
        the folder ``out``; the CSV is renamed into place when complete."""
        from tqdm import tqdm

        path, out = Path(path), Path(out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder for the timeline's CSV, JSON and PNG")
        names = output_paths(path, out)
        duration = probe(path).duration
        total = duration if math.isfinite(duration) else None
        fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of the recording [{elapsed}<{remaining}, {rate_fmt}]"
        what = "windows" if self.config.windows else "vad"
        with tqdm(total=total, unit="s", desc=what, disable=not progress, dynamic_ncols=True, bar_format=fmt) as bar:
            scan = self.scan(path, _clamped(bar))
        segments = []
        with tqdm(total=scan.duration, unit="s", desc="predict", disable=not progress, dynamic_ncols=True,
                  bar_format=fmt) as bar, _CsvWriter(names["csv"], self.predictor.run.labels) as rows:
            for seg in self.label(scan, _clamped(bar)):
                rows.add(seg)
                segments.append(seg)
        meta = self.describe(scan)
        _write_atomic(names["json"], (json.dumps({**meta, "segments": [s.to_json() for s in segments]},
                                                 indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        plot_timeline(scan, segments, names["png"], title=f"{path.name} — {Path(meta['run']).name}",
                      task=self.predictor.run.task, shade=not self.config.windows)
        return TimelineResult(segments, scan, names["csv"], names["json"], names["png"])

    def describe(self, scan: Scan) -> dict[str, Any]:
        """What the JSON says about the recording, the run and how the recording was cut."""
        run = self.predictor.run
        return {"recording": str(scan.path), "duration": round(scan.duration, 3), "has_video": scan.info.has_video,
                "run": str(getattr(run, "path", "") or ""), "modalities": list(self.predictor.modalities),
                "task": run.task, "labels": run.labels,
                **self.config.to_json(), "asr_model": getattr(self.asr, "name", None)}


def _clamped(bar) -> Callable[[float], None]:
    """``bar.update`` that never runs past the bar's total (a header's duration can be a little short)."""
    def update(seconds: float) -> None:
        left = (bar.total - bar.n) if bar.total is not None else seconds
        if min(seconds, left) > 0:
            bar.update(min(seconds, left))
    return update


def output_paths(recording: str | Path, out: str | Path) -> dict[str, Path]:
    """``<out>/<stem>.timeline.{csv,json,png}``; the stem made a safe file name (``paths.safe_name``)."""
    stem = safe_name(Path(recording).stem)
    return {ext: child(out, f"{stem}.timeline.{ext}") for ext in ("csv", "json", "png")}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not write {path} ({e.strerror or e}); pass another --out") from None


class _CsvWriter:
    """CSV rows written as they come into ``<path>.tmp``, renamed to ``path`` when all are in."""

    def __init__(self, path: Path, labels: list[str] | None):
        self.path, self.tmp = path, path.with_name(path.name + ".tmp")
        cols = ["segment", "start", "end", "text"]
        cols += ["value"] if labels is None else ["label"] + [f"p_{n}" for n in labels]
        self.columns = cols + ["error"]

    def __enter__(self) -> "_CsvWriter":
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.tmp, "w", encoding="utf-8", newline="")
        except OSError as e:
            raise ConfigError(f"could not write {self.path} ({e.strerror or e}); pass another --out") from None
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns)
        self.writer.writeheader()
        return self

    def add(self, seg: TimelineSegment) -> None:
        self.writer.writerow(seg.csv_row())
        self.file.flush()

    def __exit__(self, kind, *_) -> None:
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


# --- the PNG -----------------------------------------------------------------------------------------------

_ROW_SECONDS = (20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1200, 1800, 3600)
MAX_ROWS = 10                 # rows of the PNG; 12 with transcripts (which need room)
_SLACK = 0.05
WIDTH_IN = 16.0


def row_seconds(duration: float, max_rows: int = MAX_ROWS) -> float:
    """Seconds of recording per row of the PNG: the whole recording (to the second) when under 20 s, else the
    shortest round length that needs at most ``max_rows`` rows (see ``n_rows``)."""
    if duration <= _ROW_SECONDS[0] * (1 + _SLACK):
        return float(max(1, math.ceil(duration)))
    for s in _ROW_SECONDS:
        if n_rows(duration, s) <= max_rows:
            return float(s)
    return float(3600 * math.ceil(duration / max_rows / 3600))


def n_rows(duration: float, span: float) -> int:
    """Rows of ``span`` s for ``duration`` s; a last bit under 5 % of a row joins the row before."""
    return max(1, math.ceil(duration / span - _SLACK))


def display_spans(segments: list[TimelineSegment]) -> list[tuple[float, float]]:
    """Where each segment is drawn: its own span, except that overlapping neighbours (windows with a hop
    shorter than the window) meet in the middle of their overlap."""
    out = []
    for i, s in enumerate(segments):
        lo, hi = s.start, s.end
        if i and segments[i - 1].end > lo:
            lo = (lo + segments[i - 1].end) / 2
        if i + 1 < len(segments) and segments[i + 1].start < hi:
            hi = (hi + segments[i + 1].start) / 2
        out.append((lo, max(lo, hi)))
    return out


def _fit_text(text: str, width_in: float, size: float, lines: int) -> str:
    chars = int(width_in * 72 / (size * 0.6))
    if chars < 4:
        return ""
    wrapped = textwrap.wrap(text, chars)
    if len(wrapped) > lines:
        wrapped = wrapped[:lines]
        wrapped[-1] = wrapped[-1][:max(1, chars - 1)].rstrip() + "…"
    return "\n".join(wrapped)


def plot_timeline(scan: Scan, segments: list[TimelineSegment], path: str | Path, title: str = "",
                  task: str = "classification", shade: bool = True) -> Path:
    """The PNG: per row of ``row_seconds`` s, the waveform (32-ms RMS envelope, segments shaded), the class
    probabilities of each segment stacked (top label named; one line per emotion for the binary task; the
    value for regression runs) and the transcript under them; ``shade``: mark the segments on the waveform
    (speech segments; fixed windows are not marked). Written aside and renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    duration = max(scan.duration, max((s.end for s in segments), default=0.0), 1e-3)
    has_text = any(s.text for s in segments)
    span = row_seconds(duration, 12 if has_text else MAX_ROWS)
    rows = n_rows(duration, span)
    labels = next((s.labels for s in segments), None)
    ratios = [0.8, 1.6] + ([1.0] if has_text else [])
    row_in = 0.62 * sum(ratios) + 0.55                    # inches per row, its tick labels and title included
    height = 1.0 + rows * row_in
    fig = plt.figure(figsize=(WIDTH_IN, height))
    outer = fig.add_gridspec(rows, 1, hspace=0.55 / (0.62 * sum(ratios)), left=0.05, right=0.99,
                             top=1 - 0.75 / height, bottom=0.3 / height)
    colors = {n: plt.get_cmap("tab10" if len(labels or []) <= 10 else "tab20")(k) for k, n in
              enumerate(labels or [])}
    env = 10 ** (scan.frames.energy_db.astype(np.float64) / 20)
    env = env / max(float(np.percentile(env, 99.5)) if env.size else 1.0, 1e-6)
    t_env = (np.arange(env.size) + 0.5) * HOP
    spans = display_spans(segments)
    ok = [s for s in segments if s.scores is not None]
    if labels is None and ok:
        vmax = max(1e-6, max(abs(float(s.scores)) for s in ok)) * 1.15
    axis_in = WIDTH_IN * 0.94
    for r in range(rows):
        x0, x1 = r * span, ((r + 1) * span if r + 1 < rows else max((r + 1) * span, duration))
        inner = outer[r].subgridspec(len(ratios), 1, height_ratios=ratios, hspace=0.0)
        wave = fig.add_subplot(inner[0])
        prob = fig.add_subplot(inner[1], sharex=wave)
        sel = (t_env >= x0) & (t_env < x1)
        step = max(1, int(sel.sum() // 4000))          # at most ~4000 points a row
        te, ee = t_env[sel], env[sel]
        if step > 1:
            k = len(ee) // step * step
            te, ee = te[:k].reshape(-1, step).mean(1), ee[:k].reshape(-1, step).max(1)
        wave.fill_between(te, -np.minimum(ee, 1.0), np.minimum(ee, 1.0), color="0.35", lw=0)
        wave.set_ylim(-1.05, 1.05)
        wave.set_yticks([])
        wave.set_ylabel("audio", fontsize=8)
        in_row = [(s, lo, hi) for s, (lo, hi) in zip(segments, spans) if hi > x0 and lo < x1]
        for s, lo, hi in in_row if shade else ():
            wave.axvspan(s.start, s.end, color="#f2c14e" if not s.error else "#bbbbbb", alpha=0.25, lw=0)
        good = [(s, lo, hi) for s, lo, hi in in_row if s.scores is not None]
        bad = [(s, lo, hi) for s, lo, hi in in_row if s.scores is None]
        if labels is not None and task == "binary":
            for k, name in enumerate(labels):
                prob.hlines([float(s.scores[k]) for s, _, _ in good], [lo for _, lo, _ in good],
                            [hi for _, _, hi in good], color=colors[name], lw=2)
            prob.axhline(0.5, color="0.5", lw=0.6, ls="--")
            prob.set_ylim(0, 1.05)
            prob.set_yticks([0, 0.5, 1])
            prob.set_ylabel("p(emotion)", fontsize=8)
        elif labels is not None:
            bottom = np.zeros(len(good))
            for k, name in enumerate(labels):
                h = np.array([float(s.scores[k]) for s, _, _ in good])
                prob.bar([lo for _, lo, _ in good], h, width=[hi - lo for _, lo, hi in good], bottom=bottom,
                         align="edge", color=colors[name], edgecolor="white", linewidth=0.4)
                bottom += h
            for s, lo, hi in good:
                w_in = (hi - lo) / span * axis_in
                if w_in > 0.3:
                    prob.text((lo + hi) / 2, 1.03, s.label, ha="center", va="bottom", fontsize=7, clip_on=True,
                              color=colors[s.label], fontweight="bold")
            prob.set_ylim(0, 1.25)
            prob.set_yticks([0, 0.5, 1])
            prob.set_ylabel("p(class)", fontsize=8)
        else:
            vals = [float(s.scores) for s, _, _ in good]
            prob.bar([lo for _, lo, _ in good], vals, width=[hi - lo for _, lo, hi in good], align="edge",
                     color=["#4c72b0" if v >= 0 else "#c44e52" for v in vals], edgecolor="white", linewidth=0.4)
            prob.axhline(0, color="0.3", lw=0.6)
            lim = vmax if ok else 1.0
            prob.set_ylim(-lim, lim)
            prob.set_ylabel("value", fontsize=8)
        for s, lo, hi in bad:
            prob.bar(lo, 1.0 if labels is not None else 2 * (vmax if ok else 1.0), width=hi - lo, align="edge",
                     bottom=0 if labels is not None else -(vmax if ok else 1.0), color="#dddddd", hatch="///",
                     edgecolor="#999999", linewidth=0.4)
            if (hi - lo) / span * axis_in > 0.3:
                prob.text((lo + hi) / 2, 0.5 if labels is not None else 0, "error", ha="center", va="center",
                          fontsize=7, color="#555555", clip_on=True)
        prob.tick_params(labelsize=7)
        last = prob
        if has_text:
            tx = fig.add_subplot(inner[2], sharex=wave)
            tx.set_ylim(0, 1)
            tx.set_yticks([])
            for k, (s, lo, hi) in enumerate(in_row):
                if s.text:              # the text may run on into the silence before the next segment
                    a = max(lo, x0)
                    b = min(in_row[k + 1][1] if k + 1 < len(in_row) else x1, x1)
                    txt = _fit_text(s.text, (b - a) / span * axis_in - 0.08, 6.5, 4)
                    if txt:
                        tx.text(a + 0.002 * span, 0.96, txt, ha="left", va="top", fontsize=6.5, clip_on=True,
                                linespacing=1.1)
            for s, lo, hi in in_row:
                tx.axvline(lo, color="0.85", lw=0.5)
            last = tx
        for ax in (wave, prob) + ((tx,) if has_text else ()):
            if ax is not last:
                ax.tick_params(labelbottom=False)
        last.tick_params(labelsize=7)
        wave.set_xlim(x0, x1)
        last.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _clock(v) if span >= 60 else f"{v:g}"))
        if r == rows - 1:
            last.set_xlabel("time (m:ss)" if span >= 60 else "time (s)", fontsize=8, labelpad=1)
        wave.set_title(f"{_clock(x0)} – {_clock(min(x1, duration))}", fontsize=8, loc="left", pad=2)
    handles = [Patch(color=colors[n], label=n) for n in labels or []]
    n_err = sum(1 for s in segments if s.error)
    if n_err:
        handles.append(Patch(facecolor="#dddddd", hatch="///", edgecolor="#999999", label="error"))
    if handles:
        fig.legend(handles=handles, loc="upper right", bbox_to_anchor=(0.99, 1 - 0.1 / height),
                   ncol=min(12, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(f"{title}   ({_clock(duration)}, {len(segments)} segments"
                 + (f", {n_err} failed" if n_err else "") + ")", x=0.05, y=1 - 0.12 / height, ha="left", va="top",
                 fontsize=10)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=100, format="png")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not write {path} ({e.strerror or e}); pass another --out") from None
    finally:
        plt.close(fig)
    return path


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
