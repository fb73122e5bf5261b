"""A store write that runs out of room: one line, exit status 2, no half-written state, and re-running the
same command after freeing space resumes to exactly the store an uninterrupted run writes.

Two real ways to run out of room: a small tmpfs filled with ballast (ENOSPC; needs root to mount, skipped
otherwise) and RLIMIT_FSIZE in the `imo extract` process (EFBIG; works for any user)."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from extractors import build_extractor
from imo_pipeline.extract import estimate_bytes, extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from imo_pipeline.store.verify import verify_store
from scale_utils import committed, env, extract_cmd, make_audio_project

pytestmark = pytest.mark.slow
SHARD_MB = "0.002"   # ~13 fbank frames per shard: hundreds of small files, many commits


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> tuple[Path, Path]:
    """24 wav files and the reference store an uninterrupted run writes."""
    root = make_audio_project(tmp_path_factory.mktemp("full"), 24, model=False)
    ext = build_extractor("fbank", "audio", layers="all", device="cpu")
    extract(load_manifest(root / "m.jsonl"), ext, root / "ref.zarr", budget=3, progress=False, shard_mb=float(SHARD_MB))
    return root, root / "ref.zarr"


def command(root: Path, out: Path) -> list[str]:
    cmd = extract_cmd(root, out, encoder="fbank")
    cmd[cmd.index("--shard-mb") + 1] = SHARD_MB
    return cmd


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**env(), "PYTHONDONTWRITEBYTECODE": "1"}, **kw)


def assert_clean_failure(r: subprocess.CompletedProcess, store: Path, ref: Path, message: str) -> None:
    """One `error:` line and status 2; no temp file or lock left; what was committed equals the reference."""
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1].startswith(f"error: {message}")
    assert not list(store.rglob("*.partial")) and not list(store.glob("*.lock"))
    partial, want = open_store(store, allow_incomplete=True), open_store(ref)
    assert partial.parts_status[0].status == "writing"
    for uid in partial.ids:
        assert np.array_equal(partial.get(uid), want.get(uid))


def assert_resumed_exactly(r: subprocess.CompletedProcess, store: Path, ref: Path, had: int) -> None:
    assert r.returncode == 0, r.stderr
    assert f"already present {had}" in r.stdout
    got, want = open_store(store).check(), open_store(ref)
    assert got.ids == want.ids and not got.failed
    for (a, x), (b, y) in zip(got, want):
        assert a == b and np.array_equal(x, y)
    assert np.array_equal(got.pooled(), want.pooled())
    assert not verify_store(store, progress=False).damaged


def test_file_size_limit_mid_run_then_rerun_resumes_exactly(project):
    root, ref = project
    store = root / "efbig.zarr"

    def limit():  # files above 9000 bytes fail with EFBIG (the part's zarr.json outgrows it mid-run)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (9000, 9000))

    r = run(command(root, store), preexec_fn=limit)
    assert_clean_failure(r, store, ref, f"file size limit reached writing {store} (File too large)")
    had = committed(store)
    assert 0 < had < 24
    assert_resumed_exactly(run(command(root, store)), store, ref, had)


def test_disk_full_mid_run_then_rerun_after_freeing_space_resumes_exactly(project, small_fs):
    root, ref = project
    store = small_fs / "audio.zarr"
    need = sum(f.stat().st_blocks * 512 for f in ref.rglob("*") if f.is_file())
    vfs = os.statvfs(small_fs)
    ballast = small_fs / "ballast"
    ext = build_extractor("fbank", "audio", layers="all", device="cpu")
    man = load_manifest(root / "m.jsonl")
    raw = estimate_bytes(ext, [ext.measure(u, man) for u in man])   # what the up-front check asks for
    assert raw < need // 2          # tiny shards: files and metadata take most of the room
    room = (raw + need) // 2        # passes the up-front estimate, runs out mid-run
    ballast.write_bytes(b"\0" * (vfs.f_bavail * vfs.f_frsize - room))

    r = run(command(root, store))
    assert_clean_failure(r, store, ref, f"no space left on device writing {store}: free space and re-run "
                                        f"the same command; it resumes")
    had = committed(store)
    assert 0 < had < 24
    ballast.unlink()
    assert_resumed_exactly(run(command(root, store)), store, ref, had)
