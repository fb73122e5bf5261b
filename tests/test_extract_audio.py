import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audio_utils import tone, write_manifest_lines
from extractors import build_extractor
from imo_pipeline.errors import ConfigError
from imo_pipeline.extract import extract, plan_batches
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store

MODELS = ["wav2vec2", "wav2vec2-group", "hubert", "wavlm", "data2vec-audio"]


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_equals_single_utterance_runs(tiny_models, audio_set, tmp_path, name):
    manifest = load_manifest(audio_set[0])
    ext = build_extractor(str(tiny_models[name]), "audio", layers="all", device="cpu")
    assert ext.frame_rate == 50.0 and ext.layers == [0, 1, 2] and ext.dim == 32
    # group norm (and data2vec-audio's stacked positional convs) see padding: batched by equal length only
    assert ext.batching == ("equal" if name in ("wav2vec2-group", "data2vec-audio") else "mask")
    result = extract(manifest, ext, tmp_path / "a.zarr", budget=20.0, progress=False)
    assert (result.done, len(result.failed)) == (len(manifest), 0)
    store = open_store(tmp_path / "a.zarr")
    assert sorted(store.ids) == sorted(u.id for u in manifest)
    for u in manifest:
        alone = ext.embed([ext.load(u, manifest)])[0]
        np.testing.assert_allclose(store.get(u.id).astype(np.float32), alone, atol=2e-3, rtol=2e-3)


@pytest.mark.parametrize("name", ["wav2vec2", "hubert", "wavlm", "data2vec-audio"])
def test_padding_never_changes_an_embedding(tiny_models, audio_set, name):
    manifest = load_manifest(audio_set[0])
    ext = build_extractor(str(tiny_models[name]), "audio", layers="all", device="cpu")
    media = [ext.load(u, manifest) for u in manifest.utterances[:6]]
    batched = ext.embed(media)
    for m, b in zip(media, batched):
        np.testing.assert_allclose(b, ext.embed([m])[0], atol=1e-3)


def test_group_norm_models_batch_only_equal_lengths(tiny_models):
    ext = build_extractor(str(tiny_models["wav2vec2-group"]), "audio", device="cpu")
    a, b = tone(1.0, 16000)[:, 0], tone(0.6, 16000, 300)[:, 0]
    same = ext.embed([a, a.copy()])
    mixed = ext.embed([a, b])
    np.testing.assert_array_equal(mixed[0], ext.embed([a])[0])
    np.testing.assert_array_equal(same[0], same[1])


def test_plan_batches_by_budget():
    sizes = {"a": 1.0, "b": 4.0, "c": 2.0, "d": 2.0, "e": 9.0}
    assert plan_batches(sizes, 6.0, "mask") == [["a", "c", "d"], ["b"], ["e"]]
    assert plan_batches(sizes, 6.0, "single") == [["a"], ["c"], ["d"], ["b"], ["e"]]


def test_layer_selection_and_fbank(tiny_models, audio_set, tmp_path):
    manifest = load_manifest(audio_set[0])
    ext = build_extractor(str(tiny_models["wavlm"]), "audio", layers="0,2", device="cpu")
    assert ext.layers == [0, 2]
    with pytest.raises(ConfigError, match="--layers '7'"):
        build_extractor(str(tiny_models["wavlm"]), "audio", layers="7")
    fb = build_extractor("fbank", "audio")
    assert (fb.dim, fb.layers, fb.frame_rate) == (80, [0], 100.0)
    extract(manifest, fb, tmp_path / "fb.zarr", progress=False)
    store = open_store(tmp_path / "fb.zarr")
    u = manifest.utterances[3]
    assert abs(store.get(u.id).shape[0] - 100 * (0.4 + 0.37 * 3)) <= 3


def test_unknown_and_unloadable_encoders(tmp_path):
    with pytest.raises(ConfigError, match="could not be loaded"):
        build_extractor(str(tmp_path), "audio")
    with pytest.raises(ConfigError, match="is a audio encoder, not text"):
        build_extractor("fbank", "text")


def test_bad_inputs_fail_alone_and_nothing_else_is_lost(tiny_models, audio_set, tmp_path):
    path, lines = audio_set
    media = path.parent / "media"
    (media / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    sf.write(media / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    nan = tone(1.0, 16000)
    nan[50] = np.inf
    sf.write(media / "nan.wav", nan, 16000, subtype="FLOAT")
    bad = {"missing": "media/missing.wav", "corrupt": "media/corrupt.wav", "empty": "media/empty.wav", "nan": "media/nan.wav"}
    good_ids = [line["id"] for line in lines]
    lines = lines[:5] + [{"id": k, "label": "neu", "audio": {"path": v}} for k, v in bad.items()] + lines[5:]
    lines.append({"id": "textonly", "label": "neu", "text": "no audio here"})
    manifest = load_manifest(write_manifest_lines(path, lines))
    ext = build_extractor(str(tiny_models["wav2vec2"]), "audio", device="cpu")
    result = extract(manifest, ext, tmp_path / "a.zarr", budget=8.0, progress=False)
    assert result.done == len(good_ids)
    assert set(result.failed) == set(bad) | {"textonly"}
    reasons = {r["id"]: r for r in map(json.loads, open(result.errors_file))}
    assert "does not exist" in reasons["missing"]["reason"] and reasons["missing"]["path"] == "media/missing.wav"
    assert "could not be decoded" in reasons["corrupt"]["reason"]
    assert "no samples" in reasons["empty"]["reason"]
    assert "NaN or Inf" in reasons["nan"]["reason"]
    assert "no 'audio' field" in reasons["textonly"]["reason"]
    store = open_store(tmp_path / "a.zarr")
    assert sorted(store.ids) == sorted(good_ids) and set(store.failed) == set(result.failed)

    # fix one file and re-run: only the failures are retried, the rest is skipped
    sf.write(media / "missing.wav", tone(0.8, 16000), 16000)
    again = extract(manifest, ext, tmp_path / "a.zarr", budget=8.0, progress=False)
    assert (again.done, again.skipped, set(again.failed)) == (1, len(good_ids), set(bad) - {"missing"} | {"textonly"})
    assert "missing" in open_store(tmp_path / "a.zarr")


def test_several_minute_utterance(tiny_models, tmp_path):
    sf.write(tmp_path / "long.wav", tone(240.0, 16000), 16000)
    manifest = load_manifest(write_manifest_lines(tmp_path / "m.jsonl", [{"id": "long", "label": "x", "audio": "long.wav"}]))
    ext = build_extractor(str(tiny_models["wav2vec2-group"]), "audio", device="cpu")
    extract(manifest, ext, tmp_path / "a.zarr", progress=False)
    assert open_store(tmp_path / "a.zarr").get("long").shape == (240 * 50 - 1, 1, 32)


def _imo(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_cli_extract_as_written_with_imo_toml(tiny_models, audio_set, tmp_path):
    path, lines = audio_set
    write_manifest_lines(path, lines + [{"id": "gone", "label": "neu", "audio": "media/gone.wav"}])
    (tmp_path / "imo.toml").write_text(
        f'manifest = "manifest.jsonl"\ncache = "cache"\n[encoders]\naudio = "{tiny_models["hubert"]}"\n')
    r = _imo("extract", "--modality", "audio", "--no-progress", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert f"done {len(lines)}, already present 0, failed 1" in r.stdout
    assert "1 utterance(s) failed; see" in r.stderr and (tmp_path / "cache" / "audio.errors.jsonl").exists()
    store = open_store(tmp_path / "cache" / "audio.zarr")
    assert len(store) == len(lines) and store.meta.encoder["source"] == str(tiny_models["hubert"])
    r = _imo("inspect", "cache/audio.zarr", cwd=tmp_path)
    assert r.returncode == 0 and f"utterances   {len(lines)}" in r.stdout and "parts        1/1 complete" in r.stdout
    # explicit options override the file
    r = _imo("extract", "-m", "audio", "--encoder", "fbank", "--out", "cache/fbank.zarr", "--no-progress", cwd=tmp_path)
    assert open_store(tmp_path / "cache" / "fbank.zarr").dim == 80


def test_cli_errors_name_the_problem(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"id": "a", "label": "x"}\n{"id": "a", "label": "y"}\n')
    r = _imo("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", "fbank", "--out", "s.zarr", cwd=tmp_path)
    assert r.returncode == 2 and "m.jsonl:2: duplicate id 'a'" in r.stderr and not (tmp_path / "s.zarr").exists()
    (tmp_path / "m.jsonl").write_text('{"id": "a", "label": "x"}\n{"id": "b", "label": \n')
    r = _imo("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", "fbank", "--out", "s.zarr", cwd=tmp_path)
    assert r.returncode == 2 and "m.jsonl:2: not valid JSON" in r.stderr
    r = _imo("extract", "-m", "audio", cwd=tmp_path)
    assert r.returncode == 2 and "no manifest given" in r.stderr
    r = _imo("extract", "-m", "smell", cwd=tmp_path)
    assert r.returncode == 2 and "unknown modality 'smell'" in r.stderr
    r = _imo("--version", cwd=tmp_path)
    assert r.stdout.startswith("imo ")


def test_half_precision_checkpoint_runs_in_float32(tmp_path):
    """A checkpoint saved in fp16 is encoded in float32 on the CPU (transformers 5 keeps the stored dtype)."""
    import torch
    from transformers import AutoModel

    from audio_utils import save_tiny_speech_model

    folder = save_tiny_speech_model(tmp_path / "w2v2", "wav2vec2", "layer")
    AutoModel.from_pretrained(folder).half().save_pretrained(folder)
    ext = build_extractor(str(folder), "audio")
    assert next(ext.model.parameters()).dtype == torch.float32
    emb = ext.embed([tone(0.5, 16000)[:, 0]])[0]
    assert emb.dtype == np.float32 and np.isfinite(emb).all()


def test_store_size_is_estimated_before_extraction_and_a_full_disk_refused(tmp_path, imo, small_fs):
    """`--layers all` prints the estimated store size first; a disk that cannot hold it is refused before any
    utterance is encoded (the estimate is checked against the store a real run writes)."""
    from scale_utils import make_audio_project

    root = make_audio_project(tmp_path / "p", 12)
    args = ["extract", "-m", "audio", "--manifest", root / "m.jsonl", "--encoder", root / "model", "--layers", "all",
            "--device", "cpu", "--shard-mb", "0.05", "--no-progress"]
    r = imo(*args, "--out", tmp_path / "a.zarr")
    assert r.code == 0, r.stderr
    line = next(x for x in r.stderr.splitlines() if x.startswith("estimated store size"))
    st = open_store(tmp_path / "a.zarr")
    from imo_pipeline.extract import estimate_bytes
    ext = build_extractor(str(root / "model"), "audio", layers="all", device="cpu")
    man = load_manifest(root / "m.jsonl")
    est = estimate_bytes(ext, [ext.measure(u, man) for u in man])
    assert st.nbytes <= est <= 1.1 * st.nbytes and f"for 12 utterance(s) ({len(ext.layers)} layers" in line

    vfs = os.statvfs(small_fs)
    (small_fs / "ballast").write_bytes(b"\0" * (vfs.f_bavail * vfs.f_frsize - est // 3))
    r = imo(*args, "--out", small_fs / "a.zarr")
    assert r.code == 2 and "Traceback" not in r.stderr
    assert r.error.startswith(f"error: store {small_fs / 'a.zarr'} needs about") and "--layers" in r.error
    assert not list((small_fs / "a.zarr").rglob("c/*"))               # no embedding was written
    (small_fs / "ballast").unlink()
    assert imo(*args, "--out", small_fs / "a.zarr").code == 0          # with room, the same command runs
    assert len(open_store(small_fs / "a.zarr")) == 12
