"""`imo demo` end to end (small size) and `imo predict` on raw files: same probabilities as evaluating
the cached utterances, per-utterance errors in batch mode, clear refusals."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from imo_pipeline.errors import ConfigError, ManifestError, MediaError
from imo_pipeline.manifest import load_manifest, write_manifest
from imo_pipeline.predict import Predictor
from imo_pipeline.training.evaluate import evaluate_run
from imo_pipeline.training.runs import load_run


def imo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo command itself, at 40 utterances per class (160 in all)."""
    out = tmp_path_factory.mktemp("demo") / "demo_run"
    r = imo("demo", "--out", out, "--per-class", 40, "--no-progress")
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def table_of(stdout: str) -> dict[str, float]:
    """Model name -> test UA, read from the printed table."""
    rows = stdout.split("test set, each modality alone vs. fused:")[1].strip().splitlines()[1:5]
    return {row[:26].strip(): float(row[26:].split()[1]) for row in rows}


def test_demo_fused_beats_every_single_modality(demo):
    out, stdout = demo
    ua = table_of(stdout)
    assert set(ua) == {"audio probe", "text probe", "video probe", "fused (cross-attention)"}
    fused = ua.pop("fused (cross-attention)")
    assert fused >= 0.9 and fused > max(ua.values()) + 0.2, (fused, ua)
    for png in ("results.png", "runs/fused/confusion_matrix.png", "runs/fused/curves.png",
                "runs/probe-audio/confusion_matrix.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    shown = stdout.split("labelling raw files")[1]
    assert "$ imo predict" in shown and "label: " in shown


def test_demo_rerun_reuses_its_folder_and_refuses_another_size(demo):
    out, _ = demo
    r = imo("demo", "--out", out, "--per-class", 41, "--no-progress")
    assert r.returncode == 2 and "holds a demo of 160 utterances, not 164" in r.stderr


def test_predict_on_raw_files_equals_evaluate_from_cache(demo):
    out, _ = demo
    run_dir = out / "runs" / "fused"
    cached = evaluate_run(load_run(run_dir), "test", log=lambda *a: None)
    manifest = load_manifest(out / "data" / "manifest.jsonl")
    test_ids = set(cached["ids"])
    predictor = Predictor.load(run_dir)
    utts = [u for u in manifest if u.id in test_ids]
    raw = {}
    for u in utts:
        p = predictor.predict(audio=out / "data" / u.audio.path, text=u.text, frames=out / "data" / u.frames)
        raw[u.id] = p.scores
    got = np.stack([raw[i] for i in cached["ids"]])
    want = np.asarray(cached["outputs"])
    assert got.shape == want.shape == (32, 4)
    np.testing.assert_allclose(got, want, atol=1e-3)

    # a waveform array at the file's rate gives the file's answer
    u = utts[0]
    wave, rate = sf.read(out / "data" / u.audio.path, dtype="float32")
    p = predictor.predict(audio=wave, sample_rate=rate, text=u.text, frames=out / "data" / u.frames)
    np.testing.assert_allclose(p.scores, raw[u.id], atol=1e-6)
    with pytest.raises(MediaError, match="audio array: contains NaN"):
        predictor.predict(audio=np.full(8000, np.nan, np.float32), sample_rate=8000, text=u.text,
                          frames=out / "data" / u.frames)


def test_predict_cli_one_input_and_manifest_csv(demo, tmp_path):
    out, _ = demo
    run_dir = out / "runs" / "fused"
    data = out / "data"
    utts = [u for u in load_manifest(data / "manifest.jsonl") if u.split == "test"][:3]
    u = utts[0]
    r = imo("predict", run_dir, "--audio", data / u.audio.path, "--text", u.text, "--frames", data / u.frames)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("label: ") and len(lines) == 5
    printed = {ln.split()[0]: float(ln.split()[1]) for ln in lines[1:]}
    assert abs(sum(printed.values()) - 1) < 1e-3 and lines[0] == f"label: {max(printed, key=printed.get)}"

    r = imo("predict", out / "runs" / "probe-text", "--text", u.text, "--audio", data / u.audio.path)
    assert r.returncode == 0 and "note: ignoring --audio" in r.stderr and r.stdout.startswith("label: ")

    # many at once: one bad file fails only its row, which keeps its error
    records = [json.loads(ln) for ln in (data / "manifest.jsonl").read_text().splitlines()
               if json.loads(ln)["id"] in {x.id for x in utts}]
    for rec in records:
        rec["audio"]["path"] = str(data / rec["audio"]["path"])
        rec["frames"] = str(data / rec["frames"])
    shutil.copy(records[1]["audio"]["path"], tmp_path / "broken.wav")
    (tmp_path / "broken.wav").write_bytes(b"RIFF not really a wav")
    records[1]["audio"]["path"] = str(tmp_path / "broken.wav")
    write_manifest(records, tmp_path / "new.jsonl")
    r = imo("predict", run_dir, "--manifest", tmp_path / "new.jsonl", "--out", tmp_path / "pred.csv")
    assert r.returncode == 1 and "2 predicted, 1 failed" in r.stdout and "broken.wav" in r.stderr
    rows = list(csv.DictReader((tmp_path / "pred.csv").open()))
    assert [row["id"] for row in rows] == [rec["id"] for rec in records]
    assert rows[1]["prediction"] == "" and "broken.wav" in rows[1]["error"]
    assert rows[0]["error"] == "" and rows[0]["prediction"] in ("ang", "hap", "neu", "sad")
    assert abs(float(rows[0]["p_" + rows[0]["prediction"]]) - max(printed.values())) < 1e-4


def test_predict_refuses_missing_modality(demo):
    out, _ = demo
    data = out / "data"
    u = next(u for u in load_manifest(data / "manifest.jsonl") if u.split == "test")
    r = imo("predict", out / "runs" / "fused", "--audio", data / u.audio.path)
    assert r.returncode == 2
    assert "needs text, video" in r.stderr and "--text --video" in r.stderr
    with pytest.raises(MediaError, match="needs video"):
        Predictor.load(out / "runs" / "fused").predict(audio=data / u.audio.path, text=u.text)
    r = imo("predict", out / "runs" / "fused")
    assert r.returncode == 2 and "--manifest" in r.stderr


def edited_run(src, dst, modality: str, **encoder):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "config.json").read_text())
    cfg["store_meta"][modality]["encoder"].update(encoder)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_predict_refuses_unavailable_or_different_encoder(demo, tmp_path):
    out, _ = demo
    run = edited_run(out / "runs" / "fused", tmp_path / "gone", "text", source=str(tmp_path / "roberta-large"))
    r = imo("predict", run, "--text", "hello")
    assert r.returncode == 2
    assert f"needs the text encoder hf-text:{tmp_path / 'roberta-large'}" in r.stderr

    changed = edited_run(out / "runs" / "fused", tmp_path / "changed", "video", size=16)
    with pytest.raises(ConfigError, match="video encoder pixels found here has different weights or options"):
        Predictor.load(changed)


def test_predict_manifest_takes_unlabeled_utterances(demo, tmp_path):
    from dataclasses import replace

    from imo_pipeline.manifest import Manifest

    out, _ = demo
    data = out / "data"
    man = load_manifest(data / "manifest.jsonl")
    utts = [replace(u, label=None) for u in man if u.split == "test"][:2]
    preds = Predictor.load(out / "runs" / "fused").predict_manifest(Manifest(utts, man.data_root, "x"), progress=False)
    assert [p.id for p in preds] == [u.id for u in utts] and not any(p.error for p in preds)
    assert all(p.label in ("ang", "hap", "neu", "sad") and abs(p.scores.sum() - 1) < 1e-4 for p in preds)
    from imo_pipeline.manifest import parse_line
    try:
        parse_line({"id": "x"}, "probe")
    except ManifestError:
        pytest.skip("manifest lines without a label arrive with issue 16")
    records = [{k: v for k, v in json.loads(ln).items() if k != "label"}
               for ln in (data / "manifest.jsonl").read_text().splitlines()][:2]
    for rec in records:
        rec["audio"]["path"] = str(data / rec["audio"]["path"])
        rec["frames"] = str(data / rec["frames"])
    write_manifest(records, tmp_path / "unlabeled.jsonl")
    r = imo("predict", out / "runs" / "fused", "--manifest", tmp_path / "unlabeled.jsonl", "--out", tmp_path / "p.csv")
    assert r.returncode == 0 and "2 predicted, 0 failed" in r.stdout, r.stderr
    assert [row["id"] for row in csv.DictReader((tmp_path / "p.csv").open())] == [rec["id"] for rec in records]
    r = imo("predict", out / "runs" / "fused", "--manifest", tmp_path / "unlabeled.jsonl", "--out", tmp_path)
    assert r.returncode == 2 and "is a folder; name the CSV file" in r.stderr
