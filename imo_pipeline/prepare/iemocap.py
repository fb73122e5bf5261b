"""IEMOCAP (``IEMOCAP_full_release``).

Layout read::

    SessionN/dialog/EmoEvaluation/<dialog>.txt      labels: "[start - end]\\t<utt>\\t<code>\\t[V, A, D]"
    SessionN/dialog/transcriptions/<dialog>.txt     text:   "<utt> [start-end]: words"
    SessionN/sentences/wav/<dialog>/<utt>.wav       audio (one file per utterance)
    SessionN/dialog/avi/DivX/<dialog>.avi           video (whole dialog; the utterance's start/end)

Speaker: session + the gender letter of the utterance id's last field
(``Ses01F_impro01_M012`` is the male actor of session 1, ``Ses01M``), not the
dialog name's letter. Fold: the session. Split: sessions 1-3 train, 4 valid, 5 test.

Label sets: ``4class`` (neu, hap with exc merged into it, sad, ang), ``6class``
(+ exc, fru), ``binary`` (4class with per-emotion 0/1 targets) and ``original``:
the original work's protocol (Siriwardhana et al. 2020, ``--binary-target-iemocap``
in ``raw_audio_text_video_dataset.py``): neu, sad, ang, hap with exc **dropped**
(not merged), per-emotion 0/1 targets (train with ``--task binary``), sessions 1-4
train and session 5 test. It writes no valid split: `imo train` holds out a share
of the training speakers (``--valid-fraction``, one speaker of the eight by
default). The released split differs: its 518 validation utterances all lie
inside its 1,241 test utterances, so model selection there saw the test set.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..manifest import Segment, Utterance
from .base import PrepareReport, Preparer, is_hidden, register_preparer

CODES = ("neu", "hap", "exc", "sad", "ang", "fru", "sur", "fea", "dis", "oth", "xxx")
FOUR = {"neu": "neu", "hap": "hap", "exc": "hap", "sad": "sad", "ang": "ang"}
SIX = {"neu": "neu", "hap": "hap", "exc": "exc", "sad": "sad", "ang": "ang", "fru": "fru"}
ORIGINAL = {"neu": "neu", "sad": "sad", "ang": "ang", "hap": "hap"}   # exc dropped, as the original work does
BINARY = ("neu", "hap", "sad", "ang")
SPLIT_OF_SESSION = {"1": "train", "2": "train", "3": "train", "4": "valid", "5": "test"}
ORIGINAL_SPLIT = {"1": "train", "2": "train", "3": "train", "4": "train", "5": "test"}

UTT_RE = re.compile(r"^(Ses(\d\d)[FM])_(\w+?)_([FM])(\d{3})$")
EVAL_RE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)\s+\[\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*\]")
TRANS_RE = re.compile(r"^(\S+)\s+\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s*:\s?(.*)$")


def parse_utt_id(uid: str) -> dict | None:
    """Fields of an utterance id, or None if it is not a scored utterance.

    ``Ses03M_script01_2_F012`` -> session "3", dialog "Ses03M_script01_2",
    speaker "Ses03F", improvised False. Ids of unscored turns (``..._MXX0``) give None.
    """
    m = UTT_RE.match(uid)
    if not m:
        return None
    prefix, session, middle, gender, _ = m.groups()
    return {"session": str(int(session)), "dialog": f"{prefix}_{middle}",
            "speaker": f"Ses{session}{gender}", "improvised": middle.startswith("impro")}


def map_label(code: str, label_set: str) -> str | None:
    """The class of an EmoEvaluation code under a label set (None: not in that set)."""
    if label_set == "6class":
        return SIX.get(code)
    if label_set == "original":
        return ORIGINAL.get(code)
    return FOUR.get(code)  # 4class and binary use the same four classes


@register_preparer("iemocap")
class Iemocap(Preparer):
    label_sets = ("4class", "6class", "binary", "original")
    description = ("IEMOCAP_full_release; 4class (neu, hap+exc, sad, ang), 6class (+exc, fru), binary (per-emotion "
                   "targets), original (the original work's: neu, sad, ang, hap with exc dropped, sessions 1-4 "
                   "train, 5 test, per-emotion targets)")

    def collect(self, report: PrepareReport) -> list[Utterance]:
        utts = self._collect(report)
        if self.labels == "original":
            report.note("original protocol: exc dropped (not merged into hap); sessions 1-4 train, 5 test; no valid "
                        "split: `imo train` holds out a share of the training speakers (--valid-fraction). The "
                        "released split's 518 validation utterances all lie inside its 1,241 test utterances.")
        return utts

    def _collect(self, report: PrepareReport) -> list[Utterance]:
        sessions = sorted(p for p in self.root.glob("Session*") if p.is_dir())
        if not sessions:
            report.add("missing", self.root, "no Session1..Session5 folders; pass the IEMOCAP_full_release folder")
            return []
        utts: list[Utterance] = []
        for sdir in sessions:
            evals = sdir / "dialog" / "EmoEvaluation"
            for f in sorted(evals.glob("*.txt")):
                if is_hidden(f):
                    report.add("skipped", self.rel(f), "hidden file (macOS resource fork), not a label file")
                    continue
                dialog = f.stem
                text = self._transcript(sdir / "dialog" / "transcriptions" / f"{dialog}.txt", report)
                records = list(self._labels(f, report))
                for rec in records:
                    u = self._utterance(sdir, dialog, rec, text, report)
                    if u is not None:
                        utts.append(u)
                for uid in sorted(set(text) - {r["id"] for r in records}):
                    report.add("mismatched_id", f"{self.rel(sdir / 'dialog' / 'transcriptions' / (dialog + '.txt'))}",
                               f"{uid} has a transcript line but no EmoEvaluation label")
        return utts

    def _labels(self, path: Path, report: PrepareReport):
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.startswith("["):
                continue  # header, blank and per-annotator lines (C-E1:, A-F2: ...)
            m = EVAL_RE.match(line)
            if not m:
                report.add("skipped", f"{self.rel(path)}:{lineno}", f"label line not in the '[s - e]\\tid\\tcode\\t[v, a, d]' form: {line[:60]!r}")
                continue
            start, end, uid, code, v, a, d = m.groups()
            yield {"where": f"{self.rel(path)}:{lineno}", "id": uid, "code": code, "start": float(start),
                   "end": float(end), "vad": (float(v), float(a), float(d))}

    def _transcript(self, path: Path, report: PrepareReport) -> dict[str, str]:
        out: dict[str, str] = {}
        if not path.is_file():
            report.add("missing", self.rel(path), "transcription file missing; utterances get no text")
            return out
        for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            m = TRANS_RE.match(line)
            if not m or parse_utt_id(m.group(1)) is None:
                report.add("skipped", f"{self.rel(path)}:{lineno}", f"not a scored utterance: {line[:50]!r}")
                continue
            out[m.group(1)] = m.group(4).strip()
        return out

    def _utterance(self, sdir: Path, dialog: str, rec: dict, text: dict[str, str],
                   report: PrepareReport) -> Utterance | None:
        uid, code, where = rec["id"], rec["code"], rec["where"]
        info = parse_utt_id(uid)
        if info is None or info["dialog"] != dialog:
            report.add("mismatched_id", where, f"utterance id {uid!r} does not belong to dialog {dialog!r}")
            return None
        if code not in CODES:
            report.add("unknown_label", where, f"{uid}: emotion code {code!r} is not one of {', '.join(CODES)}")
            return None
        label = map_label(code, self.labels)
        if label is None:
            report.exclude(code)
            return None
        wav = sdir / "sentences" / "wav" / dialog / f"{uid}.wav"
        if not wav.is_file():
            report.add("missing", self.rel(wav), f"{uid}: audio file missing; utterance left out")
            return None
        avi = sdir / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
        video = None
        if avi.is_file():
            video = Segment(self.rel(avi), rec["start"], rec["end"])
        else:
            report.add("missing", self.rel(avi), f"{uid}: dialog video missing; utterance kept without video")
        if uid not in text:
            report.add("mismatched_id", where, f"{uid}: no line in the dialog's transcription; kept without text")
        v, a, d = rec["vad"]
        targets: dict = {"valence": v, "arousal": a, "dominance": d}
        if self.labels in ("binary", "original"):
            targets.update({e: int(label == e) for e in BINARY})
        splits = ORIGINAL_SPLIT if self.labels == "original" else SPLIT_OF_SESSION
        return Utterance(id=uid, label=label, split=splits.get(info["session"]), fold=info["session"],
                         speaker=info["speaker"], audio=Segment(self.rel(wav)), text=text.get(uid), video=video,
                         targets=targets, extra={"improvised": info["improvised"], "emotion_code": code})
