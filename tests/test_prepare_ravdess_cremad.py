"""RAVDESS and CREMA-D preparers: labels from file names, actor-independent folds."""

from __future__ import annotations

from pathlib import Path

import pytest

from imo_pipeline.prepare import prepare
from imo_pipeline.prepare.base import actor_folds
from imo_pipeline.prepare.cremad import parse_name as crema_name
from imo_pipeline.prepare.ravdess import parse_name as ravdess_name
from release_utils import cremad_release, ravdess_release


@pytest.fixture
def ravdess(tmp_path) -> Path:
    return ravdess_release(tmp_path / "RAVDESS")


def test_ravdess_names_and_counts(ravdess):
    assert ravdess_name("03-01-06-01-02-01-12") == {"modality": "03", "channel": "01", "emotion": "06",
                                                    "intensity": "01", "statement": "02", "repetition": "01",
                                                    "actor": "12"}
    assert ravdess_name("03-01-06-01-02-01") is None
    utts, report = prepare("ravdess", ravdess)
    by = {u.id: u for u in utts}
    assert len(utts) == 41
    assert report.counts["label"] == {"angry": 10, "happy": 10, "neutral": 10, "sad": 1, "surprised": 10}
    assert report.counts["fold"] == {"0": 9, "1": 8, "2": 8, "3": 8, "4": 8}   # actors 1,6 | 2,7 | 3,8 | 4,9 | 5,10
    assert report.counts["split"] == {"test": 8, "train": 25, "valid": 8}
    hap = by["01-03-01-01-01-06"]
    assert hap.audio.path == "Actor_06/03-01-03-01-01-01-06.wav" and hap.video.path == "Actor_06/01-01-03-01-01-01-06.mp4"
    assert (hap.speaker, hap.fold, hap.text, hap.extra["gender"]) == ("Actor_06", "0", "Kids are talking by the door", "female")
    song = by["02-04-02-02-02-01"]
    assert song.audio.path == song.video.path and song.extra["vocal_channel"] == "song"
    assert report.by_kind() == {"skipped": 2, "missing": 1, "unknown_label": 1, "mismatched_id": 1}
    # actor-independent: no actor in two folds
    folds_of = {}
    for u in utts:
        folds_of.setdefault(u.speaker, set()).add(u.fold)
    assert all(len(f) == 1 for f in folds_of.values())


def test_ravdess_4class_and_fold_count(ravdess):
    utts, report = prepare("ravdess", ravdess, labels="4class", folds="2")
    assert report.counts["label"] == {"ang": 10, "hap": 10, "neu": 10, "sad": 1}
    assert report.excluded == {"surprised": 10}
    assert set(report.counts["fold"]) == {"0", "1"} and set(report.counts["split"]) == {"test", "valid"}


@pytest.fixture
def cremad(tmp_path) -> Path:
    return cremad_release(tmp_path / "CREMA-D")


def test_cremad_names_counts_and_folds(cremad):
    assert crema_name("1001_DFA_ANG_XX") == {"actor": "1001", "sentence": "DFA", "emotion": "ANG", "level": "XX"}
    assert crema_name("1001_DFA_ANG") is None
    utts, report = prepare("cremad", cremad)
    assert len(utts) == 24
    assert report.counts["label"] == {"ang": 6, "fea": 6, "hap": 6, "neu": 6}
    assert report.counts["fold"] == {"0": 8, "1": 4, "2": 4, "3": 4, "4": 4}
    assert report.counts["split"] == {"test": 4, "train": 16, "valid": 4}
    u = {x.id: x for x in utts}["1001_IEO_HAP_HI"]
    assert (u.speaker, u.text, u.extra["level"], u.video.path) == ("1001", "It's eleven o'clock", "high",
                                                                   "VideoFlash/1001_IEO_HAP_HI.flv")
    assert report.by_kind() == {"skipped": 3, "missing": 0, "unknown_label": 1, "mismatched_id": 0}
    assert any("empty" in i.reason for i in report.of("skipped"))
    four, rep4 = prepare("cremad", cremad, labels="4class")
    assert rep4.excluded == {"fea": 6} and len(four) == 18


def test_actor_folds_round_robin():
    assert actor_folds(["3", "1", "2", "1"], 2) == {"1": "0", "2": "1", "3": "0"}
