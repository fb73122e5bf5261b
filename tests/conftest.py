"""Shared fixtures: generated audio sets, tiny speech models (helpers live in audio_utils.py), one torch
thread, and the `imo` command line run in this process."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(2)

from audio_utils import save_tiny_speech_model, tone, write_manifest_lines  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny wav2vec2 (layer and group norm), HuBERT, WavLM and data2vec-audio models."""
    root = tmp_path_factory.mktemp("models")
    specs = {"wav2vec2": ("wav2vec2", "layer"), "wav2vec2-group": ("wav2vec2", "group"),
             "hubert": ("hubert", "layer"), "wavlm": ("wavlm", "layer"), "data2vec-audio": ("data2vec-audio", "layer")}
    return {name: save_tiny_speech_model(root / name, kind, norm) for name, (kind, norm) in specs.items()}


@pytest.fixture
def audio_set(tmp_path) -> tuple[Path, list[dict]]:
    """A manifest over wav/flac/ogg files at 8/16/22.05/44.1 kHz, mono and stereo, plus segments of one long file."""
    media = tmp_path / "media"
    media.mkdir()
    lines = []
    formats = [("wav", 16000, 1), ("flac", 22050, 2), ("ogg", 44100, 1), ("wav", 8000, 2), ("flac", 16000, 1)]
    for i, (ext, sr, ch) in enumerate(formats * 2):
        name = f"clip{i}.{ext}"
        sf.write(media / name, tone(0.4 + 0.37 * i, sr, 150 + 20 * i, ch, seed=i), sr)
        lines.append({"id": f"clip{i}", "label": ["ang", "hap", "neu", "sad"][i % 4], "split": "train",
                      "audio": {"path": f"media/{name}"}})
    sf.write(media / "session.wav", tone(12.0, 16000, 180, 2, seed=99), 16000)
    for j, (s, e) in enumerate([(0.0, 1.5), (1.5, 4.2), (5.0, 5.3), (6.0, 11.9)]):
        lines.append({"id": f"seg{j}", "label": "neu", "split": "test",
                      "audio": {"path": "media/session.wav", "start": s, "end": e}})
    return write_manifest_lines(tmp_path / "manifest.jsonl", lines), lines


@pytest.fixture
def one_thread():
    """One torch thread for the test (tiny models run fastest so, and the CPU is shared with other test
    processes). Request it, or import ``one_thread`` from store_utils to apply it to every test of a module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def error(self) -> str:
        """The last stderr line (where `imo` puts its one-line ``error: ...``)."""
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


@pytest.fixture
def imo(capsys, monkeypatch):
    """``imo(*args, cwd=None)``: the real `imo` entry point (``imo_pipeline.cli.run``, as the console script
    calls it) in this process, which saves the interpreter start of a subprocess; returns the exit
    status and the captured output."""
    from imo_pipeline.cli import run

    def call(*args: str, cwd: Path | None = None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["imo", *map(str, args)])
        capsys.readouterr()
        try:
            run()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return call


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MB tmpfs mounted for the test (root only)."""
    mnt = tmp_path / "fs"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
