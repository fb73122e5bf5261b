"""`imo train` / `imo evaluate` as written, in a project folder with an imo.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from heads import HEADS
from store_utils import make_partial_info_set

SMALL = ["--head-opt", "d_model=16", "--head-opt", "n_heads=2", "--batch-size", "16", "--lr", "3e-3", "--no-progress"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("proj")
    manifest, _ = make_partial_info_set(root / "cache", per_class=10, modalities=("audio", "text"), folds=2, seed=5)
    manifest.rename(root / "m.jsonl")
    (root / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n')
    return root


def imo(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)


def test_train_and_evaluate_as_written(project):
    r = imo(project, "train", "--modalities", "a,t", "--out", "runs/at", "--epochs", "3", *SMALL)
    assert r.returncode == 0, r.stderr
    assert "best epoch" in r.stdout and "test: wa" in r.stdout
    assert "loading into memory" in r.stderr  # the memory estimate is printed
    cfg = json.loads((project / "runs/at/config.json").read_text())
    assert cfg["stores"] == {"audio": str(project / "cache/audio.zarr"), "text": str(project / "cache/text.zarr")}
    assert cfg["store_meta"]["audio"]["encoder"]["type"] == "synthetic"
    assert cfg["preprocess"]["audio"] == {"layers": [1], "downsample": 4, "dtype": "float16"}
    r = imo(project, "evaluate", "runs/at", "--split", "test")
    assert r.returncode == 0, r.stderr
    assert "f1_macro" in r.stdout and "precision" in r.stdout and "ang" in r.stdout
    assert (project / "runs/at/eval-test.json").is_file() and (project / "runs/at/confusion_matrix-test.png").is_file()


def test_stop_and_resume_from_the_command_line(project):
    r = imo(project, "train", "-m", "t", "--out", "runs/t", "--epochs", "3", "--stop-after", "1", *SMALL)
    assert r.returncode == 0 and "re-run the same command to resume" in r.stderr
    r = imo(project, "train", "-m", "t", "--out", "runs/t", "--epochs", "3", *SMALL)
    assert r.returncode == 0 and "resuming" in r.stderr and "after epoch 1" in r.stderr
    assert len((project / "runs/t/metrics.jsonl").read_text().splitlines()) == 3


def test_folds_report_each_fold_and_mean_std(project):
    r = imo(project, "train", "-m", "a,t", "--head", "concat", "--head-opt", "hidden=16", "--out", "runs/cv",
            "--folds", "fold", "--epochs", "2", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "Ses01" in r.stdout and "Ses02" in r.stdout and "mean ± std" in r.stdout
    assert (project / "runs/cv/fold-Ses01/best.safetensors").is_file()


@pytest.mark.parametrize("args,message", [
    (["-m", "a,v", "--out", "runs/x"], "no video store at"),
    (["-m", "a", "--out", "runs/x", "--head", "nope"], f"unknown head 'nope'; valid names: {', '.join(HEADS.names())}"),
    (["-m", "a,t", "--out", "runs/x", "--head", "probe"], "takes 1 modality"),
    (["-m", "a", "--out", "runs/x", "--store", "a"], "--store 'a': expected KEY=VALUE"),
    (["-m", "a", "--out", "runs/x", "--task", "ranking"], "--task 'ranking': use one of classification, binary, regression"),
])
def test_errors_are_one_line_with_status_2(project, args, message):
    r = imo(project, "train", *args, "--epochs", "1", "--no-progress")
    assert r.returncode == 2, (r.stdout, r.stderr)
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last


def test_head_help_lists_the_registry():
    """`imo train --help` names the heads without importing torch; the list is the registry's."""
    from heads import HEADS
    from imo_pipeline.registry import declared_names

    assert declared_names("heads", "register_head") == HEADS.names()
    from extractors import EXTRACTORS
    assert declared_names("extractors", "register_extractor") == EXTRACTORS.names()
