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
from release_utils import placeholder, text, wav

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _dialog(root: Path, session: int, dialog: str, labels: list[tuple], transcript: list[str],
            wavs: list[str] | None = None, video: bool = True) -> None:
    s = root / f"Session{session}"
    body = HEADER
    for start, end, uid, code, vad in labels:
        body += f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]\n"
        body += "C-E1:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
    text(s / "dialog" / "EmoEvaluation" / f"{dialog}.txt", body)
    text(s / "dialog" / "transcriptions" / f"{dialog}.txt", "\n".join(transcript) + "\n")
    for uid in wavs if wavs is not None else [lab[2] for lab in labels]:
        wav(s / "sentences" / "wav" / dialog / f"{uid}.wav")
    if video:
        placeholder(s / "dialog" / "avi" / "DivX" / f"{dialog}.avi")


@pytest.fixture
def release(tmp_path) -> Path:
    """Three sessions, a hidden resource fork, unscored turns, an unknown code, a missing wav and a missing video."""
    root = tmp_path / "IEMOCAP_full_release"
    d1 = [(6.2901, 8.2357, "Ses01F_impro01_F000", "neu", (2.5, 2.5, 2.5)),
          (10.01, 11.3925, "Ses01F_impro01_F001", "exc", (4.0, 3.5, 3.0)),
          (14.8872, 18.0175, "Ses01F_impro01_M002", "fru", (2.0, 3.5, 3.5)),
          (19.29, 20.7875, "Ses01F_impro01_M003", "xxx", (2.5, 2.5, 2.5)),
          (21.0, 22.0, "Ses01F_impro01_F004", "zzz", (2.5, 2.5, 2.5)),
          (23.0, 24.0, "Ses01F_impro01_M005", "ang", (1.5, 4.0, 4.0))]
    _dialog(root, 1, "Ses01F_impro01", d1, [
        "Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.",
        "Ses01F_impro01_F001 [010.0100-011.3925]: Do you have your forms?",
        "Ses01F_impro01_MXX0 [012.0000-013.0000]: Yeah.",
        "M: [BREATHING]",
        "Ses01F_impro01_M002 [014.8872-018.0175]: Let me see them.",
        "Ses01F_impro01_M003 [019.2900-020.7875]: Is there a problem?",
        "Ses01F_impro01_F004 [021.0000-022.0000]: Who told you to get in this line?",
        "Ses01F_impro01_M005 [023.0000-024.0000]: You did.",
        "Ses01F_impro01_F009 [030.0000-031.0000]: A line with no label.",
    ], wavs=["Ses01F_impro01_F000", "Ses01F_impro01_F001", "Ses01F_impro01_M002", "Ses01F_impro01_M003",
             "Ses01F_impro01_F004"])
    text(root / "Session1" / "dialog" / "EmoEvaluation" / "._Ses01F_impro01.txt", "\x00\x05\x16\x07 mac resource fork")
    # a script dialog recorded with the male actor leading: the F utterance is still the woman's
    _dialog(root, 1, "Ses01M_script01_1", [
        (1.0, 2.5, "Ses01M_script01_1_F000", "sad", (2.0, 2.0, 2.5)),
        (3.0, 4.5, "Ses01M_script01_1_M001", "hap", (4.0, 3.0, 3.0))], [
        "Ses01M_script01_1_F000 [001.0000-002.5000]: I'm leaving.",
        "Ses01M_script01_1_M001 [003.0000-004.5000]: Great!"])
    _dialog(root, 2, "Ses02F_impro03", [(0.5, 1.5, "Ses02F_impro03_M000", "hap", (4.5, 3.0, 3.0))],
            ["Ses02F_impro03_M000 [000.5000-001.5000]: We got married!"])
    _dialog(root, 5, "Ses05F_script02_2", [
        (2.0, 3.0, "Ses05F_script02_2_M010", "neu", (3.0, 2.0, 2.0)),
        (3.5, 5.0, "Ses05F_script02_2_F011", "ang", (1.5, 4.5, 4.0))], [
        "Ses05F_script02_2_M010 [002.0000-003.0000]: Okay.",
        "Ses05F_script02_2_F011 [003.5000-005.0000]: No!"], video=False)
    return root


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
