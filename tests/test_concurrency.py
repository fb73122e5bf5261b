"""Several jobs writing one cache folder: shard jobs side by side, clashes on one part refused, stale locks."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from imo_pipeline.errors import LockError
from imo_pipeline.store import open_store
from imo_pipeline.store.lock import EMPTY_LOCK_SECONDS, PartLock
from scale_utils import committed, env, extract_cmd, make_audio_project, run

N_UTTS = 96
P0, P1 = "part-00000-of-00002", "part-00001-of-00002"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_audio_project(tmp_path_factory.mktemp("conc"), N_UTTS)


def _start(cmd):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())


@pytest.mark.slow   # concurrent `imo` processes
def test_two_shard_jobs_at_once_into_one_cache_folder(project):
    store = project / "cache" / "audio.zarr"
    jobs = [_start(extract_cmd(project, store, "--shard", f"{i}/2")) for i in range(2)]
    both_locked = False
    while any(j.poll() is None for j in jobs):
        both_locked |= (store / f"{P0}.lock").exists() and (store / f"{P1}.lock").exists()
        time.sleep(0.002)
    outs = [j.communicate() for j in jobs]
    assert [j.returncode for j in jobs] == [0, 0], outs
    assert both_locked, "the two jobs never wrote at the same time; the test proves nothing"

    whole = run(extract_cmd(project, "single.zarr"))
    assert whole.returncode == 0, whole.stderr
    a, b = open_store(project / "single.zarr"), open_store(store)
    assert b.complete and [p.status for p in b.parts_status] == ["complete", "complete"]
    assert len(b.ids) == len(set(b.ids)) == N_UTTS and sorted(b.ids) == sorted(a.ids)
    for uid in a.ids:  # other batch-mates, so equal within fp16 rounding rather than bit for bit
        np.testing.assert_allclose(b.get(uid).astype(np.float32), a.get(uid).astype(np.float32), atol=2e-3, rtol=2e-3)
    assert not list(store.glob("*.lock"))


@pytest.mark.slow   # concurrent `imo` processes
def test_second_job_on_a_part_being_written_is_refused(project):
    store = project / "clash.zarr"
    first = _start(extract_cmd(project, store, "--shard", "0/2"))
    lock = store / f"{P0}.lock"
    while first.poll() is None and not (lock.exists() and committed(store, P0) > 0):
        time.sleep(0.002)
    first.send_signal(signal.SIGSTOP)  # alive and holding the lock, mid-part
    try:
        assert lock.exists(), first.communicate()
        second = run(extract_cmd(project, store, "--shard", "0/2"))
        assert second.returncode == 2
        msg = second.stderr.strip().splitlines()[-1]
        assert msg.startswith("error: store part is locked by pid ") and str(lock) in msg
        assert f"delete {lock} and re-run" in msg
        assert json.loads(lock.read_text())["pid"] == first.pid

        # meanwhile: the other part runs fine, and readers see only complete parts
        other = run(extract_cmd(project, store, "--shard", "1/2"))
        assert other.returncode == 0, other.stderr
        st = open_store(store)
        p0, p1 = st.parts_status
        assert (p0.status, p0.locked, p1.status) == ("writing", True, "complete")
        assert len(st) == p1.n_committed and all(uid not in st for uid in open_store(store, True).ids[:p0.n_committed])
        shown = run([sys.executable, "-m", "imo_pipeline", "inspect", str(store)])
        assert "parts        1/2 complete" in shown.stdout
        assert f"part 0: writing, {committed(store, P0)}/{p0.n_expected} utterances committed (locked" in shown.stdout
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate()
    assert first.returncode == 0, err
    st = open_store(store)
    assert st.complete and len(st) == N_UTTS


@pytest.mark.slow   # concurrent `imo` processes
def test_inspect_names_missing_parts(project):
    store = project / "half.zarr"
    assert run(extract_cmd(project, store, "--shard", "1/3")).returncode == 0
    shown = run([sys.executable, "-m", "imo_pipeline", "inspect", str(store)])
    assert "parts        1/3 complete" in shown.stdout
    assert "part 0: missing" in shown.stdout and "part 2: missing" in shown.stdout and "part 1:" not in shown.stdout
    st = open_store(store)
    assert not st.complete and len(st) == st.parts_status[1].n_expected


def _lock(tmp_path, record=None) -> Path:
    path = tmp_path / "s.zarr" / f"{P0}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record) if record is not None else "")
    return path


def test_lock_of_another_host_is_refused_with_the_fix(tmp_path):
    path = _lock(tmp_path, {"pid": 4242, "host": "node17", "started": 1.0, "at": 1.0})
    with pytest.raises(LockError) as e:
        PartLock(path).acquire()
    assert f"locked by pid 4242 on node17: {path}" in str(e.value) and f"delete {path} and re-run" in str(e.value)
    path.unlink()
    with PartLock(path) as lock:
        assert json.loads(path.read_text())["pid"] == os.getpid() and lock.took_over is None
    assert not path.exists()


def test_stale_locks_are_taken_over(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os, psutil; p = psutil.Process(); print(p.pid, p.create_time())"],
                          capture_output=True, text=True).stdout.split()
    record = {"pid": int(dead[0]), "host": socket.gethostname(), "started": float(dead[1]), "at": 1.0}
    path = _lock(tmp_path, record)
    with PartLock(path) as lock:
        assert lock.took_over == record
    # an empty lock: taken over only once it is clearly abandoned (its writer died between create and write)
    path = _lock(tmp_path)
    with pytest.raises(LockError, match="an unknown job"):
        PartLock(path).acquire()
    old = time.time() - EMPTY_LOCK_SECONDS - 5
    os.utime(path, (old, old))
    with PartLock(path) as lock:
        assert lock.took_over == {}
    # a live process on this host (ourselves) is never taken over
    with PartLock(path):
        with pytest.raises(LockError, match=f"locked by pid {os.getpid()}"):
            PartLock(path).acquire()


RACE = """
import sys, time
from pathlib import Path
from imo_pipeline.errors import LockError
from imo_pipeline.store.lock import PartLock
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
try:
    with PartLock(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(1.5)
except LockError:
    print("refused", flush=True)
"""


@pytest.mark.slow   # concurrent `imo` processes
def test_two_jobs_taking_over_one_stale_lock_get_one_winner(tmp_path):
    for trial in range(3):
        path = _lock(tmp_path, {"pid": 999999, "host": socket.gethostname(), "started": 1.0, "at": 1.0})
        go = time.time() + 1.0
        procs = [subprocess.Popen([sys.executable, "-c", RACE, str(path), str(go)], stdout=subprocess.PIPE, text=True)
                 for _ in range(3)]
        results = sorted(p.communicate()[0].strip() for p in procs)
        assert results == ["held", "refused", "refused"], f"trial {trial}: {results}"
