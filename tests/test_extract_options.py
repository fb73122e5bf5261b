"""`imo extract` options: every bad value refused in one line (exit 2) before anything is written; the
`--encoder-opt KEY=VALUE` family options cast, checked and recorded in the store; the ExtractJob that
carries them to the local and the cluster path; devices resolved once."""

import dataclasses

import numpy as np
import pytest
import soundfile as sf

from audio_utils import tone, write_manifest_lines
from imo_pipeline.errors import ConfigError
from imo_pipeline.job import ExtractJob, encoder_options
from imo_pipeline.manifest import ShardSpec
from imo_pipeline.store import open_store
from media_utils import moving_face_frames, write_frames_folder


@pytest.fixture
def audio_dir(tmp_path):
    (tmp_path / "media").mkdir()
    for i in range(3):
        sf.write(tmp_path / "media" / f"u{i}.wav", tone(0.3 + 0.2 * i, 16000, seed=i), 16000)
    write_manifest_lines(tmp_path / "m.jsonl", [{"id": f"u{i}", "label": "neu", "audio": f"media/u{i}.wav"}
                                                for i in range(3)])
    return tmp_path


BASE = ("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", "fbank", "--out", "s.zarr", "--no-progress")


@pytest.mark.parametrize("args, message", [
    (("--precision", "foo"), "--precision 'foo': use one of auto, fp32, fp16, bf16"),
    (("--dtype", "float64"), "--dtype 'float64': use one of float16, float32"),
    (("--batch-seconds", "nan"), "--batch-seconds nan: give a finite number > 0"),
    (("--batch-seconds", "-2"), "--batch-seconds -2.0: give a finite number > 0"),
    (("--streams", "0"), "--streams 0: give a whole number >= 1"),
    (("--shard-mb", "nan"), "--shard-mb nan: give a finite number > 0"),
    (("--shard-mb", "0"), "--shard-mb 0.0: give a finite number > 0"),
    (("--layers", "x"), "--layers 'x': use last, all, or distinct indices in 0..0"),      # at build: fbank has 1
    (("--layers", "1,1"), "--layers '1,1': use last, all, or distinct indices (or layer names) separated by"),
    (("--layers", "-1"), "--layers '-1': use last, all, or distinct indices"),
    (("--layers", "6,,12"), "--layers '6,,12': use last, all, or distinct indices"),
    (("--device", "gpu"), "--device 'gpu': use auto, cpu, cuda, cuda:N or mps"),
    (("--shard", "2/2"), "--shard '2/2'"),
    (("--fps", "nan"), "--fps nan: give a finite number > 0"),
    (("--fps", "0"), "--fps 0.0: give a finite number > 0"),
    (("--max-frames", "0"), "--max-frames 0: give a whole number >= 1"),
    (("--fps", "10"), "--fps: fbank (a audio encoder) has no option 'fps'; fbank options: num_mel_bins, sample_rate"),
    (("--encoder-opt", "bogus=1"), "--encoder-opt bogus: fbank (a audio encoder) has no option 'bogus'; "
                                   "fbank options: num_mel_bins, sample_rate"),
    (("--encoder-opt", "num_mel_bins=many"), "--encoder-opt num_mel_bins: 'many' is not an integer"),
    (("--encoder-opt", "layers=all"), "has no option 'layers' (set it with --layers)"),
    (("--encoder-opt", "num_mel_bins"), "--encoder-opt 'num_mel_bins': expected KEY=VALUE"),
    (("--workers", "0"), "--workers 0: give a whole number >= 1"),
    (("--workers", "1", "--parts", "0"), "--parts 0: give a whole number >= 1"),
    (("--workers", "1", "--retries", "-1"), "--retries -1: give a whole number >= 0"),
    (("--workers", "1", "--scheduler", "tcp://x:1"), "give either --workers N"),
])
def test_bad_options_refused_in_one_line_before_anything_is_written(imo, audio_dir, args, message):
    r = imo(*BASE, *args, cwd=audio_dir)
    assert r.code == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.error.startswith("error: ") and message in r.error, r.stderr
    assert not (audio_dir / "s.zarr").exists() and not list(audio_dir.glob("*.jsonl.*"))


def test_out_that_is_a_file_is_refused(imo, audio_dir):
    (audio_dir / "file.zarr").write_text("not a store")
    r = imo(*BASE[:-3], "--out", "file.zarr", cwd=audio_dir)
    assert r.code == 2 and "--out file.zarr is a file; a store is a folder" in r.error
    assert (audio_dir / "file.zarr").read_text() == "not a store"


def test_encoder_opt_is_cast_recorded_in_the_store_and_matches_the_sugar(imo, tmp_path):
    for name in ("a", "b"):
        write_frames_folder(tmp_path / name, moving_face_frames(12))
    write_manifest_lines(tmp_path / "v.jsonl", [{"id": n, "frames": n} for n in ("a", "b")])  # unlabeled
    base = ("extract", "-m", "video", "--manifest", "v.jsonl", "--encoder", "pixels", "--no-progress")
    r = imo(*base, "--out", "opt.zarr", "--encoder-opt", "face=false", "--encoder-opt", "fps=10",
            "--encoder-opt", "max_frames=4", "--encoder-opt", "size=8", "--encoder-opt", "folder_fps=none",
            cwd=tmp_path)
    assert r.code == 0, r.stderr
    st = open_store(tmp_path / "opt.zarr")
    enc = st.meta.encoder
    assert (enc["face"], enc["fps"], enc["max_frames"], enc["size"], enc["folder_fps"]) == (False, 10.0, 4, 8, None)
    assert st.meta.frame_rate == 10.0 and st.get("a").shape == (4, 1, 64)
    # the sugar options build the same extractor: same fingerprint, same values
    r = imo(*base, "--out", "sugar.zarr", "--no-face", "--fps", "10", "--max-frames", "4", "--encoder-opt", "size=8",
            cwd=tmp_path)
    assert r.code == 0, r.stderr
    sugar = open_store(tmp_path / "sugar.zarr")
    assert sugar.meta.encoder_fingerprint == st.meta.encoder_fingerprint
    np.testing.assert_array_equal(sugar.get("b"), st.get("b"))
    r = imo(*base, "--out", "x.zarr", "--fps", "5", "--encoder-opt", "fps=10", cwd=tmp_path)
    assert r.code == 2 and "--fps 5.0 and --encoder-opt fps=10.0 disagree" in r.error
    r = imo(*base, "--out", "x.zarr", "--encoder-opt", "fps=inf", cwd=tmp_path)
    assert r.code == 2 and "--encoder-opt fps: 'inf' is not a finite number" in r.error
    r = imo(*base, "--out", "x.zarr", "--encoder-opt", "face=maybe", cwd=tmp_path)
    assert r.code == 2 and "--encoder-opt face: 'maybe' is not true or false" in r.error
    assert not (tmp_path / "x.zarr").exists()


def test_encoder_options_cast_to_the_family_config():
    assert encoder_options("pixels", "video", {"fps": "2.5", "face": "no", "folder_fps": "25"}) == \
        {"fps": 2.5, "face": False, "folder_fps": 25.0}
    assert encoder_options("fbank", "audio", {}, {"fps": ("--fps", None)}) == {}
    with pytest.raises(ConfigError, match="encoder 'fbank' is a audio encoder, not video"):
        encoder_options("fbank", "video", {"fps": "2"})


def test_job_is_checked_when_made_and_runs_locally(audio_dir):
    job = ExtractJob(manifest=str(audio_dir / "m.jsonl"), encoder="fbank", modality="audio",
                     out=str(audio_dir / "j.zarr"), device="cpu", options=(("num_mel_bins", 40),))
    assert job.options == (("num_mel_bins", 40),) and job.shard == ShardSpec()
    ext = job.build_extractor()
    assert ext.dim == 40
    result = job.run(ext, progress=False)
    assert result.done == 3 and open_store(audio_dir / "j.zarr").meta.encoder["num_mel_bins"] == 40
    for field, value, message in [("precision", "foo", "--precision 'foo'"), ("streams", 0, "--streams 0"),
                                  ("shard_mb", float("nan"), "--shard-mb nan"), ("budget", 0.0, "--batch-seconds 0.0"),
                                  ("dtype", "int8", "--dtype 'int8'"), ("layers", "-1", "--layers '-1'")]:
        with pytest.raises(ConfigError, match=message):
            dataclasses.replace(job, **{field: value})


def test_device_resolved_once_and_workers_placed_in_one_place(monkeypatch):
    import torch

    job = ExtractJob(manifest="m.jsonl", encoder="fbank", modality="audio", out="s.zarr")
    assert job.device == "auto" and not job.wants_gpu
    if not torch.cuda.is_available():
        assert job.resolved().device in ("cpu", "mps")
        with pytest.raises(ConfigError, match="--device cuda: no CUDA GPU is visible"):
            dataclasses.replace(job, device="cuda").resolved()
    # a remote cluster decides `auto` by its workers' GPU resource; explicit devices are the workers' to check
    assert job.resolved(gpu_workers=True).device == "cuda" and job.resolved(gpu_workers=False).device == "cpu"
    assert dataclasses.replace(job, device="cuda:1").resolved(gpu_workers=False).device == "cuda:1"
    # a local cluster on `cuda` spreads worker k onto cuda:k mod n (n: the GPUs the worker sees)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    spread = dataclasses.replace(job, device="cuda", spread_gpus=True)
    assert spread.wants_gpu
    assert [spread.worker_device(k) for k in (0, 1, 2, 3, "4")] == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert spread.worker_device("tcp://10.0.0.1:4000") == "cuda"          # a remote worker: its own visible GPU
    assert dataclasses.replace(spread, device="cuda:2").worker_device(0) == "cuda:2"   # explicit: kept
    assert dataclasses.replace(spread, spread_gpus=False).worker_device(1) == "cuda"
    assert dataclasses.replace(job, device="cpu", spread_gpus=True).worker_device(1) == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert spread.worker_device(1) == "cuda"


def test_job_for_workers_makes_local_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fbank").mkdir()                 # a folder named like a registered family stays the family
    (tmp_path / "ck.pth").write_bytes(b"")
    (tmp_path / "model").mkdir()
    base = dict(manifest="m.jsonl", modality="video", out="s.zarr", data_root="data")
    job = ExtractJob(encoder="fabnet:ck.pth", **base).for_workers()
    assert job.encoder == f"fabnet:{tmp_path / 'ck.pth'}" and job.manifest == str(tmp_path / "m.jsonl")
    assert job.out == str(tmp_path / "s.zarr") and job.data_root == str(tmp_path / "data")
    assert ExtractJob(encoder="model", **base).for_workers().encoder == str(tmp_path / "model")
    assert ExtractJob(encoder="pixels", **base).for_workers().encoder == "pixels"
    audio = {**base, "modality": "audio", "out": "memory://s.zarr"}
    assert ExtractJob(encoder="fbank", **audio).for_workers().encoder == "fbank"
    assert ExtractJob(encoder="org/model-id", **audio).for_workers().out == "memory://s.zarr"
