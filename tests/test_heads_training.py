"""Every registered head through imo's trainer on generated stores: train, stop, resume, evaluate, predict
(each task); and fusion: on data where each modality carries only part of the label, every head over all
three modalities beats every single-modality probe (fixed seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from heads import HEADS
from imo_pipeline.store import open_store
from imo_pipeline.training.evaluate import evaluate_run
from imo_pipeline.training.runs import load_run
from imo_pipeline.training.trainer import TrainConfig, train
from store_utils import QUIET, make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)
from test_heads import SMALL, supports

TASKS = ("classification", "binary", "regression")
ALL = ("audio", "text", "video")


def config(data, modalities, **kw) -> TrainConfig:
    manifest, stores = data
    base = dict(modalities=list(modalities), stores={m: str(p) for m, p in stores.items()}, manifest=str(manifest),
                epochs=3, batch_size=8, lr=3e-3, seed=0)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def task_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    return {t: make_partial_info_set(root / t, per_class=10, task=t, seed=1) for t in TASKS}


@pytest.mark.slow
@pytest.mark.parametrize("name", HEADS.names())
def test_head_trains_resumes_evaluates_and_predicts(name, task_sets, tmp_path):
    task = TASKS[HEADS.names().index(name) % 3]                    # each head on one task, each task covered
    mods = ALL if supports(name, ALL) else ("audio",)
    cfg = dict(head=name, head_options=SMALL[name], task=task)
    assert train(config(task_sets[task], mods, stop_after=1, **cfg), tmp_path / "run", **QUIET) == {"stopped_after": 1}
    summary = train(config(task_sets[task], mods, **cfg), tmp_path / "run", **QUIET)   # resumes
    assert summary["epochs_run"] == 3
    run = load_run(tmp_path / "run")
    assert run.config["head"]["name"] == name
    res = evaluate_run(run, "test", log=lambda *a: None)
    scalars = {k: v for k, v in summary["test"].items() if k != "confusion"}
    assert {k: v for k, v in res["metrics"].items() if k != "confusion"} == pytest.approx(scalars)
    stores = {m: open_store(p) for m, p in run.stores.items()}
    got = run.predict([{m: st.get(uid) for m, st in stores.items()} for uid in res["ids"][:4]])
    np.testing.assert_allclose(got, np.array(res["outputs"][:4]), atol=1e-5)
    assert np.isfinite(got).all()


# Options for the fusion check (small, but with room to learn the XOR-like label in a few epochs).
FUSION = {
    "concat": {"hidden": 32},
    "gated": {"d_model": 32, "hidden": 32},
    "late": {"hidden": 32},
    "lmf": {"hidden": 16, "rank": 4},
    "mult": {"d_model": 16, "n_heads": 2, "layers": 1, "mem_layers": 1},
    "sse_ft": {"n_heads": 2, "ffn_dim": 32, "self_layers": 1},
    "tfn": {"hidden": 8, "post_hidden": 32},
}
COVERED_ELSEWHERE = {"cross_attention"}  # tests/test_training.py checks the default head the same way
FUSED = [n for n in HEADS.names() if supports(n, ALL) and n not in COVERED_ELSEWHERE]


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    return make_partial_info_set(tmp_path_factory.mktemp("partial"), per_class=40, seed=0)


@pytest.fixture(scope="module")
def probes(partial, tmp_path_factory):
    out = tmp_path_factory.mktemp("probes")
    return {m: train(config(partial, [m], head="probe", epochs=20, batch_size=16, lr=5e-3), out / m, **QUIET)["test"]["wa"]
            for m in ALL}


@pytest.mark.slow
@pytest.mark.parametrize("name", FUSED)
def test_fused_head_beats_every_single_modality_probe(name, partial, probes, tmp_path):
    cfg = config(partial, ALL, head=name, head_options=FUSION.get(name, SMALL[name]), epochs=20, batch_size=16, lr=5e-3)
    fused = train(cfg, tmp_path / name, **QUIET)["test"]["wa"]
    # each modality carries one bit of the 4-class label: alone ~50 %, together they identify the class
    assert fused >= 0.8 and fused > max(probes.values()) + 0.1, (fused, probes)
