"""Runs trained stacked (``training.stacked`` behind ``train_runs``) end as they would alone: metrics and weights
within float tolerance, dropout included; a stacked group resumes exactly after a pause or a crash between
its runs' commits; a head that cannot be stacked trains one run at a time and says so; a failing run leaves
the others going. Below them, the pieces: a stacked forward equals each run's own, the fast attention and
start-token paths equal the original ones, dropout masks do not depend on the stack, gathered batches equal
collated ones, and the epoch's length bands."""

from __future__ import annotations

import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from heads import HEADS, InputSpec, build_head, drop_modality
from heads.base import Stack
from imo_pipeline.errors import ConfigError
from imo_pipeline.training.data import BANDS, collate, epoch_batches
from imo_pipeline.training.speedups import SPEEDUPS
from imo_pipeline.training.trainer import Trainer, TrainConfig, load_corpus, train_runs
from store_utils import QUIET, make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)

MODS = ["audio", "text", "video"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    manifest, stores = make_partial_info_set(tmp_path_factory.mktemp("stacked"), per_class=16, seed=3, folds=2)
    cfg = TrainConfig(modalities=MODS, stores={m: str(p) for m, p in stores.items()}, manifest=str(manifest))
    return cfg, load_corpus(cfg, **QUIET)[1]


def jobs(data, out, drop: float = 0.0, **kw) -> list[tuple[TrainConfig, object]]:
    """Two folds x two seeds; learning rate, dropout rates and epochs differ per run."""
    base, _ = data
    out_jobs = []
    for k, (fold, seed) in enumerate(itertools.product(["Ses01", "Ses02"], [0, 1])):
        opts = {"d_model": 16, "n_heads": 2, "dropout": drop, "input_dropout": drop / 2,
                "head_dropout": drop + 0.05 * k if drop else 0.0}
        cfg = dataclasses.replace(base, head_options=opts, batch_size=8, lr=2e-3 * (1 + k), seed=seed,
                                  epochs=3 + k % 2, fold_key="fold", test_group=fold, **kw)
        out_jobs.append((cfg, out / f"{fold}-{seed}"))
    return out_jobs


def rows(path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (path / "metrics.jsonl").read_text().splitlines()]


def same(a, b, tol: float) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol * max(1.0, abs(a))
    return a == b


def close_weights(a: dict, b: dict, atol: float = 1e-4) -> bool:
    """Equal within ``atol``, except the attention key biases: their gradient is zero in exact arithmetic
    (softmax ignores a shift shared by all keys), so AdamW turns float noise into steps of either sign."""
    def part(k, t):
        if k.endswith("attn.in_proj_bias"):
            d = t.shape[0] // 3
            return torch.cat([t[:d], t[2 * d:]])
        return t
    return a.keys() == b.keys() and all(torch.allclose(part(k, a[k]), part(k, b[k]), atol=atol) for k in a)


def summary_core(s: dict) -> dict:
    return {k: v for k, v in s.items() if k not in ("train_seconds", "data_wait_share")}


# --- train_runs ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("drop,threads", [(0.0, 1), (0.2, 1), (0.2, 2)])
def test_stacked_runs_end_as_they_would_alone(data, tmp_path, drop, threads):
    _, corpus = data
    kw = dict(threads=threads, modality_dropout=0.3 if drop else 0.0)
    alone = train_runs(jobs(data, tmp_path / "alone", drop, **kw), corpus, stack=False, **QUIET)
    lines = []
    stacked = train_runs(jobs(data, tmp_path / "stacked", drop, **kw), corpus, progress=False, log=lines.append)
    assert any("runs 1, 2, 3, 4 of 4 train stacked" in ln for ln in lines), lines
    for (_, a), (_, b), sa, sb in zip(jobs(data, tmp_path / "alone"), jobs(data, tmp_path / "stacked"), alone, stacked):
        assert same(rows(a), rows(b), 1e-5), (rows(a), rows(b))
        assert same(summary_core(sa), summary_core(sb), 1e-5)
        for which in ("best", "last"):
            wa, wb = load_file(a / f"{which}.safetensors"), load_file(b / f"{which}.safetensors")
            assert close_weights(wa, wb)
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    # each run took its own steps (the runs of 4 epochs went on after those of 3 had ended)
    assert [len(rows(b)) for _, b in jobs(data, tmp_path / "stacked")] == [3, 4, 3, 4]


def test_a_stacked_group_resumes_exactly_after_a_pause_and_a_crash_between_its_commits(data, tmp_path, monkeypatch):
    _, corpus = data
    plan = lambda out, **kw: jobs(data, out, 0.2, threads=2, modality_dropout=0.3, **kw)   # two stacks of two
    full = train_runs(plan(tmp_path / "full"), corpus, **QUIET)
    paused = train_runs(plan(tmp_path / "resumed", stop_after=1), corpus, **QUIET)
    assert paused == [{"stopped_after": 1}]                   # the list ends at the first paused run
    assert all(len(rows(out)) == 1 for _, out in jobs(data, tmp_path / "resumed"))

    real = Trainer._checkpoint
    seen = []

    def crash_on_the_second_commit_of_epoch_2(self, improved, valid):
        if self.state.epoch == 2:
            seen.append(self.out)
            if len(seen) == 2:
                raise RuntimeError("killed")                  # the process dies between two runs' commits
        return real(self, improved, valid)

    monkeypatch.setattr(Trainer, "_checkpoint", crash_on_the_second_commit_of_epoch_2)
    with pytest.raises(RuntimeError, match="killed"):
        train_runs(plan(tmp_path / "resumed"), corpus, **QUIET)
    monkeypatch.setattr(Trainer, "_checkpoint", real)
    assert [len(rows(out)) for _, out in jobs(data, tmp_path / "resumed")] == [2, 1, 1, 1]

    resumed = train_runs(plan(tmp_path / "resumed"), corpus, **QUIET)   # runs at epochs 2, 1, 1, 1
    for (_, a), (_, b), sa, sb in zip(plan(tmp_path / "full"), plan(tmp_path / "resumed"), full, resumed):
        assert rows(a) == rows(b)
        assert summary_core(sa) == summary_core(sb)
        wa, wb = load_file(a / "last.safetensors"), load_file(b / "last.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_head_that_cannot_be_stacked_trains_one_run_at_a_time_and_says_so(data, tmp_path):
    _, corpus = data
    assert not HEADS.get("concat").stackable
    plan = [(dataclasses.replace(cfg, head="concat", head_options={"hidden": 8}), out)
            for cfg, out in jobs(data, tmp_path / "concat")[:2]]
    lines = []
    got = train_runs(plan, corpus, progress=False, log=lines.append)
    assert any("head concat cannot be trained stacked: training its runs one at a time" in ln for ln in lines)
    assert any(ln.startswith("--- run 2/2 (fold=Ses01, seed 1)") for ln in lines), lines
    plan2 = [(cfg, tmp_path / "concat2" / out.name) for cfg, out in plan]
    want = train_runs(plan2, corpus, stack=False, **QUIET)
    assert [summary_core(s) for s in got] == [summary_core(s) for s in want]


def test_a_failing_run_leaves_the_others_going(data, tmp_path):
    _, corpus = data
    plan = jobs(data, tmp_path / "a")
    plan[1] = (dataclasses.replace(plan[1][0], lr=1e20, warmup=0), plan[1][1])
    got = train_runs(plan, corpus, keep_going=True, **QUIET)
    assert "failed" in got[1] and "became non-finite" in got[1]["failed"] and "Lower --lr" in got[1]["failed"]
    want = train_runs([(cfg, tmp_path / "b" / out.name) for cfg, out in plan[:1] + plan[2:]], corpus,
                      stack=False, **QUIET)
    assert same([summary_core(s) for s in got[:1] + got[2:]], [summary_core(s) for s in want], 1e-5)
    with pytest.raises(ConfigError, match="became non-finite"):       # without keep_going: raised at the end
        train_runs([(cfg, tmp_path / "c" / out.name) for cfg, out in plan], corpus, **QUIET)
    assert (tmp_path / "c" / plan[3][1].name / "summary.json").is_file()


# --- the pieces ------------------------------------------------------------------------------------------------------

INPUTS = {"audio": InputSpec(2, 12), "text": InputSpec(1, 10), "video": InputSpec(1, 6)}


def batch_of(mods, lengths, seed):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for j, m in enumerate(mods):
        T = max(lengths) + j
        mask = torch.zeros(len(lengths), T, dtype=torch.bool)
        for i, t in enumerate(lengths):
            mask[i, :t + j] = True
        x = torch.randn(len(lengths), T, INPUTS[m].n_layers, INPUTS[m].dim, generator=g) * mask[..., None, None]
        out[m] = (x, mask)
    return drop_modality(out, mods[0], torch.tensor([1])) if len(lengths) > 1 else out   # one absent row too


@pytest.mark.parametrize("mods", [["audio"], ["audio", "text"], MODS])
def test_fast_attention_and_start_token_paths_equal_the_original_ones(mods):
    torch.manual_seed(0)
    head = build_head("cross_attention", {m: INPUTS[m] for m in mods}, 3,
                      {"d_model": 16, "n_heads": 2, "self_layers": 2, "cross_layers": 2, "dropout": 0.0,
                       "input_dropout": 0.0, "head_dropout": 0.0})
    batch = batch_of(mods, [5, 3, 1, 4], seed=1)
    results = []
    for fast in (True, False):
        SPEEDUPS.sdpa = SPEEDUPS.start_only = fast
        try:
            head.zero_grad()
            out = head(batch)
            out.square().sum().backward()
            results.append((out.detach(), {n: p.grad.clone() for n, p in head.named_parameters()}))
        finally:
            SPEEDUPS.sdpa = SPEEDUPS.start_only = True
    (a, ga), (b, gb) = results
    assert torch.isfinite(a).all() and torch.allclose(a, b, atol=1e-5)
    assert all(torch.allclose(ga[n], gb[n], atol=1e-5) for n in ga)


@pytest.mark.parametrize("training", [False, True])
def test_a_stacked_forward_equals_each_run_alone(training):
    torch.manual_seed(0)
    heads = [build_head("cross_attention", INPUTS, 4, {"d_model": 16, "n_heads": 2, "dropout": 0.1 * k,
                                                        "head_dropout": 0.3}) for k in range(3)]
    batches = [batch_of(MODS, lengths, seed=k) for k, lengths in enumerate([[3, 5], [6, 2, 4], [1]])]
    seeds = [11, None, 13] if training else None
    alone = []
    for h, b, s in zip(heads, batches, seeds or [None] * 3):
        h.train(training)
        names = [n for n, _ in h.named_parameters()]
        stack = Stack.single(h.config, b, s)
        alone.append(h.stacked_forward({n: p.unsqueeze(0) for n, p in zip(names, h.parameters())},
                                       {m: (x[None], mk[None]) for m, (x, mk) in b.items()}, stack)[0])
    params = {n: torch.stack([dict(h.named_parameters())[n] for h in heads]) for n, _ in heads[0].named_parameters()}
    B = max(len(next(iter(b.values()))[1]) for b in batches)
    padded = {}
    for m in MODS:
        T = max(b[m][1].shape[1] for b in batches)
        x = torch.zeros(3, B, T, INPUTS[m].n_layers, INPUTS[m].dim)
        mask = torch.zeros(3, B, T, dtype=torch.bool)
        for k, b in enumerate(batches):
            xb, mb = b[m]
            x[k, :xb.shape[0], :xb.shape[1]], mask[k, :mb.shape[0], :mb.shape[1]] = xb, mb
        padded[m] = (x, mask)
    stack = Stack([h.config for h in heads], [len(b["audio"][1]) for b in batches],
                  {m: [b[m][1].shape[1] for b in batches] for m in MODS}, seeds)
    out = heads[0].stacked_forward(params, padded, stack)                  # (3, B, 4)
    for k, want in enumerate(alone):
        assert torch.allclose(out[k, :len(want)], want, atol=1e-5), k


def test_dropout_masks_do_not_depend_on_the_stack():
    cfgs = [HEADS.get("cross_attention").Config(dropout=p) for p in (0.3, 0.0, 0.5)]
    x = torch.ones(3, 4, 7, 64)
    stack = Stack(cfgs, [4, 2, 3], {}, [5, 6, 7])
    y = stack.dropout(x, "dropout", [7, 3, 5])
    for k, (rows, frames) in enumerate([(4, 7), (2, 3), (3, 5)]):
        alone = Stack([cfgs[k]], [rows], {}, [[5, 6, 7][k]]).dropout(torch.ones(1, rows, frames, 64), "dropout",
                                                                      [frames])
        assert torch.equal(y[k, :rows, :frames], alone[0])
        assert (y[k, rows:] == 0).all() and (y[k, :, frames:] == 0).all()   # padding is zeroed
    assert torch.equal(y[1, :2, :3], torch.ones(2, 3, 64))                 # a rate of 0 keeps everything
    big = Stack([cfgs[2]], [200], {}, [1]).dropout(torch.ones(1, 200, 500), "dropout")
    assert abs(float((big == 0).float().mean()) - 0.5) < 0.01 and abs(float(big.mean()) - 1.0) < 0.02
    assert torch.equal(Stack(cfgs, [4, 2, 3], {}, None).dropout(x, "dropout", [7, 3, 5]), x)   # evaluation


def test_gathered_batches_equal_collated_ones(data):
    _, corpus = data
    groups = [np.array([3, 0, 7]), np.array([5]), np.array([], np.int64)]
    fast = corpus.gather(groups)
    SPEEDUPS.fast_batches = False
    try:
        slow = corpus.gather(groups)
    finally:
        SPEEDUPS.fast_batches = True
    for m in MODS:
        assert fast[m][0].dtype == torch.float32 and torch.equal(fast[m][0], slow[m][0])
        assert torch.equal(fast[m][1], slow[m][1])
        one = collate([corpus.item(i) for i in groups[0]])[m]
        assert torch.equal(fast[m][0][0, :3, :one[0].shape[1]], one[0]) and not fast[m][1][2].any()


def test_epoch_bands_are_shared_by_runs_and_batches_are_each_runs_own():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 300, 1000)
    idx = np.arange(1000)
    a, b = epoch_batches(idx, lengths, 16, seed=0, epoch=3), epoch_batches(idx, lengths, 16, seed=1, epoch=3)
    assert len(a) == len(b) == BANDS
    for plan in (a, b):
        flat = np.concatenate([x for band in plan for x in band])
        assert sorted(flat) == list(range(1000))                        # every utterance once
    longest = lambda plan: [lengths[x].max() for band in plan for x in band]
    la, lb = np.array(longest(a)), np.array(longest(b))
    assert np.abs(la - lb).max() <= 0.2 * lengths.max()                  # step by step about the same length
    assert any(not np.array_equal(x, y) for x, y in zip([x for band in a for x in band],
                                                        [y for band in b for y in band]))
    assert [len(x) for x in a] == [len(x) for x in b]
    c = epoch_batches(idx, lengths, 16, seed=0, epoch=4)
    assert longest(c) != longest(a)                                      # another epoch, another band order


def test_validation_gathers_the_batches_evaluate_makes(data):
    from imo_pipeline.training.runs import forward_items
    from imo_pipeline.training.trainer import predict_split

    base, corpus = data
    torch.manual_seed(0)
    head = build_head("cross_attention", {m: InputSpec(len(corpus.tables[m].prep.layers), corpus.metas[m].dim)
                                          for m in MODS}, 4, {"d_model": 16, "n_heads": 2})
    idx = np.array([9, 2, 30, 4, 17, 11, 40])
    got = predict_split(head, corpus, idx, batch_size=3)
    want = forward_items(head, [corpus.item(int(i)) for i in idx], batch_size=3)
    assert got.shape == (7, 4) and np.allclose(got, want, atol=1e-6)


KILLER = """
import os, signal, sys
from pathlib import Path
import imo_pipeline.training.runs as runs

nth, real, seen = int(sys.argv[1]), runs._replace, [0]

def hooked(src, dst):
    real(src, dst)
    if Path(dst).name == "commit.json":
        seen[0] += 1
        if seen[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)   # a journal written, its renames not done

runs._replace = hooked
sys.argv = ["imo", *sys.argv[2:]]
from imo_pipeline.cli import run
run()
"""


@pytest.mark.slow
def test_a_killed_cross_validation_resumes_its_stacked_folds_exactly(tmp_path):
    """A real `imo train --folds` process (its folds stacked) SIGKILLed between its folds' commits of one epoch,
    then inside a commit, re-run to the end: every fold's folder equals the uninterrupted one's, bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    manifest, stores = make_partial_info_set(tmp_path / "data", per_class=12, seed=5, folds=3)
    args = ["train", "-m", "a,t,v", "--manifest", str(manifest),
            *[x for m, p in stores.items() for x in ("--store", f"{m[0]}={p}")], "--folds", "fold", "--epochs", "4",
            "--batch-size", "8", "--head-opt", "d_model=16", "--head-opt", "n_heads=2", "--modality-dropout", "0.3",
            "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    ref = subprocess.run([sys.executable, "-m", "imo_pipeline", *args, "--out", str(tmp_path / "ref")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    assert "train stacked" in ref.stdout + ref.stderr
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    out = tmp_path / "killed"
    folds = sorted(d.name for d in (tmp_path / "ref").iterdir() if d.is_dir())
    # kill 1, at the 5th journal: epoch 2 committed by fold 1, journal of fold 2 written, fold 3 not committed;
    # kill 2: the re-run rolls fold 2 forward, trains fold 3's epoch 2 beside folds 1-2 as ghosts, commits it,
    # then is killed at epoch 3's first journal (fold 1's)
    for nth, committed in ((5, [2, 1, 1]), (2, [2, 2, 2])):
        p = subprocess.run([sys.executable, str(killer), str(nth), *args, "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
        assert [len(rows(out / f)) for f in folds] == committed
        assert (out / folds[1 if nth == 5 else 0] / "commit.json").is_file()
    final = subprocess.run([sys.executable, "-m", "imo_pipeline", *args, "--out", str(out)], env=env,
                           capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]
    for f in folds:
        a, b = tmp_path / "ref" / f, out / f
        assert rows(a) == rows(b), f
        for name in ("last.safetensors", "best.safetensors"):
            wa, wb = load_file(a / name), load_file(b / name)
            assert all(torch.equal(wa[k], wb[k]) for k in wa), (f, name)
        assert summary_core(json.loads((a / "summary.json").read_text())) == \
            summary_core(json.loads((b / "summary.json").read_text()))
    cv = [json.loads((d / "cv.json").read_text()) for d in (tmp_path / "ref", out)]
    assert cv[0]["mean"] == cv[1]["mean"]
