"""lhotse CutSets in and out: ``imo prepare lhotse CUTS.jsonl.gz`` and ``imo export-manifest --format lhotse``.

Import (one utterance per cut, read with the ``lhotse`` library): ``id`` = the cut's id; ``audio`` =
its recording's file cut to ``[start, start + duration)``; ``text`` = its supervisions' texts in
time order; ``speaker`` = the first supervision's speaker; ``label`` = the supervisions' value of
``--label-field`` (an attribute such as ``gender``/``language`` or a key of ``custom``, e.g.
``emotion``; no field: no labels); ``split``/``fold`` from a ``split``/``fold`` custom key when
present. A recording in a video container also becomes the utterance's ``video``.

Refused, never run or fetched: audio sources that are shell commands (``type: command``) or URLs
(``type: url``) stop the import with one line. Left out and reported: mixed and padding cuts,
recordings with several sources, audio embedded in the manifest, transforms other than
resampling (speed or volume perturbation), cuts of one channel of a multi-channel recording
(imo reads the mix of all channels), and missing files.

Export writes one ``MonoCut`` (``MultiCut`` over all channels for a multi-channel file) per
utterance with audio, on a ``Recording`` per file (header read with soundfile/PyAV), with one
supervision carrying ``text``, ``speaker`` and, in ``custom``, the label under ``label_field``
and imo's ``split``, ``fold``, ``targets`` and ``video``/``frames`` so that imo -> lhotse -> imo
returns the same utterances.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MediaError
from ..manifest import SPLITS, Manifest, Segment, Utterance
from ..media.stream import VIDEO_SUFFIXES, probe
from .base import PrepareReport, Preparer, register_preparer

_ATTRIBUTES = ("speaker", "language", "gender", "text", "channel")


def _lhotse():
    try:
        import lhotse
    except ImportError:
        raise ConfigError("lhotse manifests need the lhotse package: pip install 'imo-pipeline[media]'") from None
    return lhotse


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _sup_value(sup, key: str):
    if key in _ATTRIBUTES:
        return getattr(sup, key, None)
    return (sup.custom or {}).get(key)


@register_preparer("lhotse")
class LhotseCuts(Preparer):
    label_sets = ("none",)
    takes_files = True          # ROOT is the cuts manifest file
    description = "a lhotse CutSet (.jsonl / .jsonl.gz): recordings, cut times, supervisions"

    def __init__(self, root: Path, labels: str | None = None, label_field: str | None = None,
                 data_root: Path | None = None, **options: Any):
        if labels not in (None, "none"):
            raise ConfigError(f"--labels {labels!r}: for lhotse name the supervision field with --label-field")
        self.root = Path(root)
        if not self.root.is_file():
            raise ConfigError(f"{self.root} is not a file; give a lhotse cuts manifest (.jsonl or .jsonl.gz)")
        self.label_field = label_field
        self.labels = label_field or "none"
        self.data_root = Path(data_root) if data_root is not None else Path.cwd()
        self.options = options

    def collect(self, report: PrepareReport) -> list[Utterance]:
        _lhotse()
        from lhotse.cut.set import deserialize_cut

        utts: list[Utterance] = []
        seen: set[str] = set()
        several_speakers = 0
        with _open_text(self.root) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"{self.root.name}:{lineno}"
                try:
                    cut = deserialize_cut(json.loads(line))
                except Exception as e:
                    report.add("skipped", where, f"not a lhotse cut ({type(e).__name__}: {e})")
                    continue
                u, n_speakers = self._utterance(cut, where, report)
                if u is None:
                    continue
                if u.id in seen:
                    report.add("mismatched_id", where, f"cut id {u.id!r} appears twice; the later one is left out")
                    continue
                seen.add(u.id)
                several_speakers += n_speakers > 1
                utts.append(u)
        if several_speakers:
            report.note(f"{several_speakers} cut(s) have supervisions of several speakers: the first speaker is kept")
        return utts

    def _utterance(self, cut, where: str, report: PrepareReport) -> tuple[Utterance | None, int]:
        from lhotse.cut.data import DataCut

        name = f"{where} ({cut.id})"
        if not isinstance(cut, DataCut):
            report.add("skipped", name, f"a {type(cut).__name__} has no single audio file; imo reads one file per "
                                        f"utterance (save mixed cuts to audio files first)")
            return None, 0
        rec = cut.recording
        if rec is None:
            report.add("skipped", name, "no recording (a features-only cut)")
            return None, 0
        for src in rec.sources:
            if src.type in ("command", "url"):
                what = "a shell command" if src.type == "command" else "a URL"
                shown = str(src.source)
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise ConfigError(f"{self.root}: cut {cut.id!r} reads its audio through {what} ({shown!r}); imo never "
                                  f"runs commands or fetches URLs: write the audio to local files (e.g. with lhotse's "
                                  f"cut.save_audio) and import those cuts")
        if len(rec.sources) != 1:
            report.add("skipped", name, f"recording {rec.id!r} has {len(rec.sources)} sources (one per channel); "
                                        f"imo reads one file per utterance")
            return None, 0
        src = rec.sources[0]
        if src.type != "file":
            report.add("skipped", name, f"audio source of type {src.type!r} (not a file); write it to a file first")
            return None, 0
        transforms = [t.get("name") if isinstance(t, dict) else type(t).__name__ for t in (rec.transforms or [])]
        if any(t != "Resample" for t in transforms):
            report.add("skipped", name, f"recording transforms {transforms} change the audio; imo reads files as they are")
            return None, 0
        chans = cut.channel if isinstance(cut.channel, list) else [cut.channel]
        if len(rec.channel_ids) > 1 and sorted(chans) != sorted(rec.channel_ids):
            report.add("skipped", name, f"the cut uses channel(s) {chans} of a {len(rec.channel_ids)}-channel recording; "
                                        f"imo reads the mix of all channels")
            return None, 0
        path = str(src.source)
        full = Path(path) if Path(path).is_absolute() else self.data_root / path
        if not full.is_file():
            report.add("missing", name, f"{full} does not exist; utterance left out (relative paths resolve "
                                        f"against --data-root)")
            return None, 0
        sups = sorted(cut.supervisions, key=lambda s: s.start)
        text = " ".join(s.text.strip() for s in sups if s.text and s.text.strip()) or None
        speakers = [s.speaker for s in sups if s.speaker]
        label = None
        if self.label_field:
            values = {json.dumps(v) for v in (_sup_value(s, self.label_field) for s in sups) if v is not None}
            if not values and cut.custom and cut.custom.get(self.label_field) is not None:
                values = {json.dumps(cut.custom[self.label_field])}
            if not values:
                report.add("unknown_label", name, f"no {self.label_field!r} in its supervisions; utterance left out")
                return None, 0
            if len(values) > 1:
                report.add("skipped", name, f"its supervisions disagree on {self.label_field!r}: {sorted(values)}")
                return None, 0
            label = json.loads(values.pop())
            if not isinstance(label, (str, int, float)) or isinstance(label, bool):
                report.add("unknown_label", name, f"{self.label_field!r} is {label!r}, not a class name or a number")
                return None, 0
        custom: dict[str, Any] = dict(cut.custom or {})
        for s in sups:
            for k, v in (s.custom or {}).items():
                custom.setdefault(k, v)
        split = custom.get("split")
        split = "valid" if split == "dev" else split if split in SPLITS else None
        start = round(float(cut.start), 6)
        seg = Segment(path, start, round(start + float(cut.duration), 6))
        video = _segment(custom.get("imo_video"))
        if video is None and (src.video is not None or Path(path).suffix.lower() in VIDEO_SUFFIXES):
            video = seg
        extra = {"recording_id": rec.id}
        for k in ("imo_extra",):
            if isinstance(custom.get(k), dict):
                extra.update(custom[k])
        u = Utterance(id=cut.id, label=label, split=split,
                      fold=None if custom.get("fold") is None else str(custom["fold"]),
                      speaker=speakers[0] if speakers else None, audio=seg, text=text, video=video,
                      frames=custom.get("imo_frames"),
                      targets=custom.get("imo_targets") if isinstance(custom.get("imo_targets"), dict) else {},
                      extra=extra)
        return u, len(set(speakers))


def _segment(value) -> Segment | None:
    if not isinstance(value, dict) or not isinstance(value.get("path"), str):
        return None
    return Segment(value["path"], float(value.get("start") or 0.0), value.get("end"))


@dataclass
class ExportResult:
    out: Path
    cuts: int
    recordings: int
    problems: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"wrote {self.cuts} cuts on {self.recordings} recordings to {self.out}"]
        if self.problems:
            lines.append(f"{len(self.problems)} utterance(s) left out:")
            lines += [f"  {uid}: {why}" for uid, why in self.problems[:10]]
            if len(self.problems) > 10:
                lines.append(f"  ... {len(self.problems) - 10} more")
        return "\n".join(lines)


def export_lhotse(manifest: Manifest, out: str | Path, label_field: str = "emotion") -> ExportResult:
    """Write ``manifest`` as a lhotse CutSet (see the module doc), atomically (temp file + rename).
    Utterances without audio, or whose file is missing or undecodable, are left out and listed."""
    _lhotse()
    from lhotse import AudioSource, CutSet, MonoCut, MultiCut, Recording, SupervisionSegment

    out = Path(out)
    if not (out.name.endswith(".jsonl") or out.name.endswith(".jsonl.gz")):
        raise ConfigError(f"--out {out}: a lhotse cuts manifest is written as .jsonl or .jsonl.gz")
    recordings: dict[Path, Recording | MediaError] = {}
    cuts, problems = [], []
    for u in manifest:
        if u.audio is None:
            problems.append((u.id, "no audio (lhotse cuts are audio)"))
            continue
        path = manifest.resolve(u.audio.path).resolve()
        if path not in recordings:
            try:
                info = probe(path)
                if not info.duration > 0 or not info.sample_rate:
                    raise MediaError(f"media file {path} does not state its duration or sample rate; re-encode it")
                n = int(round(info.duration * info.sample_rate))
                recordings[path] = Recording(
                    id=f"rec{len(recordings):06d}-{path.stem}",
                    sources=[AudioSource(type="file", channels=list(range(max(1, info.channels))), source=str(path))],
                    sampling_rate=info.sample_rate, num_samples=n, duration=n / info.sample_rate)
            except MediaError as e:
                recordings[path] = e
        rec = recordings[path]
        if isinstance(rec, MediaError):
            problems.append((u.id, str(rec)))
            continue
        start = float(u.audio.start)
        end = rec.duration if u.audio.end is None else min(float(u.audio.end), rec.duration)
        if end <= start:
            problems.append((u.id, f"segment [{start}, {u.audio.end}) lies outside {path} ({rec.duration:.2f} s)"))
            continue
        custom: dict[str, Any] = {}
        if u.label is not None:
            custom[label_field] = u.label
        for key, value in (("split", u.split), ("fold", u.fold), ("imo_frames", u.frames)):
            if value is not None:
                custom[key] = value
        if u.targets:
            custom["imo_targets"] = u.targets
        if u.video is not None:
            custom["imo_video"] = {"path": str(manifest.resolve(u.video.path).resolve()), "start": u.video.start,
                                   "end": u.video.end}
        extra = {k: v for k, v in u.extra.items() if k != "recording_id"}
        if extra:
            custom["imo_extra"] = extra
        channel: int | list[int] = 0 if len(rec.channel_ids) == 1 else list(rec.channel_ids)
        sup = SupervisionSegment(id=u.id, recording_id=rec.id, start=0.0, duration=round(end - start, 6),
                                 channel=channel, text=u.text, speaker=u.speaker, custom=custom or None)
        cls = MonoCut if isinstance(channel, int) else MultiCut
        cuts.append(cls(id=u.id, start=round(start, 6), duration=round(end - start, 6), channel=channel,
                        recording=rec, supervisions=[sup]))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}" + (".jsonl.gz" if out.name.endswith(".gz") else ".jsonl"))
    try:
        CutSet.from_cuts(cuts).to_file(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    n_rec = sum(1 for r in recordings.values() if not isinstance(r, MediaError))
    return ExportResult(out, len(cuts), n_rec, problems)
