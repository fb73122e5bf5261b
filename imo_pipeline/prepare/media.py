"""Raw recordings (audio or video files, or folders of them) -> one utterance per speech segment.

``imo prepare media PATH... --out m.jsonl``: every file is streamed through Silero VAD, its
speech regions merged and split into ``--min-len``..``--max-len`` segments
(``media.segment``), and each segment transcribed by Whisper (``media.asr``) unless
``--no-asr``. Video files get the same segmentation from their audio track; their utterances
reference the video segment too (faces are found at extraction).

Each line: ``id`` = the file's path relative to the folder given (without its suffix unless two
files would share a name) + ``_`` + the segment index (4 digits); ``audio`` (and ``video``)
``{"path", "start", "end"}``; ``text`` (when ASR ran and heard words); and the extra fields
``source`` (the file, as named under its folder), ``segment``, ``start``, ``end`` and ``asr``
(model, language, avg_logprob, no_speech_prob, compression_ratio). No ``label``.

Missing, undecodable and speechless files are reported (and counted in the notes); one bad
file never stops the others.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ManifestError, MediaError
from ..manifest import Segment, Utterance
from ..media.stream import MEDIA_SUFFIXES, MediaInfo, probe
from .base import PrepareReport, Preparer, is_hidden, register_preparer


def media_path(path: Path, data_root: Path) -> str:
    """``path`` relative to ``data_root`` when inside it, else absolute (POSIX separators)."""
    path = path.resolve()
    try:
        return path.relative_to(data_root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class _Share:
    """Progress of one file on the shared bar, never more than the file's share of the total."""

    def __init__(self, bar, share: float):
        self.bar, self.left = bar, share

    def __call__(self, seconds: float) -> None:
        step = min(self.left, max(0.0, seconds))
        if step > 0:
            self.left -= step
            self.bar.update(step)

    def finish(self) -> None:
        self(self.left)


@register_preparer("media")
class MediaPreparer(Preparer):
    label_sets = ("none",)
    takes_files = True          # ROOT may be recordings as well as folders of them
    description = "raw audio/video recordings: Silero VAD segments + Whisper transcripts, no labels"

    def __init__(self, root: Path, labels: str | None = None, paths: list[Path] | None = None,
                 data_root: Path | None = None, segment=None, asr=None, progress: bool = True, **options: Any):
        from ..media.segment import SegmentConfig

        if (labels or "none") != "none":
            raise ConfigError(f"--labels {labels!r}: media manifests have no labels (they are for prediction)")
        self.labels = "none"
        self.inputs = [Path(p) for p in (paths or [root])]
        self.root = self.inputs[0]
        self.data_root = Path(data_root) if data_root is not None else Path.cwd()
        self.segment_config = segment or SegmentConfig()
        self.asr_config = asr                # ASRConfig, or None for no transcripts
        self.progress = progress
        self.options = options

    def files(self, report: PrepareReport) -> list[tuple[Path, str]]:
        """(file, name under its folder) of every recording to segment; problems go to ``report``."""
        found: list[tuple[Path, str]] = []
        for inp in self.inputs:
            if inp.is_dir():
                for f in sorted(inp.rglob("*")):
                    if f.is_dir():
                        continue
                    rel = f.relative_to(inp)
                    if any(part.startswith(".") for part in rel.parts):
                        report.add("skipped", f, "hidden file")
                    elif f.suffix.lower() not in MEDIA_SUFFIXES:
                        report.add("skipped", f, f"not an audio or video file (suffix {f.suffix or 'none'!r}); "
                                                 f"name it directly to try decoding it")
                    else:
                        found.append((f, rel.as_posix()))
            elif inp.is_file():
                if is_hidden(inp):
                    report.add("skipped", inp, "hidden file")
                else:
                    found.append((inp, inp.name))
            else:
                report.add("missing", inp, "no such file or folder")
        ok = []
        for f, name in found:
            if not _utf8(name) or not _utf8(str(f.resolve())):
                report.add("skipped", f, "the file name is not valid UTF-8 and cannot be written to a manifest; rename it")
            else:
                ok.append((f, name))
        return ok

    @staticmethod
    def id_bases(files: list[tuple[Path, str]]) -> list[str]:
        """Unique id stems: the name without its suffix; with the suffix where two files differ only by it
        (``talk.wav``, ``talk.mp4``); with a short hash of the full path where the names themselves
        collide (the same name under two folders given)."""
        from collections import Counter

        stems = [name.rsplit(".", 1)[0] if "." in name.rsplit("/", 1)[-1] else name for _, name in files]
        names = Counter(name for _, name in files)
        n_stems = Counter(stems)
        out = []
        for (f, name), stem in zip(files, stems):
            if names[name] > 1:
                out.append(f"{stem}~{hashlib.sha256(str(f.resolve()).encode()).hexdigest()[:8]}")
            else:
                out.append(stem if n_stems[stem] == 1 else name)
        return out

    def collect(self, report: PrepareReport) -> list[Utterance]:
        from tqdm import tqdm

        from ..media.segment import Segmenter

        files = self.files(report)
        infos: list[tuple[Path, str, str, MediaInfo]] = []
        undecodable = 0
        for (f, name), base in zip(files, self.id_bases(files)):
            try:
                infos.append((f, name, base, probe(f)))
            except MediaError as e:
                report.add("skipped", f, str(e))
                undecodable += 1
        if not infos:
            raise ManifestError(f"media: no decodable audio or video file in {', '.join(map(str, self.inputs))}"
                                + (f" ({report.issues[0].where}: {report.issues[0].reason})" if report.issues else ""))
        segmenter = Segmenter(self.segment_config)
        asr = None
        if self.asr_config is not None:
            from ..media.asr import WhisperASR

            asr = WhisperASR(self.asr_config)
        seconds = sum(i.duration for *_, i in infos if math.isfinite(i.duration))
        utts: list[Utterance] = []
        speechless = empty_text = short = 0
        total = 0.0
        passes = 2 if asr else 1
        with tqdm(total=seconds * passes, unit="s", desc="media", disable=not self.progress, dynamic_ncols=True,
                  bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio "
                             "[{elapsed}<{remaining}{postfix}]") as bar:
            for f, name, base, info in infos:
                bar.set_postfix_str(name[-40:], refresh=False)
                share = info.duration * passes if math.isfinite(info.duration) else 0.0
                step = _Share(bar, share)
                try:
                    segs = segmenter.segment(f, asr=asr, info=info, progress=step)
                except MediaError as e:
                    report.add("skipped", f, str(e))
                    undecodable += 1
                    continue
                finally:
                    step.finish()
                total += info.duration if math.isfinite(info.duration) else 0.0
                if not segs:
                    report.add("skipped", f, f"no speech found (Silero VAD threshold {self.segment_config.threshold}); "
                                             f"lower --vad-threshold if it holds quiet speech")
                    speechless += 1
                    continue
                path = media_path(f, self.data_root)
                for s in segs:
                    short += s.duration < self.segment_config.min_len - 1e-6
                    text = s.text.strip() if s.text else None
                    if asr is not None and not text:
                        empty_text += 1
                    extra: dict[str, Any] = {"source": name, "segment": s.index, "start": s.start, "end": s.end}
                    if s.asr is not None:
                        extra["asr"] = s.asr
                    utts.append(Utterance(
                        id=f"{base}_{s.index:04d}", label=None, audio=Segment(path, s.start, s.end),
                        video=Segment(path, s.start, s.end) if info.has_video else None, text=text or None,
                        extra=extra))
        if not utts:
            raise ManifestError(f"media: no speech segment found in {len(infos)} file(s) "
                                f"({speechless} without speech, {undecodable} undecodable); first: "
                                + "; ".join(f"{i.where}: {i.reason}" for i in report.issues[:2]))
        cfg = self.segment_config
        report.note(f"{len(infos) - undecodable} recording(s), {total / 60:.1f} min of audio -> {len(utts)} segments "
                    f"(mean {sum(u.audio.duration for u in utts) / len(utts):.1f} s; range {cfg.min_len}-{cfg.max_len} s)")
        report.note(f"files without speech: {speechless}; undecodable files: {undecodable}")
        if short:
            report.note(f"{short} segment(s) shorter than --min-len {cfg.min_len} s: the recording around them is shorter")
        if asr is not None:
            report.note(f"transcripts: {asr.name}, compute type {asr.config.compute_type}, language "
                        f"{asr.config.language or 'detected per segment'}; {empty_text} segment(s) without words "
                        f"(no 'text' field)")
        else:
            report.note("no transcripts (--no-asr): the manifest has no 'text' field")
        report.note("segmentation: " + ", ".join(f"{k}={v}" for k, v in cfg.to_json().items()))
        return utts
