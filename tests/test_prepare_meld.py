"""MELD preparer on a generated MELD.Raw: three split CSVs, clip folders, a missing clip, a bad label, cp1252 bytes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import prepare
from release_utils import placeholder

COLS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
        "Episode", "StartTime", "EndTime"]


def _csv(path: Path, rows: list[tuple], encoding: str = "utf-8") -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLS)
    for i, (text, speaker, emo, sent, d, u) in enumerate(rows, 1):
        w.writerow([i, text, speaker, emo, sent, d, u, 8, 21, "00:16:16,059", "00:16:21,731"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue().encode(encoding, errors="replace"))


@pytest.fixture
def release(tmp_path) -> Path:
    root = tmp_path / "MELD"
    raw = root / "MELD.Raw"
    train = [("also I was the point person on my company's transition", "Chandler", "neutral", "neutral", 0, 0),
             ("You must've had your hands full.", "The Interviewer", "neutral", "neutral", 0, 1),
             ("That I did. That I did.", "Chandler", "joy", "positive", 0, 2),
             ("Why do all youre coffee mugs have numbers on the bottom?", "Mark", "surprise", "positive", 1, 0),
             ("Oh. Thats so Monica can keep track.", "Rachel", "anger", "negative", 1, 1),
             ("Whatever.", "Rachel", "boredom", "neutral", 1, 2)]              # not a MELD emotion
    dev = [("Oh my God, he\u2019s lost it.", "Phoebe", "sadness", "negative", 0, 0),   # cp1252 apostrophe below
           ("What?", "Monica", "surprise", "negative", 0, 1),
           ("Or! Or, we could go to the bank", "Ross", "neutral", "neutral", 110, 7)]  # clip missing (a real quirk)
    test = [("Why do you all have to do this?", "Joey", "fear", "negative", 0, 0),
            ("Yeah.", "Ross", "disgust", "negative", 0, 1)]
    _csv(raw / "train_sent_emo.csv", train)
    _csv(raw / "dev_sent_emo.csv", dev, encoding="cp1252")
    _csv(raw / "test_sent_emo.csv", test)
    for folder, rows in (("train_splits", train), ("dev_splits_complete", dev[:2]), ("output_repeated_splits_test", test)):
        for r in rows:
            placeholder(raw / folder / f"dia{r[4]}_utt{r[5]}.mp4")
    placeholder(raw / "train_splits" / "._dia0_utt0.mp4")
    return root


def test_counts_per_label_and_split(release, tmp_path):
    utts, report = prepare("meld", release, tmp_path / "meld.jsonl")
    assert report.counts["split"] == {"test": 2, "train": 5, "valid": 2}
    assert report.counts["label"] == {"anger": 1, "disgust": 1, "fear": 1, "joy": 1, "neutral": 2, "sadness": 1,
                                      "surprise": 2}
    assert report.by_kind() == {"skipped": 0, "missing": 1, "unknown_label": 1, "mismatched_id": 0}
    assert "dev_splits_complete/dia110_utt7.mp4" in report.of("missing")[0].where
    assert "'boredom'" in report.of("unknown_label")[0].reason
    by = {u.id: u for u in utts}
    # dialogue ids restart per split, so ids carry the split
    assert {"train_dia0_utt0", "valid_dia0_utt0", "test_dia0_utt0"} <= set(by)
    u = by["train_dia0_utt2"]
    assert (u.label, u.speaker, u.targets) == ("joy", "Chandler", {"emotion": "joy", "sentiment": "positive"})
    assert u.audio.path == u.video.path == "MELD.Raw/train_splits/dia0_utt2.mp4"
    assert "he\u2019s lost it" in by["valid_dia0_utt0"].text          # cp1252 CSV decoded
    man = load_manifest(tmp_path / "meld.jsonl", data_root=release)
    assert all(man.resolve(x.audio.path).is_file() for x in man)


def test_sentiment_labels(release):
    utts, report = prepare("meld", release, labels="sentiment")
    assert report.counts["label"] == {"negative": 5, "neutral": 2, "positive": 2}
