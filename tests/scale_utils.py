"""Helpers for the scale-out tests: a generated audio project and `imo extract` command lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from audio_utils import save_tiny_speech_model, tone, write_manifest_lines


def make_audio_project(root: Path, n: int, seed: int = 7, model: bool = True,
                       seconds: tuple[float, float] = (0.3, 2.5)) -> Path:
    """``root/m.jsonl`` over ``n`` wav files at mixed rates (+ a tiny wav2vec2 in ``root/model``)."""
    root.mkdir(parents=True, exist_ok=True)
    if model:
        save_tiny_speech_model(root / "model", "wav2vec2", "layer")
    (root / "media").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        sr = [16000, 22050, 8000][i % 3]
        sf.write(root / "media" / f"u{i:03d}.wav", tone(float(rng.uniform(*seconds)), sr, 120 + 7 * i, seed=i), sr)
        lines.append({"id": f"u{i:03d}", "label": "neu", "audio": f"media/u{i:03d}.wav"})
    write_manifest_lines(root / "m.jsonl", lines)
    return root


def extract_cmd(root: Path, out: str | Path, *extra: str, encoder: str | None = None) -> list[str]:
    """`imo extract` over ``root``'s manifest into ``root/out`` (tiny model, all layers, small blocks)."""
    return [sys.executable, "-m", "imo_pipeline", "extract", "-m", "audio", "--manifest", str(root / "m.jsonl"),
            "--encoder", encoder or str(root / "model"), "--layers", "all", "--device", "cpu",
            "--batch-seconds", "3", "--shard-mb", "0.01", "--out", str(root / out), "--no-progress", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=env())


def committed(store: Path, part: str = "part-00000-of-00001") -> int:
    """Utterances committed in one part, read straight from its attrs (0 if not there yet)."""
    try:
        return json.loads((store / part / "zarr.json").read_text())["attributes"]["committed"]["n"]
    except (OSError, ValueError, KeyError):
        return 0
