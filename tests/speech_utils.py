"""Real recorded speech for tests, and small releases for the media, emobox and lhotse preparers.

Real speech: Debian's ``pocketsphinx-testdata`` ships recordings with their transcripts — five
LibriVox sentences read by one reader (Sense and Sensibility, 3-7 s each) and five short "cards"
phrases by another ("ten of clubs", 1-3.5 s). CI installs it (``apt-get install -y
pocketsphinx-testdata``); elsewhere tests that need it are skipped with that hint (under CI they fail).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

TESTDATA = Path("/usr/share/pocketsphinx/test/data")


def _transcripts(folder: Path, name: str) -> list[tuple[Path, str]]:
    out = []
    for line in (folder / name).read_text().splitlines():
        m = re.match(r"\s*<s>(.*)</s>\s*\((.+)\)\s*$", line)
        if m:
            out.append((folder / f"{m.group(2)}.wav", " ".join(m.group(1).split())))
    return sorted(out)


def speech_clips() -> list[tuple[Path, str]]:
    """Ten real recordings (16 kHz mono) with known text, LibriVox sentences and card phrases interleaved."""
    if not (TESTDATA / "librivox" / "transcription").is_file():
        if os.environ.get("CI"):
            pytest.fail("CI must install the Debian package pocketsphinx-testdata (real recorded speech): "
                        "apt-get install -y pocketsphinx-testdata")
        pytest.skip("needs real recorded speech: apt-get install pocketsphinx-testdata")
    libri = _transcripts(TESTDATA / "librivox", "transcription")
    cards = _transcripts(TESTDATA / "cards", "cards.transcription")
    return [c for pair in zip(libri, cards) for c in pair]


def build_recording(path: Path, clips, seed: int = 0, rate: int = 16000, channels: int = 1,
                    gaps=(1.2, 2.0), lead: float = 1.0) -> list[tuple[float, float, str]]:
    """Clips joined with random pauses (plus faint noise) into one file; returns each clip's (start, end, text)."""
    rng = np.random.default_rng(seed)
    parts, truth, t = [np.zeros(int(lead * 16000), np.float32)], [], lead
    for wav, text in clips:
        x, sr = sf.read(wav, dtype="float32")
        assert sr == 16000
        parts.append(x)
        truth.append((t, t + len(x) / 16000, text))
        gap = int(rng.uniform(*gaps) * 16000)
        parts.append(np.zeros(gap, np.float32))
        t += (len(x) + gap) / 16000
    y = np.concatenate(parts)
    y += 0.002 * rng.standard_normal(len(y)).astype(np.float32)
    if rate != 16000:
        import soxr
        y = soxr.resample(y, 16000, rate).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.repeat(y[:, None], channels, axis=1) if channels > 1 else y, rate)
    return truth


# --- small releases for the preparer contract (tests/contracts.py) ---------------------------------

def media_release(folder: Path) -> Path:
    """A folder of two recordings of real speech (one in a subfolder) and a text file."""
    clips = speech_clips()
    build_recording(folder / "talk.wav", clips[:2])
    build_recording(folder / "day 2" / "call.flac", clips[2:3], seed=1)
    (folder / "notes.txt").write_text("not a recording")
    return folder


def emobox_release(folder: Path) -> Path:
    """EmoBox's ``data/cafe`` as published (2 folds here), audio under ``downloads/``; returns ``data/``."""
    data = folder / "data"
    recs = []
    for spk in (1, 2, 3, 4):
        for emo, sub in (("c", "Col\u0160re/Faible"), ("j", "Joie/Faible"), ("n", "Neutre")):
            key = f"cafe-{spk:02d}-{emo.upper()}-1-1"
            recs.append({"key": key, "dataset": "cafe", "wav": f"downloads/cafe/CaFE_48k/{sub}/{key[5:]}.wav",
                         "type": "raw", "sample_rate": 48000, "num_frame": 168000.0, "task": "category",
                         "length": 3.5, "emo": emo, "channel": 1})
    write = lambda p, rs: (p.parent.mkdir(parents=True, exist_ok=True),  # noqa: E731
                           p.write_text("".join(json.dumps(r) + "\n" for r in rs)))
    write(data / "cafe" / "cafe.jsonl", recs)
    (data / "cafe" / "label_map.json").write_text(json.dumps({"c": "Angry", "j": "Happy", "n": "Neutral"}))
    for k in (1, 2):
        test = [r for r in recs if int(r["key"][5:7]) in (2 * k - 1, 2 * k)]
        write(data / "cafe" / f"fold_{k}" / f"cafe_test_fold_{k}.jsonl", test)
        write(data / "cafe" / f"fold_{k}" / f"cafe_train_fold_{k}.jsonl", [r for r in recs if r not in test])
    return data


def lhotse_release(folder: Path) -> Path:
    """Two cuts with supervisions (text, speaker, custom emotion) on a generated WAV; returns the cuts file."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(48000) / 16000
    sf.write(folder / "rec.wav", (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 16000)
    rec = Recording.from_file(folder / "rec.wav", recording_id="rec")
    cuts = [MonoCut(f"rec-{i}", 1.5 * i, 1.5, 0, recording=rec, supervisions=[SupervisionSegment(
        f"rec-{i}", "rec", 0.0, 1.5, channel=0, text=f"line {i}", speaker="s1", custom={"emotion": e})])
        for i, e in enumerate(("hap", "sad"))]
    CutSet.from_cuts(cuts).to_file(folder / "cuts.jsonl.gz")
    return folder / "cuts.jsonl.gz"
