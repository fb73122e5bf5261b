"""Exact resume: a real `imo extract` process SIGKILLed at random moments, then re-run to the end,
gives the same store as an uninterrupted run (same ids, once each, identical values)."""

import random
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from imo_pipeline.store import open_store
from scale_utils import committed, env, extract_cmd, make_audio_project, run

pytestmark = pytest.mark.slow   # real `imo extract` processes killed and re-run

N_UTTS = 64


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_audio_project(tmp_path_factory.mktemp("resume"), N_UTTS)


def _run_and_kill(cmd: list[str], store: Path, target: int, extra: float) -> tuple[int, int]:
    """Start ``cmd``; SIGKILL it ``extra`` s after the store has ``target`` committed utterances.
    Returns (returncode, committed utterances seen at the kill)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
    deadline = time.monotonic() + 120
    while proc.poll() is None and committed(store) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(extra)
    seen = committed(store)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return proc.returncode, seen


def test_sigkill_at_random_moments_then_rerun_equals_uninterrupted_run(project):
    ref = run(extract_cmd(project, "ref.zarr"))
    assert ref.returncode == 0, ref.stderr

    seed = random.randrange(2**32)
    rng = random.Random(seed)
    store = project / "killed.zarr"
    kills = []
    # one kill while the process is still starting up, then kills after random numbers of committed utterances
    plans = [(0, rng.uniform(0.0, 2.0))] + [(None, rng.uniform(0.0, 0.05)) for _ in range(4)]
    for target, extra in plans:
        if target is None:
            have = committed(store)
            if have >= N_UTTS - 12:
                break
            target = rng.randint(have + 1, have + max(1, (N_UTTS - 12 - have) // 2))   # leave room for more kills
        rc, seen = _run_and_kill(extract_cmd(project, "killed.zarr"), store, target, extra)
        kills.append((target, round(extra, 3), rc, seen))
    print("kills (target, delay, returncode, committed at kill):", kills)
    killed_mid_run = [k for k in kills if k[2] == -signal.SIGKILL and 0 < k[3] < N_UTTS]
    assert len(killed_mid_run) >= 2, f"seed {seed}: kills did not land inside extraction: {kills}"

    final = run(extract_cmd(project, "killed.zarr"))
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
