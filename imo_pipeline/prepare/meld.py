"""MELD (``MELD.Raw``): one CSV per split, one mp4 clip per utterance.

Layout read (the CSVs and clip folders may sit in ROOT or in ROOT/MELD.Raw)::

    train_sent_emo.csv   train_splits/dia{D}_utt{U}.mp4
    dev_sent_emo.csv     dev_splits_complete/dia{D}_utt{U}.mp4
    test_sent_emo.csv    output_repeated_splits_test/dia{D}_utt{U}.mp4

CSV columns used: Dialogue_ID, Utterance_ID, Utterance, Speaker, Emotion,
Sentiment (plus StartTime/EndTime, kept as extra fields). Dialogue ids restart
in every split, so ids are ``{split}_dia{D}_utt{U}``. Audio is taken from the clip.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..manifest import Segment, Utterance
from .base import PrepareReport, Preparer, register_preparer

EMOTIONS = ("neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear")
SENTIMENTS = ("neutral", "positive", "negative")
SPLITS = (("train", "train_sent_emo.csv", "train_splits"),
          ("valid", "dev_sent_emo.csv", "dev_splits_complete"),
          ("test", "test_sent_emo.csv", "output_repeated_splits_test"))
REQUIRED = ("Dialogue_ID", "Utterance_ID", "Utterance", "Speaker", "Emotion", "Sentiment")


def read_csv_text(path: Path) -> str:
    """MELD CSVs are UTF-8 with stray cp1252 bytes in places; decode without losing rows."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


@register_preparer("meld")
class Meld(Preparer):
    label_sets = ("7class", "sentiment")
    description = "MELD.Raw; 7class emotion or 3-class sentiment"

    def collect(self, report: PrepareReport) -> list[Utterance]:
        base = self.root / "MELD.Raw" if (self.root / "MELD.Raw").is_dir() else self.root
        utts: list[Utterance] = []
        found = False
        for split, csv_name, clips in SPLITS:
            path = base / csv_name
            if not path.is_file():
                report.add("missing", self.rel(path), f"{split} split CSV missing; that split is left out")
                continue
            found = True
            rows = list(csv.DictReader(io.StringIO(read_csv_text(path))))
            missing_cols = [c for c in REQUIRED if rows and c not in rows[0]]
            if missing_cols:
                report.add("skipped", self.rel(path), f"CSV lacks column(s) {', '.join(missing_cols)}; not a MELD split file")
                continue
            for lineno, row in enumerate(rows, 2):
                u = self._utterance(base, split, clips, row, f"{self.rel(path)}:{lineno}", report)
                if u is not None:
                    utts.append(u)
        if not found:
            report.note("no MELD CSVs found; pass the folder holding train_sent_emo.csv (or MELD.Raw)")
        return utts

    def _utterance(self, base: Path, split: str, clips: str, row: dict, where: str,
                   report: PrepareReport) -> Utterance | None:
        try:
            d, u = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
        except (TypeError, ValueError):
            report.add("skipped", where, f"Dialogue_ID/Utterance_ID not integers: {row.get('Dialogue_ID')!r}, {row.get('Utterance_ID')!r}")
            return None
        uid = f"{split}_dia{d}_utt{u}"
        emotion, sentiment = (row["Emotion"] or "").strip().lower(), (row["Sentiment"] or "").strip().lower()
        if emotion not in EMOTIONS:
            report.add("unknown_label", where, f"{uid}: emotion {emotion!r} is not one of {', '.join(EMOTIONS)}")
            return None
        if sentiment not in SENTIMENTS:
            report.add("unknown_label", where, f"{uid}: sentiment {sentiment!r} is not one of {', '.join(SENTIMENTS)}")
            return None
        clip = base / clips / f"dia{d}_utt{u}.mp4"
        if not clip.is_file():
            report.add("missing", self.rel(clip), f"{uid}: clip missing; utterance left out")
            return None
        rel = self.rel(clip)
        extra = {k.lower(): row[k] for k in ("Season", "Episode", "StartTime", "EndTime") if row.get(k)}
        return Utterance(id=uid, label=emotion if self.labels == "7class" else sentiment, split=split,
                         speaker=(row["Speaker"] or "").strip() or None, audio=Segment(rel), video=Segment(rel),
                         text=(row["Utterance"] or "").strip(), targets={"emotion": emotion, "sentiment": sentiment},
                         extra=extra)
