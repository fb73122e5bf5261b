"""Extraction on a real dask.distributed LocalCluster of worker processes (2 workers, 1 thread each)."""

import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

from extractors import build_extractor
from imo_pipeline.distributed import extract_on_cluster
from imo_pipeline.job import ExtractJob
from imo_pipeline.extract import extract
from imo_pipeline.manifest import ShardSpec, load_manifest
from imo_pipeline.store import open_store
from imo_pipeline.store.lock import PartLock
from audio_utils import write_manifest_lines
from media_utils import moving_face_frames, write_frames_folder
from scale_utils import make_audio_project, run

pytestmark = pytest.mark.slow   # dask clusters of worker processes

N_UTTS = 40


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_audio_project(tmp_path_factory.mktemp("dist"), N_UTTS)


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=logging.ERROR) as c:
        yield c


@pytest.fixture(scope="module")
def reference(project):
    """The same manifest extracted by one process with the tiny wav2vec2."""
    ext = build_extractor(str(project / "model"), "audio", layers="all", device="cpu")
    extract(load_manifest(project / "m.jsonl"), ext, project / "ref.zarr", budget=3, progress=False)
    return open_store(project / "ref.zarr")


def _job(project, out, encoder=None) -> ExtractJob:
    return ExtractJob(manifest=str(project / "m.jsonl"), encoder=encoder or str(project / "model"), modality="audio",
                      out=str(project / out), layers="all", device="cpu", budget=3, shard_mb=0.01)


def _same(store, reference, exact=False):
    assert store.complete and len(store.ids) == len(set(store.ids)) == N_UTTS
    assert sorted(store.ids) == sorted(reference.ids)
    for uid in reference.ids:
        a, b = reference.get(uid).astype(np.float32), store.get(uid).astype(np.float32)
        if exact:
            assert np.array_equal(a, b), uid
        else:  # batch-mates differ between parts: equal within fp16 rounding
            np.testing.assert_allclose(b, a, atol=2e-3, rtol=2e-3, err_msg=uid)


def test_cli_local_cluster_in_parts_identical_to_one_process(project):
    cmd = [sys.executable, "-m", "imo_pipeline", "extract", "-m", "audio", "--manifest", str(project / "m.jsonl"),
           "--encoder", "fbank", "--no-progress", "--shard-mb", "0.05"]
    one = run(cmd + ["--out", str(project / "fb1.zarr")])
    many = run(cmd + ["--out", str(project / "fbN.zarr"), "--workers", "2", "--parts", "3"])
    assert one.returncode == 0 and many.returncode == 0, many.stderr
    assert "3/3 parts on 2 worker(s): done 40, already present 0, failed 0, parts failed 0" in many.stdout
    st = open_store(project / "fbN.zarr")
    assert st.meta.n_parts == 3 and [p.status for p in st.parts_status] == ["complete"] * 3
    _same(st, open_store(project / "fb1.zarr"), exact=True)  # fbank runs utterances singly: bit for bit

    clash = run(cmd + ["--out", str(project / "x.zarr"), "--workers", "2", "--shard", "1/2"])
    assert clash.returncode == 2 and "--shard 1/2 runs one part as a batch job" in clash.stderr


def test_one_task_per_part_encoder_loaded_once_per_worker(project, cluster, reference):
    events = []
    result = extract_on_cluster(_job(project, "w2v.zarr"), scheduler=cluster.scheduler_address, parts=4,
                                progress=False, on_progress=events.append)
    assert sorted(result.parts) == [0, 1, 2, 3] and not result.part_errors
    assert result.done == N_UTTS and not result.failed
    pids = {r.pid for r in result.parts.values()}
    assert len(pids) == 2 and os.getpid() not in pids  # both worker processes got parts
    loads = [r.pid for r in result.parts.values() if r.loaded_encoder]
    assert sorted(loads) == sorted(pids)  # the encoder was built once in each worker, then reused
    assert events and {e["pid"] for e in events} <= pids and sum(e["n"] for e in events) <= N_UTTS
    _same(open_store(project / "w2v.zarr"), reference)


def test_a_failed_part_is_reported_and_the_others_finish(project, cluster):
    out = project / "locked.zarr"
    lock = PartLock(out / "part-00001-of-00003.lock").acquire()  # a live job (us) holds part 1
    try:
        result = extract_on_cluster(_job(project, out, "fbank"), scheduler=cluster.scheduler_address, parts=3,
                                    retries=1, progress=False)
    finally:
        lock.release()
    assert sorted(result.parts) == [0, 2] and list(result.part_errors) == [1]
    assert f"locked by pid {os.getpid()}" in result.part_errors[1] and str(lock.path) in result.part_errors[1]
    st = open_store(out)
    assert [p.status for p in st.parts_status] == ["complete", "missing", "complete"]

    again = extract_on_cluster(_job(project, out, "fbank"), scheduler=cluster.scheduler_address, progress=False)
    assert again.n_parts == 3 and not again.part_errors  # the store's part count is kept
    assert again.parts[1].result.done == len(load_manifest(project / "m.jsonl").shard(ShardSpec(1, 3)))
    assert again.parts[0].result.done == 0 and again.parts[2].result.done == 0
    assert open_store(out).complete and len(open_store(out)) == N_UTTS


def test_worker_killed_mid_part_the_part_resumes_elsewhere(project, cluster, reference):
    killed = []

    def kill_first(event):
        if not killed and event["n"] > 0:
            killed.append(event)
            os.kill(event["pid"], signal.SIGKILL)  # node lost mid-part

    result = extract_on_cluster(_job(project, "killed.zarr"), scheduler=cluster.scheduler_address, parts=2,
                                progress=False, on_progress=kill_first)
    assert killed and not result.part_errors and sorted(result.parts) == [0, 1]
    hit = result.parts[killed[0]["part"]]
    assert hit.pid != killed[0]["pid"]  # re-run by a live worker ...
    assert hit.result.skipped > 0  # ... resuming after the blocks the dead one committed
    _same(open_store(project / "killed.zarr"), reference)


def test_cli_cluster_passes_video_options_to_the_workers(tmp_path):
    for name in ("a", "b", "c"):
        write_frames_folder(tmp_path / name, moving_face_frames(12))
    write_manifest_lines(tmp_path / "v.jsonl", [{"id": n, "label": "x", "frames": n} for n in ("a", "b", "c")])
    cmd = [sys.executable, "-m", "imo_pipeline", "extract", "-m", "video", "--manifest", str(tmp_path / "v.jsonl"),
           "--encoder", "pixels", "--no-face", "--fps", "10", "--max-frames", "4", "--encoder-opt", "size=16",
           "--no-progress"]
    one = run(cmd + ["--out", str(tmp_path / "one.zarr")])
    many = run(cmd + ["--out", str(tmp_path / "many.zarr"), "--workers", "1", "--parts", "2"])
    assert one.returncode == 0 and many.returncode == 0, many.stderr
    st = open_store(tmp_path / "many.zarr")
    assert st.meta.frame_rate == 10.0 and st.meta.encoder["face"] is False and st.meta.encoder["max_frames"] == 4
    assert st.meta.encoder["size"] == 16
    assert st.meta.encoder_fingerprint == open_store(tmp_path / "one.zarr").meta.encoder_fingerprint
    for n in ("a", "b", "c"):
        assert st.get(n).shape == (4, 1, 16 * 16)
        np.testing.assert_array_equal(st.get(n), open_store(tmp_path / "one.zarr").get(n))
