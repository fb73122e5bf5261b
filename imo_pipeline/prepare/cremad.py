"""CREMA-D: labels encoded in file names ``AAAA_SSS_EEE_LL.wav``.

Fields: actor (1001-1091), sentence code (IEO, TIE, IOM, IWW, TAI, MTI, IWL,
ITH, DFA, ITS, TSI, WSI), emotion (ANG, DIS, FEA, HAP, NEU, SAD), level (LO,
MD, HI, XX). Audio in ``AudioWAV/``; video in ``VideoFlash/*.flv`` or
``VideoMP4/*.mp4`` when present. Empty (0-byte) files are skipped and reported.
Folds: actor-independent (``--folds K``, default 5); the last fold is test, the one before valid.
"""

from __future__ import annotations

import re

from ..manifest import Segment, Utterance
from .base import PrepareReport, Preparer, actor_folds, fold_count, is_hidden, register_preparer, split_of_fold

EMOTIONS = {"ANG": "ang", "DIS": "dis", "FEA": "fea", "HAP": "hap", "NEU": "neu", "SAD": "sad"}
SENTENCES = {
    "IEO": "It's eleven o'clock", "TIE": "That is exactly what happened", "IOM": "I'm on my way to the meeting",
    "IWW": "I wonder what this is about", "TAI": "The airplane is almost full", "MTI": "Maybe tomorrow it will be cold",
    "IWL": "I would like a new alarm clock", "ITH": "I think I have a doctor's appointment",
    "DFA": "Don't forget a jacket", "ITS": "I think I've seen this before",
    "TSI": "The surface is slick", "WSI": "We'll stop in a couple of minutes",
}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified", "X": "unspecified"}
NAME_RE = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{1,2})$")


def parse_name(stem: str) -> dict | None:
    """Fields of a CREMA-D file name (None when it is not one)."""
    m = NAME_RE.match(stem)
    return None if m is None else dict(zip(("actor", "sentence", "emotion", "level"), m.groups()))


@register_preparer("cremad")
class CremaD(Preparer):
    label_sets = ("6class", "4class")
    description = "CREMA-D; 6class or 4class (neu, hap, sad, ang); actor-independent folds"

    def collect(self, report: PrepareReport) -> list[Utterance]:
        k = fold_count(self.options.get("folds"))
        wav_dir = self.root / "AudioWAV" if (self.root / "AudioWAV").is_dir() else self.root
        rows = []
        for f in sorted(wav_dir.glob("*.wav")):
            if is_hidden(f):
                report.add("skipped", self.rel(f), "hidden file (macOS resource fork)")
                continue
            info = parse_name(f.stem)
            if info is None:
                report.add("skipped", self.rel(f), "name is not ACTOR_SENTENCE_EMOTION_LEVEL (e.g. 1001_DFA_ANG_XX)")
                continue
            if info["emotion"] not in EMOTIONS:
                report.add("unknown_label", self.rel(f), f"emotion code {info['emotion']!r} is not one of {', '.join(EMOTIONS)}")
                continue
            if info["sentence"] not in SENTENCES or info["level"] not in LEVELS:
                report.add("unknown_label", self.rel(f), f"sentence {info['sentence']!r} or level {info['level']!r} unknown")
                continue
            if f.stat().st_size == 0:
                report.add("skipped", self.rel(f), "empty (0-byte) file")
                continue
            rows.append((f, info))
        if not rows:
            report.note("no CREMA-D wav files found; pass the folder holding AudioWAV/")
        folds = actor_folds([i["actor"] for _, i in rows], k)
        utts = []
        for f, info in rows:
            label = EMOTIONS[info["emotion"]]
            if self.labels == "4class" and label not in ("neu", "hap", "sad", "ang"):
                report.exclude(label)
                continue
            video = next((v for v in (self.root / "VideoFlash" / f"{f.stem}.flv", self.root / "VideoMP4" / f"{f.stem}.mp4")
                          if v.is_file()), None)
            fold = folds[info["actor"]]
            utts.append(Utterance(
                id=f.stem, label=label, split=split_of_fold(fold, k), fold=fold, speaker=info["actor"],
                audio=Segment(self.rel(f)), video=Segment(self.rel(video)) if video else None,
                text=SENTENCES[info["sentence"]], extra={"level": LEVELS[info["level"]]}))
        return utts
