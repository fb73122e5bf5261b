"""CMU-MOSI and CMU-MOSEI preparers on generated raw releases (labels CSV / SDK labels .csd, transcripts, folds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imo_pipeline.errors import ConfigError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import prepare
from imo_pipeline.prepare.mosi import load_folds, sentiment_label
from release_utils import MOSI_NOFOLD as NOFOLD, MOSI_TEST as TEST, MOSI_TRAIN as TRAIN, MOSI_VALID as VALID
from release_utils import mosei_release, mosi_release, text


@pytest.fixture
def mosi(tmp_path) -> Path:
    return mosi_release(tmp_path / "CMU_MOSI")


def test_mosi_counts_splits_and_problems(mosi, tmp_path):
    utts, report = prepare("mosi", mosi, tmp_path / "mosi.jsonl")
    by = {u.id: u for u in utts}
    assert set(by) == {f"{TRAIN}_1", f"{TRAIN}_2", f"{TRAIN}_3", f"{VALID}_1", f"{TEST}_1", f"{NOFOLD}_1"}
    assert report.counts["split"] == {"-": 1, "test": 1, "train": 3, "valid": 1}
    assert report.counts["label"] == {"-3": 1, "-1": 1, "0": 1, "1": 2, "2": 1}   # regression labels binned
    u = by[f"{TRAIN}_1"]
    assert (u.label, u.text, u.speaker, u.split) == (2.4, "anyhow it was really good", TRAIN, "train")
    assert u.extra == {"video_id": TRAIN, "interval": [0.0, 2.1]}
    assert by[f"{VALID}_1"].video is None
    assert report.by_kind() == {"skipped": 2, "missing": 2, "unknown_label": 1, "mismatched_id": 1}
    reasons = " | ".join(i.reason for i in report.issues)
    assert "3.4 outside [-3, 3]" in reasons and f"video {NOFOLD} is in no standard fold" in reasons
    assert f"{TRAIN}_3: no line 3" not in reasons and f"{TEST}_2" not in {i.where for i in report.of("missing")}
    man = load_manifest(tmp_path / "mosi.jsonl", data_root=mosi)
    assert all(man.resolve(x.audio.path).is_file() for x in man)


@pytest.mark.parametrize("score, two, seven", [(2.4, "positive", "2"), (-0.6, "negative", "-1"), (0.0, "positive", "0"),
                                               (-3.0, "negative", "-3"), (2.5, "positive", "2"), (2.6, "positive", "3")])
def test_sentiment_label_sets(score, two, seven):
    assert sentiment_label(score, "2class") == two
    assert sentiment_label(score, "7class") == seven
    assert sentiment_label(score, "regression") == score


def test_folds_file_json_and_sdk_py(tmp_path):
    j = text(tmp_path / "f.json", json.dumps({"train": ["a"], "valid": ["b"], "test": ["c", "d"]}))
    assert load_folds(j) == {"train": {"a"}, "valid": {"b"}, "test": {"c", "d"}}
    py = text(tmp_path / "cmu_mosei_std_folds.py", "standard_train_fold=['a',\n 'e']\nstandard_valid_fold=['b']\n"
              "standard_test_fold=['c']\nimport os; os.remove('nothing')\n")
    assert load_folds(py) == {"train": {"a", "e"}, "valid": {"b"}, "test": {"c"}}   # read as data, not run
    with pytest.raises(ConfigError, match="standard_valid_fold"):
        load_folds(text(tmp_path / "bad.py", "standard_train_fold=['a']\n"))


@pytest.fixture
def mosei(tmp_path) -> Path:
    return mosei_release(tmp_path / "CMU_MOSEI")


def test_mosei_labels_from_sdk_csd_and_folds(mosei, tmp_path):
    folds = text(tmp_path / "folds.json", json.dumps({"train": ["-3g5yACwYnA"], "valid": [], "test": ["_0efYOjQYRc"]}))
    utts, report = prepare("mosei", mosei, tmp_path / "mosei.jsonl", folds=str(folds))
    by = {u.id: u for u in utts}
    assert set(by) == {"-3g5yACwYnA_1", "-3g5yACwYnA_2", "_0efYOjQYRc_1"}
    u = by["-3g5yACwYnA_2"]
    assert u.label == -2.0 and u.split == "train" and u.text == "sentence 2"
    assert (u.audio.path, u.audio.start, u.audio.end) == ("Raw/Audio/Full/WAV_16000/-3g5yACwYnA.wav", 91.8, 100.0)
    assert u.targets == {"sentiment": -2.0, "happy": 0.0, "sad": 1.5, "anger": pytest.approx(0.3), "surprise": 0.0,
                         "disgust": 0.0, "fear": 0.0}
    assert report.counts["split"] == {"test": 1, "train": 2}
    assert report.by_kind()["mismatched_id"] == 1 and "[12.000, 15.000]" in report.of("mismatched_id")[0].reason
    load_manifest(tmp_path / "mosei.jsonl", data_root=mosei)


def test_mosei_without_folds_notes_it(mosei):
    utts, report = prepare("mosei", mosei)
    assert all(u.split is None for u in utts) and any("--folds" in n for n in report.notes)
