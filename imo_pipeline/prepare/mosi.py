"""CMU-MOSI and CMU-MOSEI raw releases: segmented opinion clips with sentiment in [-3, 3].

CMU-MOSI (``Raw/`` or its parent)::

    Labels/OpinionLevelSentiment.csv              no header: start, end, video_id, segment_no, sentiment
    Transcript/Segmented/<vid>.annotprocessed     "<segment_no>_DELIMITER_<text>" per line
    Audio/WAV_16000/Segmented/<vid>_<n>.wav       audio per segment
    Video/Segmented/<vid>_<n>.mp4                 video per segment

CMU-MOSEI (``Raw/`` or its parent)::

    Transcript/Segmented/Combined/<vid>.txt       "<vid>___<n>___<start>___<end>___<text>" per line
    Audio/Full/WAV_16000/<vid>.wav                whole-video audio (segments cut by start/end)
    Videos/Segmented/Combined/<vid>_<n>.mp4       video per segment (optional)
    CMU_MOSEI_Labels.csd                          SDK labels: per video [sentiment, happy, sad, anger,
                                                  surprise, disgust, fear] rows with their intervals
                                                  (anywhere under ROOT, or --labels-file)

Splits: the SDK's standard folds by video id (MOSI's are built in; MOSEI's via
``--folds FILE``: a JSON {"train": [...], "valid": [...], "test": [...]} or the
SDK's ``cmu_mosei_std_folds.py`` itself). Speaker: the video id.
"""

from __future__ import annotations

import ast
import csv
import json
import re
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..manifest import Segment, Utterance
from .base import PrepareReport, Preparer, is_hidden, register_preparer

MOSEI_EMOTIONS = ("happy", "sad", "anger", "surprise", "disgust", "fear")
LABEL_SETS = ("regression", "2class", "7class")


def sentiment_label(score: float, label_set: str):
    """The label of a sentiment score: the score, its sign class, or its rounded value in [-3, 3]."""
    if label_set == "2class":
        return "positive" if score >= 0 else "negative"
    if label_set == "7class":
        return str(int(np.clip(np.round(score), -3, 3)))
    return round(float(score), 4)


def load_folds(path: str | Path) -> dict[str, set[str]]:
    """Standard folds from a JSON file or the SDK's ``*_std_folds.py`` (read as data, never executed)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--folds {path} does not exist; give a JSON file or the SDK's cmu_mosei_std_folds.py")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        raw = json.loads(text)
        folds = {k: raw.get(k) or raw.get(alias, []) for k, alias in (("train", "train"), ("valid", "dev"), ("test", "test"))}
    else:
        folds = {}
        for split, name in (("train", "standard_train_fold"), ("valid", "standard_valid_fold"), ("test", "standard_test_fold")):
            m = re.search(rf"^{name}\s*=\s*(\[.*?\])", text, re.S | re.M)
            if not m:
                raise ConfigError(f"--folds {path}: no `{name} = [...]` list found")
            folds[split] = ast.literal_eval(m.group(1))
    return {k: set(map(str, v)) for k, v in folds.items()}


def _split_of(vid: str, folds: dict[str, set[str]]) -> str | None:
    return next((s for s, ids in folds.items() if vid in ids), None)


def _base(root: Path, marker: str) -> Path:
    for cand in (root, root / "Raw", root / "raw"):
        if (cand / marker).exists():
            return cand
    return root


@register_preparer("mosi")
class Mosi(Preparer):
    label_sets = LABEL_SETS
    description = "CMU-MOSI raw release; sentiment regression, 2class or 7class; standard folds built in"

    def collect(self, report: PrepareReport) -> list[Utterance]:
        from .mosi_folds import FOLDS

        base = _base(self.root, "Labels")
        folds = load_folds(self.options["folds"]) if self.options.get("folds") else {k: set(v) for k, v in FOLDS.items()}
        labels = base / "Labels" / "OpinionLevelSentiment.csv"
        if not labels.is_file():
            report.add("missing", self.rel(labels), "label file missing; pass the CMU-MOSI Raw folder")
            return []
        texts: dict[str, dict[str, str]] = {}
        utts = []
        with labels.open(newline="", encoding="utf-8") as f:
            for lineno, row in enumerate(csv.reader(f), 1):
                where = f"{self.rel(labels)}:{lineno}"
                try:
                    start, end, vid, seg, score = float(row[0]), float(row[1]), row[2].strip(), str(int(row[3])), float(row[4])
                except (ValueError, IndexError):
                    report.add("skipped", where, f"not a 'start,end,video_id,segment_no,sentiment' row: {row[:5]}")
                    continue
                if not -3.0 <= score <= 3.0:
                    report.add("unknown_label", where, f"{vid}_{seg}: sentiment {score} outside [-3, 3]")
                    continue
                if vid not in texts:
                    texts[vid] = self._transcript(base / "Transcript" / "Segmented" / f"{vid}.annotprocessed", report)
                u = self._utterance(base, vid, seg, start, end, score, texts[vid], folds, where, report)
                if u is not None:
                    utts.append(u)
        return utts

    def _transcript(self, path: Path, report: PrepareReport) -> dict[str, str]:
        if not path.is_file():
            report.add("missing", self.rel(path), "transcript missing; this video's segments get no text")
            return {}
        out = {}
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            n, sep, text = line.partition("_DELIMITER_")
            if not sep or not n.strip().isdigit():
                report.add("skipped", f"{self.rel(path)}:{lineno}", f"not a '<n>_DELIMITER_<text>' line: {line[:50]!r}")
                continue
            out[str(int(n))] = text.strip()
        return out

    def _utterance(self, base, vid, seg, start, end, score, texts, folds, where, report) -> Utterance | None:
        uid = f"{vid}_{seg}"
        wav = base / "Audio" / "WAV_16000" / "Segmented" / f"{uid}.wav"
        if not wav.is_file():
            report.add("missing", self.rel(wav), f"{uid}: audio missing; utterance left out")
            return None
        mp4 = base / "Video" / "Segmented" / f"{uid}.mp4"
        video = Segment(self.rel(mp4)) if mp4.is_file() else None
        if video is None:
            report.add("missing", self.rel(mp4), f"{uid}: video missing; kept without video")
        if seg not in texts:
            report.add("mismatched_id", where, f"{uid}: no line {seg} in the video's transcript; kept without text")
        split = _split_of(vid, folds)
        if split is None:
            report.add("mismatched_id", where, f"{uid}: video {vid} is in no standard fold; kept without a split")
        return Utterance(id=uid, label=sentiment_label(score, self.labels), split=split, speaker=vid,
                         audio=Segment(self.rel(wav)), video=video, text=texts.get(seg),
                         targets={"sentiment": score}, extra={"video_id": vid, "interval": [start, end]})


@register_preparer("mosei")
class Mosei(Preparer):
    label_sets = LABEL_SETS
    description = "CMU-MOSEI raw release + CMU_MOSEI_Labels.csd; sentiment and 6 emotion intensities; --folds FILE"

    def collect(self, report: PrepareReport) -> list[Utterance]:
        from ..csd import CsdFile

        base = _base(self.root, "Transcript")
        label_file = self.options.get("labels_file") or next(
            (p for p in sorted(self.root.rglob("CMU_MOSEI_Labels.csd")) if not is_hidden(p)), None)
        if label_file is None:
            report.add("missing", "CMU_MOSEI_Labels.csd", "SDK label file not found under ROOT; pass --labels-file")
            return []
        folds = load_folds(self.options["folds"]) if self.options.get("folds") else {}
        if not folds:
            report.note("no --folds given: utterances have no split (pass the SDK's cmu_mosei_std_folds.py)")
        utts = []
        with CsdFile(label_file) as csd:
            for vid in sorted(csd.keys()):
                feats, ints = csd.entry(vid)
                segs = self._transcript(base / "Transcript" / "Segmented" / "Combined" / f"{vid}.txt", report)
                for k, (row, (start, end)) in enumerate(zip(np.asarray(feats, dtype=float).reshape(len(feats), -1), ints)):
                    u = self._utterance(base, vid, k, row, float(start), float(end), segs, folds, report)
                    if u is not None:
                        utts.append(u)
        return utts

    def _transcript(self, path: Path, report: PrepareReport) -> list[tuple[str, float, float, str]]:
        if not path.is_file():
            report.add("missing", self.rel(path), "transcript missing; this video's segments get no ids from it")
            return []
        out = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            parts = line.split("___", 4)
            if not line.strip():
                continue
            try:
                out.append((str(int(parts[1])), float(parts[2]), float(parts[3]), parts[4].strip()))
            except (ValueError, IndexError):
                report.add("skipped", f"{self.rel(path)}:{lineno}", f"not a '<vid>___<n>___<start>___<end>___<text>' line: {line[:50]!r}")
        return out

    def _utterance(self, base, vid, k, row, start, end, segs, folds, report) -> Utterance | None:
        where = f"CMU_MOSEI_Labels.csd:{vid}[{k}]"
        match = next((s for s in segs if abs(s[1] - start) < 0.05 and abs(s[2] - end) < 0.05), None)
        if match is None:
            report.add("mismatched_id", where, f"label interval [{start:.3f}, {end:.3f}] s matches no transcript segment; left out")
            return None
        seg, _, _, text = match
        uid = f"{vid}_{seg}"
        if end <= start:
            report.add("skipped", where, f"{uid}: empty interval [{start}, {end}] s")
            return None
        if len(row) < 1 or not -3.0 <= row[0] <= 3.0:
            report.add("unknown_label", where, f"{uid}: sentiment {row[:1]} outside [-3, 3]")
            return None
        wav = base / "Audio" / "Full" / "WAV_16000" / f"{vid}.wav"
        if not wav.is_file():
            report.add("missing", self.rel(wav), f"{uid}: audio missing; utterance left out")
            return None
        mp4 = base / "Videos" / "Segmented" / "Combined" / f"{uid}.mp4"
        video = Segment(self.rel(mp4)) if mp4.is_file() else None
        targets = {"sentiment": float(row[0])}
        targets.update({e: float(x) for e, x in zip(MOSEI_EMOTIONS, row[1:7])})
        split = _split_of(vid, folds) if folds else None
        if folds and split is None:
            report.add("mismatched_id", where, f"{uid}: video {vid} is in no standard fold; kept without a split")
        return Utterance(id=uid, label=sentiment_label(float(row[0]), self.labels), split=split, speaker=vid,
                         audio=Segment(self.rel(wav), start, end), video=video, text=text, targets=targets,
                         extra={"video_id": vid, "interval": [start, end]})
