"""Training end to end on generated stores: fusion beats single modalities, every task, exact resume,
evaluate == predict, cross-validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imo_pipeline.store import open_store
from imo_pipeline.training.evaluate import evaluate_run
from imo_pipeline.training.runs import load_run
from imo_pipeline.training.trainer import TrainConfig, cross_validate, train
from store_utils import QUIET, one_thread, make_partial_info_set  # noqa: F401  (one_thread: autouse fixture)

SMALL = {"d_model": 32, "n_heads": 2}


@pytest.fixture(scope="module")
def partial_set(tmp_path_factory):
    return make_partial_info_set(tmp_path_factory.mktemp("partial"), per_class=40, seed=0, folds=3)


def config(partial_set, modalities, **kw) -> TrainConfig:
    manifest, stores = partial_set
    base = dict(modalities=list(modalities), stores={m: str(p) for m, p in stores.items()}, manifest=str(manifest),
                epochs=12, batch_size=16, lr=2e-3, head_options=SMALL, seed=0)
    return TrainConfig(**{**base, **kw})


def test_cross_attention_on_all_modalities_beats_every_single_modality(partial_set, tmp_path):
    fused = train(config(partial_set, ["audio", "text", "video"]), tmp_path / "atv", **QUIET)["test"]["wa"]
    single = {m: train(config(partial_set, [m]), tmp_path / m, **QUIET)["test"]["wa"] for m in ("audio", "text", "video")}
    # Each modality carries one bit of a 4-class label: alone it caps at ~50 %, together they identify the class.
    assert fused >= 0.9, (fused, single)
    assert max(single.values()) <= 0.65, (fused, single)
    assert fused > max(single.values()) + 0.25


@pytest.mark.parametrize("task,head,expect", [
    ("classification", "concat", lambda m: m["wa"] >= 0.8),
    ("binary", "cross_attention", lambda m: m["acc_mean"] >= 0.8 and set(m) >= {"f1_ang", "acc_sad", "f1_mean"}),
    ("regression", "cross_attention", lambda m: m["corr"] > 0.7 and {"mae", "acc7", "acc2_non_zero"} <= set(m)),
])
def test_each_task_trains_and_evaluates(tmp_path, task, head, expect):
    data = make_partial_info_set(tmp_path / "data", per_class=30, modalities=("audio", "text"), task=task, seed=1)
    opts = SMALL if head == "cross_attention" else {"hidden": 32}
    cfg = config(data, ["audio", "text"], task=task, head=head, head_options=opts, epochs=15, lr=3e-3)
    summary = train(cfg, tmp_path / "run", **QUIET)
    assert expect(summary["test"]), summary["test"]
    for f in ("config.json", "metrics.jsonl", "best.safetensors", "best.json", "last.safetensors", "last.json",
              "last.state.pt", "curves.png", "confusion_matrix.png"):
        assert (tmp_path / "run" / f).is_file(), f
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 15
    run = load_run(tmp_path / "run")
    res = evaluate_run(run, "test", out=tmp_path / "eval", log=lambda *a: None)
    scalars = {k: v for k, v in summary["test"].items() if k != "confusion"}
    assert {k: v for k, v in res["metrics"].items() if k != "confusion"} == pytest.approx(scalars)
    assert res["metrics"].get("confusion") == summary["test"].get("confusion")
    assert (tmp_path / "eval" / "confusion_matrix-test.png").stat().st_size > 1000
    stores = {m: open_store(p) for m, p in run.stores.items()}
    got = run.predict([{m: st.get(uid) for m, st in stores.items()} for uid in res["ids"][:4]])
    assert got.shape == ((4,) if task == "regression" else (4, 4))
    np.testing.assert_allclose(got, np.array(res["outputs"][:4]), atol=1e-5)


def test_probe_learns_layer_weights(tmp_path, partial_set):
    cfg = config(partial_set, ["audio"], head="probe", head_options={}, epochs=5, lr=1e-2)
    summary = train(cfg, tmp_path / "probe", **QUIET)
    run = load_run(tmp_path / "probe")
    assert run.preprocess["audio"].layers == [0, 1]  # the probe sees every stored layer
    w = run.model.layer_weights().detach().numpy()
    assert w.sum() == pytest.approx(1.0) and not np.allclose(w, 0.5)
    assert summary["test"]["wa"] >= 0.4


def _rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_ends_with_the_same_metrics_as_an_uninterrupted_run(partial_set, tmp_path):
    full = train(config(partial_set, ["audio", "text"], epochs=6), tmp_path / "full", **QUIET)
    cfg = config(partial_set, ["audio", "text"], epochs=6, stop_after=2)
    assert train(cfg, tmp_path / "resumed", **QUIET) == {"stopped_after": 2}
    assert len(_rows(tmp_path / "resumed")) == 2
    cfg = config(partial_set, ["audio", "text"], epochs=6, stop_after=4)   # a second interruption
    assert train(cfg, tmp_path / "resumed", **QUIET) == {"stopped_after": 4}
    resumed = train(config(partial_set, ["audio", "text"], epochs=6), tmp_path / "resumed", **QUIET)
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "full")
    drop = {"train_seconds", "data_wait_share"}
    assert {k: v for k, v in resumed.items() if k not in drop} == {k: v for k, v in full.items() if k not in drop}
    a, b = load_file(tmp_path / "full" / "last.safetensors"), load_file(tmp_path / "resumed" / "last.safetensors")
    assert all((a[k] == b[k]).all() for k in a)


def test_resume_refuses_other_options(partial_set, tmp_path):
    from imo_pipeline.errors import ConfigError

    train(config(partial_set, ["text"], epochs=3, stop_after=1), tmp_path / "r", **QUIET)
    with pytest.raises(ConfigError, match=r"holds a run with lr=0.002, this one has lr=0.01.*new --out"):
        train(config(partial_set, ["text"], epochs=3, lr=1e-2), tmp_path / "r", **QUIET)


def test_evaluate_and_predict_on_stored_arrays_agree(partial_set, tmp_path):
    train(config(partial_set, ["audio", "text", "video"], epochs=3), tmp_path / "run", **QUIET)
    run = load_run(tmp_path / "run")
    assert run.modalities == ["audio", "text", "video"] and run.labels == ["ang", "hap", "neu", "sad"]
    assert run.store_meta["audio"].dim == 16 and run.stores["audio"].endswith("audio.zarr")
    assert not run.model.training
    res = evaluate_run(run, "test", log=lambda *a: None)
    stores = {m: open_store(p) for m, p in run.stores.items()}
    items = [{m: st.get(uid) for m, st in stores.items()} for uid in res["ids"]]
    probs = run.predict(items)
    assert probs.shape == (len(items), 4)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, np.array(res["outputs"]), atol=1e-5)
    # float32 input (e.g. freshly extracted features) takes the same float16 round trip as the store
    as32 = run.predict([{m: a.astype(np.float32) for m, a in it.items()} for it in items[:5]])
    np.testing.assert_allclose(as32, probs[:5], atol=1e-5)
    # one at a time equals batched (padding is masked)
    np.testing.assert_allclose(run.predict(items[:1]), probs[:1], atol=1e-5)


def test_cross_validation_reports_each_fold_and_mean_std(partial_set, tmp_path):
    cfg = config(partial_set, ["audio", "text"], epochs=2)
    res = cross_validate(cfg, tmp_path / "cv", "fold", **QUIET)
    assert sorted(res["folds"]) == ["Ses01", "Ses02", "Ses03"]
    for g in res["folds"]:
        run_cfg = json.loads((tmp_path / "cv" / f"fold-{g}" / "config.json").read_text())
        assert run_cfg["train"]["test_group"] == g and run_cfg["splits"]["test"] > 0
    was = [f["wa"] for f in res["folds"].values()]
    assert res["mean"]["wa"] == pytest.approx(np.mean(was))
    assert res["std"]["wa"] == pytest.approx(np.std(was, ddof=1))          # sample std, as everywhere in imo
    assert "ddof=1" in res["std_definition"]
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["mean"] == res["mean"]


def test_lazy_reading_trains_exactly_like_in_memory(partial_set, tmp_path):
    mem = train(config(partial_set, ["audio", "text"], epochs=2, in_memory="yes"), tmp_path / "mem", **QUIET)
    lazy = train(config(partial_set, ["audio", "text"], epochs=2, in_memory="no"), tmp_path / "lazy", **QUIET)
    assert _rows(tmp_path / "mem") == _rows(tmp_path / "lazy")
    assert mem["test"] == lazy["test"]


def test_early_stopping_and_gradient_accumulation(partial_set, tmp_path):
    logs = []
    cfg = config(partial_set, ["text"], epochs=30, lr=1e-6, patience=2, accum=3, warmup=0)
    summary = train(cfg, tmp_path / "es", progress=False, log=logs.append)
    assert summary["epochs_run"] < 30 and any("early stop after epoch" in line for line in logs)
    rows = _rows(tmp_path / "es")
    assert len(rows) == summary["epochs_run"]
    assert rows[0]["step"] == 2  # 96 train utterances / batch 16 = 6 batches = 2 optimizer steps of 3


def test_learning_rate_schedules_by_hand():
    from imo_pipeline.training.trainer import lr_at

    cfg = TrainConfig(modalities=["text"], stores={}, manifest="", lr=1.0, warmup=0.1, schedule="poly", power=1.0)
    assert [lr_at(s, 100, cfg) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])   # linear warmup over 10 steps
    assert lr_at(10, 100, cfg) == pytest.approx(1.0) and lr_at(55, 100, cfg) == pytest.approx(0.5)
    cfg.schedule = "cosine"
    assert lr_at(55, 100, cfg) == pytest.approx(0.5) and lr_at(100, 100, cfg) == pytest.approx(0.0)
    cfg.schedule, cfg.warmup = "constant", 5
    assert lr_at(2, 100, cfg) == pytest.approx(0.6) and lr_at(99, 100, cfg) == 1.0


def test_balanced_class_weights_by_hand():
    from imo_pipeline.manifest import Utterance
    from imo_pipeline.training.tasks import build_task

    train_utts = [Utterance(f"u{i}", lab) for i, lab in enumerate(["a", "a", "a", "b"])]
    task = build_task("classification", train_utts, [], "balanced")
    assert task.weight.tolist() == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    binary = build_task("binary", train_utts, [], "balanced")
    assert binary.weight.tolist() == pytest.approx([1 / 3, 3 / 1])
