"""MELD preparer on a generated MELD.Raw: three split CSVs, clip folders, a missing clip, a bad label, cp1252 bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import prepare
from release_utils import meld_release

@pytest.fixture
def release(tmp_path) -> Path:
    return meld_release(tmp_path / "MELD")


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
