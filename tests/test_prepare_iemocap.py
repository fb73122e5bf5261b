"""IEMOCAP preparer on a generated release that mirrors IEMOCAP_full_release's layout and quirks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from imo_pipeline.errors import ManifestError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import prepare
from imo_pipeline.prepare.iemocap import map_label, parse_utt_id
from release_utils import iemocap_release

@pytest.fixture
def release(tmp_path) -> Path:
    return iemocap_release(tmp_path / "IEMOCAP_full_release")


@pytest.mark.parametrize("uid, expected", [
    ("Ses01F_impro01_F000", {"session": "1", "dialog": "Ses01F_impro01", "speaker": "Ses01F", "improvised": True}),
    ("Ses01F_impro01_M012", {"session": "1", "dialog": "Ses01F_impro01", "speaker": "Ses01M", "improvised": True}),
    ("Ses03M_script01_2_F012", {"session": "3", "dialog": "Ses03M_script01_2", "speaker": "Ses03F", "improvised": False}),
    ("Ses03M_impro05a_M020", {"session": "3", "dialog": "Ses03M_impro05a", "speaker": "Ses03M", "improvised": True}),
    ("Ses05M_script03_2b_F045", {"session": "5", "dialog": "Ses05M_script03_2b", "speaker": "Ses05F", "improvised": False}),
    ("Ses01F_impro01_MXX0", None),
    ("Ses01F_impro01_FXX1", None),
    ("M", None),
    ("Ses01F_impro01", None),
])
def test_speaker_fold_and_dialog_from_tricky_ids(uid, expected):
    assert parse_utt_id(uid) == expected


@pytest.mark.parametrize("code, four, six", [
    ("neu", "neu", "neu"), ("hap", "hap", "hap"), ("exc", "hap", "exc"), ("sad", "sad", "sad"),
    ("ang", "ang", "ang"), ("fru", None, "fru"), ("sur", None, None), ("xxx", None, None), ("oth", None, None),
])
def test_label_mapping(code, four, six):
    assert map_label(code, "4class") == four
    assert map_label(code, "6class") == six


def test_4class_counts_speakers_folds_and_problems(release, tmp_path):
    utts, report = prepare("iemocap", release, tmp_path / "iemocap.jsonl")
    by = {u.id: u for u in utts}
    assert sorted(by) == ["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01M_script01_1_F000",
                          "Ses01M_script01_1_M001", "Ses02F_impro03_M000", "Ses05F_script02_2_F011",
                          "Ses05F_script02_2_M010"]
    assert report.counts["label"] == {"ang": 1, "hap": 3, "neu": 2, "sad": 1}
    assert report.counts["fold"] == {"1": 4, "2": 1, "5": 2}
    assert report.counts["split"] == {"test": 2, "train": 5}
    assert by["Ses01F_impro01_F001"].label == "hap"            # exc merged into hap
    assert by["Ses01M_script01_1_F000"].speaker == "Ses01F"    # not the dialog's letter
    assert by["Ses05F_script02_2_M010"].speaker == "Ses05M"
    assert by["Ses01F_impro01_F000"].extra["improvised"] is True
    assert by["Ses01M_script01_1_M001"].extra["improvised"] is False
    assert by["Ses01F_impro01_F000"].targets == {"valence": 2.5, "arousal": 2.5, "dominance": 2.5}
    assert by["Ses01F_impro01_F000"].text == "Excuse me."
    assert by["Ses01F_impro01_F000"].video.start == pytest.approx(6.2901)
    assert by["Ses01F_impro01_F000"].video.end == pytest.approx(8.2357)
    assert by["Ses05F_script02_2_F011"].video is None            # its dialog's avi is missing
    assert report.excluded == {"fru": 1, "xxx": 1}
    assert report.by_kind() == {"skipped": 3, "missing": 3, "unknown_label": 1, "mismatched_id": 1}
    reasons = " | ".join(f"{i.where}: {i.reason}" for i in report.issues)
    for bit in ("._Ses01F_impro01.txt", "Ses01F_impro01_MXX0", "'M: [BREATHING]'", "'zzz'",
                "Ses01F_impro01_M005.wav", "Ses05F_script02_2.avi", "Ses01F_impro01_F009"):
        assert bit in reasons
    # the written manifest validates and its media resolve against the release root
    man = load_manifest(tmp_path / "iemocap.jsonl", data_root=release)
    assert len(man) == 7 and all(man.resolve(u.audio.path).is_file() for u in man)
    saved = json.loads((tmp_path / "iemocap.report.json").read_text())
    assert saved["problems"]["missing"] == 3 and len(saved["issues"]) == 8


def test_6class_and_binary_targets(release):
    six, _ = prepare("iemocap", release, labels="6class")
    assert {u.id: u.label for u in six}["Ses01F_impro01_F001"] == "exc"
    assert {u.id: u.label for u in six}["Ses01F_impro01_M002"] == "fru"
    binary, _ = prepare("iemocap", release, labels="binary")
    t = {u.id: u.targets for u in binary}["Ses01F_impro01_F001"]
    assert {k: t[k] for k in ("neu", "hap", "sad", "ang")} == {"neu": 0, "hap": 1, "sad": 0, "ang": 0}


def test_original_protocol_drops_exc_and_splits_sessions_1_to_4_from_5(release, tmp_path):
    assert [map_label(c, "original") for c in ("neu", "hap", "exc", "sad", "ang", "fru")] == \
        ["neu", "hap", None, "sad", "ang", None]
    utts, report = prepare("iemocap", release, tmp_path / "orig.jsonl", labels="original")
    by = {u.id: u for u in utts}
    assert "Ses01F_impro01_F001" not in by                     # exc is dropped, not merged into hap
    assert report.excluded["exc"] == 1 and report.counts["label"] == {"ang": 1, "hap": 2, "neu": 2, "sad": 1}
    assert {u.split for u in utts if u.fold != "5"} == {"train"} and {u.split for u in utts if u.fold == "5"} == {"test"}
    assert not any(u.split == "valid" for u in utts)            # imo train holds out training speakers instead
    t = by["Ses01M_script01_1_M001"].targets
    assert {k: t[k] for k in ("neu", "hap", "sad", "ang")} == {"neu": 0, "hap": 1, "sad": 0, "ang": 0}
    assert any("518 validation utterances" in n and "exc dropped" in n for n in report.notes)
    assert all(u.speaker for u in load_manifest(tmp_path / "orig.jsonl", data_root=release))


def test_strict_makes_problems_fatal(release, tmp_path):
    with pytest.raises(ManifestError, match="--strict and 8 problem"):
        prepare("iemocap", release, tmp_path / "m.jsonl", strict=True)
    assert not (tmp_path / "m.jsonl").exists()


def test_cli_prints_counts_and_strict_exits_2(release, tmp_path):
    out = tmp_path / "iemocap.jsonl"
    ok = subprocess.run([sys.executable, "-m", "imo_pipeline", "prepare", "iemocap", str(release), "--out", str(out)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "7 utterances" in ok.stdout and "hap=3" in ok.stdout and "missing: 3" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "imo_pipeline", "prepare", "iemocap", str(release), "--out",
                          str(tmp_path / "x.jsonl"), "--strict"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: iemocap: --strict") and len(bad.stderr.strip().splitlines()) == 1
    wrong = subprocess.run([sys.executable, "-m", "imo_pipeline", "prepare", "iemocap", str(release), "--out",
                            str(tmp_path / "y.jsonl"), "--labels", "7class"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "4class, 6class, binary" in wrong.stderr
