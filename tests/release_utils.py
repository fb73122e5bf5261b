"""Helpers for the preparer tests: tiny real wav files and placeholder media in release layouts, and one
generated release per dataset (``<name>_release(root)``, with the quirks of the real one)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_utils import tone
from imo_pipeline.csd import write_csd

# video ids from the SDK's standard MOSI folds: train, valid, test; and one in no fold
MOSI_TRAIN, MOSI_VALID, MOSI_TEST, MOSI_NOFOLD = "03bSnISJMiM", "WKA5OygbEKI", "tmZoasNr4rU", "zzzNotAFold"


def wav(path: Path, seconds: float = 0.2, sr: int = 16000) -> Path:
    """A short real 16-bit wav file (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, sr), sr, subtype="PCM_16")
    return path


def placeholder(path: Path) -> Path:
    """A stand-in video file: preparers only check that media exist, they never decode them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 16)
    return path


def text(path: Path, content: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")
    return path


IEMOCAP_HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def _iemocap_dialog(root: Path, session: int, dialog: str, labels: list[tuple], transcript: list[str],
                    wavs: list[str] | None = None, video: bool = True) -> None:
    s = root / f"Session{session}"
    body = IEMOCAP_HEADER
    for start, end, uid, code, vad in labels:
        body += f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[{vad[0]:.4f}, {vad[1]:.4f}, {vad[2]:.4f}]\n"
        body += "C-E1:\tNeutral;\t()\nC-E3:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
    text(s / "dialog" / "EmoEvaluation" / f"{dialog}.txt", body)
    text(s / "dialog" / "transcriptions" / f"{dialog}.txt", "\n".join(transcript) + "\n")
    for uid in wavs if wavs is not None else [lab[2] for lab in labels]:
        wav(s / "sentences" / "wav" / dialog / f"{uid}.wav")
    if video:
        placeholder(s / "dialog" / "avi" / "DivX" / f"{dialog}.avi")


def iemocap_release(root: Path) -> Path:
    """Three sessions, a hidden resource fork, unscored turns, an unknown code, a missing wav and a missing video."""
    d1 = [(6.2901, 8.2357, "Ses01F_impro01_F000", "neu", (2.5, 2.5, 2.5)),
          (10.01, 11.3925, "Ses01F_impro01_F001", "exc", (4.0, 3.5, 3.0)),
          (14.8872, 18.0175, "Ses01F_impro01_M002", "fru", (2.0, 3.5, 3.5)),
          (19.29, 20.7875, "Ses01F_impro01_M003", "xxx", (2.5, 2.5, 2.5)),
          (21.0, 22.0, "Ses01F_impro01_F004", "zzz", (2.5, 2.5, 2.5)),
          (23.0, 24.0, "Ses01F_impro01_M005", "ang", (1.5, 4.0, 4.0))]
    _iemocap_dialog(root, 1, "Ses01F_impro01", d1, [
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
    _iemocap_dialog(root, 1, "Ses01M_script01_1", [
        (1.0, 2.5, "Ses01M_script01_1_F000", "sad", (2.0, 2.0, 2.5)),
        (3.0, 4.5, "Ses01M_script01_1_M001", "hap", (4.0, 3.0, 3.0))], [
        "Ses01M_script01_1_F000 [001.0000-002.5000]: I'm leaving.",
        "Ses01M_script01_1_M001 [003.0000-004.5000]: Great!"])
    _iemocap_dialog(root, 2, "Ses02F_impro03", [(0.5, 1.5, "Ses02F_impro03_M000", "hap", (4.5, 3.0, 3.0))],
            ["Ses02F_impro03_M000 [000.5000-001.5000]: We got married!"])
    _iemocap_dialog(root, 5, "Ses05F_script02_2", [
        (2.0, 3.0, "Ses05F_script02_2_M010", "neu", (3.0, 2.0, 2.0)),
        (3.5, 5.0, "Ses05F_script02_2_F011", "ang", (1.5, 4.5, 4.0))], [
        "Ses05F_script02_2_M010 [002.0000-003.0000]: Okay.",
        "Ses05F_script02_2_F011 [003.5000-005.0000]: No!"], video=False)
    return root


MELD_COLS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
        "Episode", "StartTime", "EndTime"]


def _meld_csv(path: Path, rows: list[tuple], encoding: str = "utf-8") -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(MELD_COLS)
    for i, (text, speaker, emo, sent, d, u) in enumerate(rows, 1):
        w.writerow([i, text, speaker, emo, sent, d, u, 8, 21, "00:16:16,059", "00:16:21,731"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue().encode(encoding, errors="replace"))


def meld_release(root: Path) -> Path:
    """MELD.Raw: three split CSVs, clip folders, a missing clip, a bad label, cp1252 bytes."""
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
    _meld_csv(raw / "train_sent_emo.csv", train)
    _meld_csv(raw / "dev_sent_emo.csv", dev, encoding="cp1252")
    _meld_csv(raw / "test_sent_emo.csv", test)
    for folder, rows in (("train_splits", train), ("dev_splits_complete", dev[:2]), ("output_repeated_splits_test", test)):
        for r in rows:
            placeholder(raw / folder / f"dia{r[4]}_utt{r[5]}.mp4")
    placeholder(raw / "train_splits" / "._dia0_utt0.mp4")
    return root


def mosi_release(root: Path) -> Path:
    """CMU_MOSI/Raw: labels CSV, segmented transcripts, wavs and videos, with quirks."""
    raw = root / "Raw"
    rows = [(0.0, 2.1, MOSI_TRAIN, 1, 2.4), (2.1, 5.0, MOSI_TRAIN, 2, -0.6), (5.0, 7.5, MOSI_TRAIN, 3, 0.0),
            (1.0, 3.0, MOSI_VALID, 1, -2.8), (0.5, 2.5, MOSI_TEST, 1, 1.2), (3.0, 4.0, MOSI_TEST, 2, 3.4),   # out of range
            (0.0, 1.0, MOSI_NOFOLD, 1, 1.0), (4.0, 6.0, MOSI_TEST, 3, -1.4)]                             # wav missing
    text(raw / "Labels" / "OpinionLevelSentiment.csv", "".join(f"{a},{b},{v},{n},{s}\n" for a, b, v, n, s in rows)
         + "not,a,row\n")
    for vid, lines in ((MOSI_TRAIN, ["1_DELIMITER_anyhow it was really good", "2_DELIMITER_ the ending was weak",
                                "3_DELIMITER_i guess"]),
                       (MOSI_VALID, ["1_DELIMITER_terrible"]), (MOSI_TEST, ["1_DELIMITER_pretty fun", "garbage line"]),
                       (MOSI_NOFOLD, ["1_DELIMITER_ok"])):
        text(raw / "Transcript" / "Segmented" / f"{vid}.annotprocessed", "\n".join(lines) + "\n")
    for vid, n in ((MOSI_TRAIN, 1), (MOSI_TRAIN, 2), (MOSI_TRAIN, 3), (MOSI_VALID, 1), (MOSI_TEST, 1), (MOSI_TEST, 2), (MOSI_NOFOLD, 1)):
        wav(raw / "Audio" / "WAV_16000" / "Segmented" / f"{vid}_{n}.wav")
        if vid != MOSI_VALID:
            placeholder(raw / "Video" / "Segmented" / f"{vid}_{n}.mp4")
    return root


def mosei_release(root: Path) -> Path:
    """CMU_MOSEI: the SDK labels .csd, combined transcripts and full-length wavs."""
    raw = root / "Raw"
    vids = {"-3g5yACwYnA": [(82.0, 91.5), (91.8, 100.0)], "_0efYOjQYRc": [(5.0, 9.0), (12.0, 15.0)]}
    entries = {}
    for vid, segs in vids.items():
        feats = np.array([[1.0, 0.5, 0, 0, 0, 0, 0], [-2.0, 0, 1.5, 0.3, 0, 0, 0]], dtype=np.float32)
        entries[vid] = (feats, np.array(segs))
        lines = [f"{vid}___{n}___{s}___{e}___sentence {n}" for n, (s, e) in enumerate(segs, 1)]
        wav(raw / "Audio" / "Full" / "WAV_16000" / f"{vid}.wav", seconds=0.1)
        if vid == "_0efYOjQYRc":
            lines = lines[:1]  # the second label interval has no transcript segment
        text(raw / "Transcript" / "Segmented" / "Combined" / f"{vid}.txt", "\n".join(lines) + "\n")
    write_csd(root / "labels" / "CMU_MOSEI_Labels.csd", "All Labels", entries, {"root name": "All Labels"})
    return root


def ravdess_release(root: Path) -> Path:
    """Audio-only wavs and audio-video mp4s for 10 actors, plus a video-only clip, quirks and strays."""
    for actor in range(1, 11):
        a = f"{actor:02d}"
        for emo in ("01", "03", "05", "08"):
            wav(root / f"Actor_{a}" / f"03-01-{emo}-01-01-01-{a}.wav", seconds=0.05)
        placeholder(root / f"Actor_{a}" / f"01-01-03-01-01-01-{a}.mp4")     # same recording as the hap wav
    placeholder(root / "Actor_01" / "01-02-04-02-02-02-01.mp4")            # song, audio-video only
    placeholder(root / "Actor_02" / "02-01-06-01-01-01-02.mp4")            # video-only: no audio
    wav(root / "Actor_03" / "03-01-09-01-01-01-03.wav")                    # emotion code 09
    wav(root / "Actor_04" / "03-01-01-01-01-01-05.wav")                    # actor 05 filed under Actor_04
    wav(root / "Actor_05" / "._03-01-01-01-01-02-05.wav")                  # resource fork
    text(root / "Actor_05" / "notes.wav", "not a recording")
    return root


def cremad_release(root: Path) -> Path:
    """CREMA-D: AudioWAV and VideoFlash for six actors, an empty file, an unknown emotion, a bad name."""
    for actor in (1001, 1002, 1003, 1004, 1005, 1006):
        for sent, emo, lvl in (("DFA", "ANG", "XX"), ("IEO", "HAP", "HI"), ("TIE", "NEU", "XX"), ("IWW", "FEA", "LO")):
            wav(root / "AudioWAV" / f"{actor}_{sent}_{emo}_{lvl}.wav", seconds=0.05)
            placeholder(root / "VideoFlash" / f"{actor}_{sent}_{emo}_{lvl}.flv")
    (root / "AudioWAV" / "1076_MTI_SAD_XX.wav").write_bytes(b"")                # empty file
    wav(root / "AudioWAV" / "1007_DFA_BOR_XX.wav")                               # unknown emotion
    wav(root / "AudioWAV" / "1008_DFA_ANG.wav")                                  # malformed name
    wav(root / "AudioWAV" / "._1001_DFA_ANG_XX.wav")
    return root
