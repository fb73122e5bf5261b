"""RAVDESS: labels encoded in file names ``MM-VC-EE-II-SS-RR-AA.ext``.

Fields: modality (01 audio-video, 02 video-only, 03 audio-only), vocal channel
(01 speech, 02 song), emotion (01 neutral .. 08 surprised), intensity (01
normal, 02 strong), statement (01 "Kids are talking by the door", 02 "Dogs are
sitting by the door"), repetition, actor (01-24; odd male, even female). Files
live in ``Actor_XX/`` folders (audio .wav and video .mp4 releases unpacked in
one root, or either alone). One utterance per recording, joining its audio-only
wav (03) and its audio-video mp4 (01); audio comes from the mp4 when no wav exists.
Folds: actor-independent (``--folds K``, default 5); the last fold is test,
the one before valid.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..manifest import Segment, Utterance
from .base import PrepareReport, Preparer, actor_folds, fold_count, is_hidden, register_preparer, split_of_fold

EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry",
            "06": "fearful", "07": "disgust", "08": "surprised"}
FOUR = {"neutral": "neu", "happy": "hap", "sad": "sad", "angry": "ang"}
STATEMENTS = {"01": "Kids are talking by the door", "02": "Dogs are sitting by the door"}
NAME_RE = re.compile(r"^(0[123])-(0[12])-(\d\d)-(0[12])-(0[12])-(0[12])-(\d\d)$")


def parse_name(stem: str) -> dict | None:
    """Fields of a RAVDESS file name (None when it is not one)."""
    m = NAME_RE.match(stem)
    if not m:
        return None
    mod, channel, emo, inten, stmt, rep, actor = m.groups()
    return {"modality": mod, "channel": channel, "emotion": emo, "intensity": inten,
            "statement": stmt, "repetition": rep, "actor": actor}


@register_preparer("ravdess")
class Ravdess(Preparer):
    label_sets = ("8class", "4class")
    description = "RAVDESS speech/song; 8class or 4class (neu, hap, sad, ang); actor-independent folds"

    def collect(self, report: PrepareReport) -> list[Utterance]:
        k = fold_count(self.options.get("folds"))
        recs: dict[str, dict] = {}
        for f in sorted(self.root.rglob("*")):
            if f.is_dir() or f.suffix.lower() not in (".wav", ".mp4"):
                continue
            if is_hidden(f):
                report.add("skipped", self.rel(f), "hidden file (macOS resource fork)")
                continue
            info = parse_name(f.stem)
            if info is None:
                report.add("skipped", self.rel(f), "name is not MM-VC-EE-II-SS-RR-AA (7 two-digit fields)")
                continue
            if info["emotion"] not in EMOTIONS:
                report.add("unknown_label", self.rel(f), f"emotion code {info['emotion']} is not 01-08")
                continue
            if f.parent.name.startswith("Actor_") and f.parent.name != f"Actor_{info['actor']}":
                report.add("mismatched_id", self.rel(f), f"actor {info['actor']} in the name but folder {f.parent.name}")
                continue
            key = f.stem[3:]
            r = recs.setdefault(key, {"info": info})
            if info["modality"] == "03" and f.suffix.lower() == ".wav":
                r["wav"] = f
            elif info["modality"] == "01" and f.suffix.lower() == ".mp4":
                r["av"] = f
            elif info["modality"] == "02":
                r["video_only"] = f
            else:
                report.add("skipped", self.rel(f), f"modality {info['modality']} with extension {f.suffix}")
        folds = actor_folds([r["info"]["actor"] for r in recs.values()], k)
        utts = []
        for key, r in sorted(recs.items()):
            info = r["info"]
            audio = r.get("wav") or r.get("av")
            if audio is None:
                report.add("missing", key, "only a video-only (02) file; no audio-only wav or audio-video mp4")
                continue
            emotion = EMOTIONS[info["emotion"]]
            label = emotion if self.labels == "8class" else FOUR.get(emotion)
            if label is None:
                report.exclude(emotion)
                continue
            fold = folds[info["actor"]]
            utts.append(Utterance(
                id=key, label=label, split=split_of_fold(fold, k), fold=fold, speaker=f"Actor_{info['actor']}",
                audio=Segment(self.rel(audio)), video=Segment(self.rel(r["av"])) if "av" in r else None,
                text=STATEMENTS[info["statement"]],
                extra={"vocal_channel": "speech" if info["channel"] == "01" else "song",
                       "intensity": "normal" if info["intensity"] == "01" else "strong",
                       "gender": "male" if int(info["actor"]) % 2 else "female"}))
        return utts
