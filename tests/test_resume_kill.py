"""Exact resume: a real `imo extract` process SIGKILLed at random moments, then re-run to the end,
gives the same store as an uninterrupted run (same ids, once each, identical values)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_utils import save_tiny_speech_model, tone, write_manifest_lines
from imo_pipeline.store import open_store

N_UTTS = 64
PART = "part-00000-of-00001"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    save_tiny_speech_model(root / "model", "wav2vec2", "layer")
    (root / "media").mkdir()
    rng = np.random.default_rng(7)
    lines = []
    for i in range(N_UTTS):
        sr = [16000, 22050, 8000][i % 3]
        sf.write(root / "media" / f"u{i:02d}.wav", tone(float(rng.uniform(0.3, 2.5)), sr, 120 + 7 * i, seed=i), sr)
        lines.append({"id": f"u{i:02d}", "label": "neu", "audio": f"media/u{i:02d}.wav"})
    write_manifest_lines(root / "m.jsonl", lines)
    return root


def _cmd(root: Path, out: str) -> list[str]:
    # tiny shards (~50 frames) so the job commits a block every batch or two: many moments to die in
    return [sys.executable, "-m", "imo_pipeline", "extract", "-m", "audio", "--manifest", str(root / "m.jsonl"),
            "--encoder", str(root / "model"), "--layers", "all", "--device", "cpu", "--batch-seconds", "3",
            "--shard-mb", "0.01", "--out", str(root / out), "--no-progress"]


def _committed(store: Path) -> int:
    try:
        return json.loads((store / PART / "zarr.json").read_text())["attributes"]["committed"]["n"]
    except (OSError, ValueError, KeyError):
        return 0


def _run_and_kill(cmd: list[str], store: Path, target: int, extra: float) -> tuple[int, int]:
    """Start ``cmd``; SIGKILL it ``extra`` s after the store has ``target`` committed utterances.
    Returns (returncode, committed utterances seen at the kill)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while proc.poll() is None and _committed(store) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(extra)
    seen = _committed(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode, seen


def test_sigkill_at_random_moments_then_rerun_equals_uninterrupted_run(project):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    ref = subprocess.run(_cmd(project, "ref.zarr"), capture_output=True, text=True, env=env)
    assert ref.returncode == 0, ref.stderr

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = project / "killed.zarr"
    kills = []
    # one kill while the process is still starting up, then kills after random numbers of committed utterances
    plans = [(0, rng.uniform(0.0, 2.0))] + [(None, rng.uniform(0.0, 0.05)) for _ in range(4)]
    for target, extra in plans:
        if target is None:
            have = _committed(store)
            if have >= N_UTTS - 12:
                break
            target = rng.randint(have + 1, N_UTTS - 12)
        rc, seen = _run_and_kill(_cmd(project, "killed.zarr"), store, target, extra)
        kills.append((target, round(extra, 3), rc, seen))
    print("kills (target, delay, returncode, committed at kill):", kills)
    killed_mid_run = [k for k in kills if k[2] == -signal.SIGKILL and 0 < k[3] < N_UTTS]
    assert len(killed_mid_run) >= 2, f"seed {seed}: kills did not land inside extraction: {kills}"

    final = subprocess.run(_cmd(project, "killed.zarr"), capture_output=True, text=True, env=env)
    assert final.returncode == 0, f"seed {seed}, kills {kills}: {final.stderr}"
    assert "already present" in final.stdout

    a, b = open_store(project / "ref.zarr"), open_store(store)
    assert b.complete and not b.failed
    assert len(b.ids) == len(set(b.ids)) == N_UTTS, f"seed {seed}, kills {kills}"
    assert sorted(b.ids) == sorted(a.ids)
    for uid in a.ids:
        assert np.array_equal(a.get(uid), b.get(uid)), f"{uid} differs (seed {seed}, kills {kills})"
    order = [b.index_of(u) for u in a.ids]
    assert np.array_equal(a.pooled(), b.pooled()[order])
    assert np.array_equal(a.lengths(), b.lengths()[order])
    # nothing left behind: no lock, no half-written temp files
    assert not list(store.glob("*.lock")) and not list(store.rglob("*.partial"))
