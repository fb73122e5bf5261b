"""Missing modalities: absent rows in collate, `--modality-dropout` (seeded, never all, exact resume, recorded),
`imo evaluate --drop`, and `imo predict` without a modality for runs trained with modality dropout."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imo_pipeline.errors import ConfigError
from imo_pipeline.training.data import collate
from imo_pipeline.training.evaluate import evaluate_run
from imo_pipeline.training.missing import ModalityDropout, uniforms
from imo_pipeline.training.runs import load_run
from imo_pipeline.training.trainer import TrainConfig, train
from store_utils import QUIET, make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)

MODS = ["audio", "text", "video"]
SMALL = {"d_model": 32, "n_heads": 2}


def test_collate_gives_a_lacking_modality_an_absent_row():
    a = np.ones((5, 2, 3), np.float16)
    items = [{"audio": a, "text": np.ones((2, 1, 4))}, {"audio": a[:2]}, {"audio": a[:3], "text": np.zeros((0, 1, 4))}]
    batch = collate(items)
    x, mask = batch["text"]
    assert x.shape == (3, 2, 1, 4) and mask.tolist() == [[True, True], [False, False], [False, False]]
    assert (x[1:] == 0).all() and x.dtype == torch.float32
    assert batch["audio"][1].sum(1).tolist() == [5, 2, 3]
    # no item has frames of a modality: T is still >= 1 and the row is absent
    x, mask = collate([{"text": np.zeros((0, 1, 4))}, {"text": np.zeros((0, 1, 4))}])["text"]
    assert x.shape == (2, 1, 1, 4) and not mask.any()


def test_modality_dropout_is_seeded_per_sample_and_never_drops_all():
    B = 4000
    batch = {m: (torch.ones(B, 3, 1, 2), torch.ones(B, 3, dtype=torch.bool)) for m in MODS}
    rows = np.arange(B)
    drop = ModalityDropout(0.4, MODS, seed=3)
    out = drop(batch, rows, epoch=1)
    present = torch.stack([out[m][1].any(1) for m in MODS], 1)                      # (B, 3)
    assert present.any(1).all()                                                     # never all of a sample's
    for m in MODS:
        x, mask = out[m]
        gone = ~mask.any(1)
        assert (x[gone] == 0).all() and (x[~gone] == 1).all()
        # P(dropped) = p, less the samples that would have lost all three (p^3, one of three kept back)
        assert abs(gone.float().mean().item() - (0.4 - 0.4 ** 3 / 3)) < 0.03
    # the draw of a sample depends on (seed, epoch, row) only: not on its batch or its place in it
    perm = np.random.default_rng(0).permutation(B)[:50]
    sub = {m: (batch[m][0][perm], batch[m][1][perm]) for m in MODS}
    again = drop(sub, rows[perm], epoch=1)
    assert all(torch.equal(again[m][1], out[m][1][perm]) for m in MODS)
    assert not torch.equal(drop(batch, rows, epoch=2)["audio"][1], out["audio"][1])
    assert not torch.equal(ModalityDropout(0.4, MODS, seed=4)(batch, rows, 1)["audio"][1], out["audio"][1])
    # a sample that already lacks two modalities keeps its last one
    lacking = {m: (batch[m][0][:100], batch[m][1][:100] & (m == "text")) for m in MODS}
    assert ModalityDropout(0.9, MODS, 0)(lacking, rows[:100], 1)["text"][1].all()
    # off: the very same batch object
    assert ModalityDropout(0.0, MODS, 0)(batch, rows, 1) is batch
    u = uniforms(0, 1, rows, 3)
    assert u.shape == (B, 3) and 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01


@pytest.mark.parametrize("value,mods", [(1.0, MODS), (-0.1, MODS), (float("nan"), MODS), (0.3, ["audio"])])
def test_modality_dropout_option_is_checked(value, mods):
    cfg = TrainConfig(modalities=mods, stores={}, manifest="m.jsonl", modality_dropout=value)
    with pytest.raises(ConfigError, match=r"^--modality-dropout .*: use a probability in \[0, 1\) \(0: off\), with at "
                                          r"least two --modalities$"):
        cfg.check()


@pytest.fixture(scope="module")
def partial_set(tmp_path_factory):
    return make_partial_info_set(tmp_path_factory.mktemp("missing"), per_class=40, seed=0)


def config(partial_set, **kw) -> TrainConfig:
    manifest, stores = partial_set
    base = dict(modalities=list(MODS), stores={m: str(p) for m, p in stores.items()}, manifest=str(manifest),
                epochs=12, batch_size=16, lr=2e-3, head_options=SMALL, seed=0)
    return TrainConfig(**{**base, **kw})


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"}
            for ln in (run / "metrics.jsonl").read_text().splitlines()]


def test_modality_dropout_resumes_exactly_and_is_recorded(partial_set, tmp_path):
    full = train(config(partial_set, epochs=4, modality_dropout=0.3), tmp_path / "full", **QUIET)
    assert json.loads((tmp_path / "full" / "config.json").read_text())["train"]["modality_dropout"] == 0.3
    assert train(config(partial_set, epochs=4, modality_dropout=0.3, stop_after=2), tmp_path / "res",
                 **QUIET) == {"stopped_after": 2}
    with pytest.raises(ConfigError, match="holds a run with modality_dropout=0.3, this one has modality_dropout=0.5"):
        train(config(partial_set, epochs=4, modality_dropout=0.5), tmp_path / "res", **QUIET)
    resumed = train(config(partial_set, epochs=4, modality_dropout=0.3), tmp_path / "res", **QUIET)
    assert rows(tmp_path / "res") == rows(tmp_path / "full") and resumed["test"] == full["test"]
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "res" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    plain = train(config(partial_set, epochs=4), tmp_path / "plain", **QUIET)     # the dropout changes training
    assert rows(tmp_path / "plain") != rows(tmp_path / "full") and plain["test"] is not None


# --- evaluate --drop and training with modality dropout, end to end ---------------------------------------------


def make_redundant_set(root: Path, per_class: int = 30, seed: int = 0) -> tuple[Path, dict[str, Path]]:
    """4 classes; audio carries bit c // 2, text bit c % 2, video both bits (and more strongly): a model may lean
    on video alone, while audio + text also identify every class."""
    from audio_utils import write_manifest_lines
    from imo_pipeline.manifest import load_manifest
    from store_utils import CLASSES, SHAPES, write_store

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = [{"id": f"{CLASSES[c]}_{i:03d}", "label": CLASSES[c],
              "split": "train" if i < 0.6 * per_class else "valid" if i < 0.8 * per_class else "test"}
             for c in range(4) for i in range(per_class)]
    manifest = write_manifest_lines(root / "m.jsonl", lines)
    fp = load_manifest(manifest).fingerprint
    stores = {}
    for m in MODS:
        L, D, rate, (lo, hi) = SHAPES[m]
        dirs = rng.standard_normal((2, L, D)).astype(np.float32)
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        items = {}
        for ln in lines:
            c = CLASSES.index(ln["label"])
            x = rng.standard_normal((int(rng.integers(lo, hi)), L, D)).astype(np.float32)
            on = rng.random(len(x)) < 0.5
            on[rng.integers(len(x))] = True
            bits = {"audio": [(0, c // 2, 1.5)], "text": [(0, c % 2, 1.5)],
                    "video": [(0, c // 2, 2.5), (1, c % 2, 2.5)]}[m]
            for k, b, strength in bits:
                x[on] += (1.0 if b else -1.0) * strength * dirs[k]
            items[ln["id"]] = x
        stores[m] = write_store(root / f"{m}.zarr", m, items, fp, frame_rate=rate)
    return manifest, stores


@pytest.mark.slow
def test_runs_trained_with_modality_dropout_lose_less_when_a_modality_is_missing(tmp_path, imo):
    """Over four seeds (one seed's 32 test utterances are too few to judge by: a run may miss the audio+text
    conjunction either way), runs trained with --modality-dropout keep more of their UA without audio or video."""
    manifest, stores = make_redundant_set(tmp_path / "data", per_class=40)
    base = ["train", "-m", "a,t,v", "--manifest", manifest, *[x for m, p in stores.items() for x in ("--store", f"{m[0]}={p}")],
            "--epochs", "50", "--batch-size", "16", "--lr", "2e-3", "--head-opt", "d_model=32", "--head-opt", "n_heads=2",
            "--seeds", "4", "--no-progress"]
    assert imo(*base, "--out", tmp_path / "plain").code == 0
    r = imo(*base, "--out", tmp_path / "robust", "--modality-dropout", "0.5")
    assert r.code == 0, r.stderr
    ua = {}
    for name in ("plain", "robust"):
        for drop in ("", "a", "v"):
            ua[name, drop] = []
            for seed in range(4):
                r = imo("evaluate", tmp_path / name / f"seed-{seed}", "--json", *(["--drop", drop] if drop else []))
                assert r.code == 0, r.stderr
                ua[name, drop].append(json.loads(r.stdout)["ua"])
                if drop and name == "plain":
                    assert "trained without --modality-dropout" in r.stderr
    assert (tmp_path / "robust" / "seed-0" / "eval-test-without-video.json").is_file()
    mean = {k: float(np.mean(v)) for k, v in ua.items()}
    assert mean["robust", ""] >= 0.9 and mean["plain", ""] >= 0.9, ua
    missing = {name: (mean[name, "a"] + mean[name, "v"]) / 2 for name in ("plain", "robust")}
    assert missing["robust"] >= 0.7 and missing["robust"] >= missing["plain"] + 0.1, ua


def test_evaluate_drop_needs_no_store_of_the_dropped_modality(partial_set, tmp_path, imo):
    manifest, stores = partial_set
    video = shutil.copytree(stores["video"], tmp_path / "video.zarr")
    cfg = config(partial_set, epochs=2, modality_dropout=0.3, stores={**{m: str(p) for m, p in stores.items()},
                                                                       "video": str(video)})
    train(cfg, tmp_path / "run", **QUIET)
    full = evaluate_run(load_run(tmp_path / "run"), "test", log=lambda *a: None)
    shutil.rmtree(video)                                                  # the camera's store is gone
    from test_runs import refused
    refused(imo("evaluate", tmp_path / "run"), "video store", "does not exist")
    r = imo("evaluate", tmp_path / "run", "--drop", "v", "--store", f"v={tmp_path / 'nowhere.zarr'}")
    assert r.code == 0, r.stderr
    assert "ignoring --store v=...: video is dropped" in r.stderr and "without video" in r.stdout
    res = json.loads((tmp_path / "run" / "eval-test-without-video.json").read_text())
    assert res["dropped"] == ["video"] and set(res["stores"]) == {"audio", "text"} and res["ids"] == full["ids"]
    # the outputs are the run's on the stored arrays with video left out (the head's absent form)
    run = load_run(tmp_path / "run")
    from imo_pipeline.store import open_store
    st = {m: open_store(stores[m]) for m in ("audio", "text")}
    probs = run.predict([{m: s.get(uid) for m, s in st.items()} for uid in res["ids"]])
    np.testing.assert_allclose(probs, np.array(res["outputs"]), atol=1e-5)
    assert not np.allclose(probs, np.array(full["outputs"]), atol=1e-3)
    refused(imo("evaluate", tmp_path / "run", "--drop", "a,t,v"), "leaves run", "no input")
    refused(imo("evaluate", tmp_path / "run", "--drop", "x"), "--drop 'x': use a, t or v")


def test_drop_refusals_for_runs_of_fewer_modalities(partial_set, tmp_path, imo):
    from test_runs import refused
    train(config(partial_set, modalities=["audio", "text"], epochs=1), tmp_path / "at", **QUIET)
    refused(imo("evaluate", tmp_path / "at", "--drop", "v"), "--drop v: run", "uses audio, text")
    with pytest.raises(ConfigError, match="the input lacks text .a run trained with --modality-dropout"):
        load_run(tmp_path / "at").predict([{"audio": np.zeros((4, 2, 16), np.float16)}])


# --- imo predict without a modality --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_runs(tmp_path_factory):
    """Real media (the demo's generator, 5 per class) extracted with fbank audio and pixels faces; an a+v run
    trained with --modality-dropout and one without."""
    from imo_pipeline.demo.run import extractor_for
    from imo_pipeline.demo.synth import generate
    from imo_pipeline.extract import extract
    from imo_pipeline.manifest import load_manifest

    root = tmp_path_factory.mktemp("media")
    data = generate(root / "data", per_class=5, seed=1)
    man = load_manifest(data.manifest)
    stores = {}
    for m in ("audio", "video"):
        res = extract(man, extractor_for(m), root / f"{m}.zarr", progress=False)
        assert not res.failed
        stores[m] = str(root / f"{m}.zarr")
    for name, p in (("plain", 0.0), ("robust", 0.5)):
        cfg = TrainConfig(modalities=["audio", "video"], stores=stores, manifest=str(data.manifest), head="concat",
                          head_options={"hidden": 16}, epochs=2, batch_size=8, seed=0, modality_dropout=p)
        train(cfg, root / name, **QUIET)
    return root, man


def test_predict_without_a_modality_works_only_for_runs_trained_with_modality_dropout(media_runs, imo, tmp_path):
    from test_runs import refused

    from imo_pipeline.predict import Predictor
    root, man = media_runs
    u = next(u for u in man if u.split == "test")
    wav = man.resolve(u.audio.path)
    r = imo("predict", root / "robust", "--audio", wav)
    assert r.code == 0, r.stderr
    assert (f"note: no video given; run {root / 'robust'} was trained with --modality-dropout 0.5 and predicts from "
            f"audio alone") in r.stderr and "label: " in r.stdout
    # the same probabilities as evaluating the cached audio with video dropped
    cached = evaluate_run(load_run(root / "robust"), "test", drop=["video"], out=tmp_path / "ev", log=lambda *a: None)
    p = Predictor.load(root / "robust").predict(audio=wav)
    assert p.missing == ("video",)
    np.testing.assert_allclose(p.scores, cached["outputs"][cached["ids"].index(u.id)], atol=1e-3)
    refused(imo("predict", root / "plain", "--audio", wav), "needs video but the input has none; pass --video",
            "--modality-dropout")
    refused(imo("predict", root / "robust", "--text", "hello"), "has none of the run's modalities; pass --audio or "
            "--video")
    # many at once: the utterances without frames are predicted from audio and counted in a note
    from dataclasses import replace

    from imo_pipeline.manifest import write_manifest
    utts = [replace(x, frames=None) if k < 2 else x for k, x in enumerate(u for u in man if u.split == "test")]
    path = write_manifest([x.to_json() for x in utts], tmp_path / "some-faceless.jsonl")
    r = imo("predict", root / "robust", "--manifest", path, "--data-root", man.data_root, "--out", tmp_path / "p.csv")
    assert r.code == 0, r.stderr
    assert "note: 2 utterance(s) lack video" in r.stderr and f"{len(utts)} predicted, 0 failed" in r.stdout
    r = imo("predict", root / "plain", "--manifest", path, "--data-root", man.data_root, "--out", tmp_path / "q.csv")
    assert r.code == 1 and f"{len(utts) - 2} predicted, 2 failed" in r.stdout and "needs video" in r.stderr
