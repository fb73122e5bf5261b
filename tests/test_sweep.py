"""`imo sweep` on generated stores with real Optuna (and a real dask LocalCluster where the test is about
parallelism): it beats a deliberately bad default, selects on validation without ever scoring the test data
before the final runs, reports a failed trial and goes on, prunes after each fold, resumes a SIGKILLed sweep
with the same study, and writes a report and a `best/` folder that `imo compare` and `imo evaluate` read."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest

from imo_pipeline.training import sweep as sweep_mod
from imo_pipeline.training import sweep_report, trainer
from imo_pipeline.training.data import Corpus
from imo_pipeline.training.sweep import STUDY_NAME, SweepDir
from store_utils import make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)

BASE = ["sweep", "-m", "a,t", "--head", "concat", "--no-progress"]
GOOD_SPACE = '[train]\nlr = { low = 3e-3, high = 3e-2, log = true }\n[head]\nhidden = { choices = [8, 16] }\n'


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    manifest, _ = make_partial_info_set(root / "cache", per_class=24, modalities=("audio", "text"), folds=3,
                                        speakers=3, seed=4)
    manifest.rename(root / "m.jsonl")
    (root / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n')
    (root / "good.toml").write_text(GOOD_SPACE)
    return root


def study_of(path: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{path / 'study.db'}")


def trials_by_number(path: Path) -> dict[int, optuna.trial.FrozenTrial]:
    return {t.number: t for t in study_of(path).trials}


@pytest.fixture(scope="module")
def finished(project, tmp_path_factory):
    """A finished single-split sweep from a deliberately bad fixed lr, and that default trained alone."""
    from imo_pipeline.cli import run

    def call(*args):
        old, cwd = sys.argv, os.getcwd()
        sys.argv = ["imo", *map(str, args)]
        os.chdir(project)
        try:
            run()
        except SystemExit as e:
            assert not e.code, f"imo {' '.join(map(str, args))} exited {e.code}"
        finally:
            sys.argv = old
            os.chdir(cwd)

    bad = ["--lr", "1e-6", "--head-opt", "hidden=8", "--epochs", "3"]
    call("train", "-m", "a,t", "--head", "concat", *bad, "--no-progress", "--out", "runs/default")
    call(*BASE, *bad, "--space", "good.toml", "--trials", "4", "--final-seeds", "2", "--out", "sweeps/s1")
    return project / "sweeps/s1"


def test_a_sweep_finds_a_better_configuration_than_a_bad_default(project, finished):
    default = json.loads((project / "runs/default/summary.json").read_text())
    study = study_of(finished)
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert study.best_value > default["best_valid"] + 0.2            # valid ua: chance vs. learned
    result = json.loads((finished / "result.json").read_text())
    assert result["final"]["test"]["mean"]["ua"] > default["test"]["ua"] + 0.2
    assert result["final"]["trial"] == study.best_trial.number
    assert 3e-3 <= study.best_trial.params["lr"] <= 3e-2                  # the searched value, not the fixed one


def test_the_report_and_the_best_folder(project, finished, imo):
    result = json.loads((finished / "result.json").read_text())
    final = result["final"]
    runs = [finished / "best" / f"seed-{s}" for s in (0, 1)]
    tests = [json.loads((r / "summary.json").read_text())["test"]["ua"] for r in runs]
    assert final["test"]["mean"]["ua"] == pytest.approx(np.mean(tests))
    assert final["test"]["std"]["ua"] == pytest.approx(np.std(tests, ddof=1))
    valids = [json.loads((r / "summary.json").read_text())["best_valid"] for r in runs]
    assert final["valid"]["mean"]["ua"] == pytest.approx(np.mean(valids))
    assert final["valid"]["std"]["ua"] == pytest.approx(np.std(valids, ddof=1))
    best = trials_by_number(finished)[final["trial"]]
    cfg = json.loads((runs[0] / "config.json").read_text())["train"]
    assert cfg["lr"] == best.params["lr"] and cfg["head_options"]["hidden"] == best.params["head.hidden"]
    # seed 0 of the final runs is the trial itself, now with its test split: the same validation
    assert valids[0] == pytest.approx(best.value)
    md = (finished / "report.md").read_text()
    for part in ("## Best configuration: trial", "| metric | valid | test |", "ddof=1", "## Parameter importance",
                 "![history](history.png)", "## Trials"):
        assert part in md, part
    rows = (finished / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,value,valid,lr,head.hidden") and len(rows) == 5
    assert set(result["importance"]) == {"lr", "head.hidden"}
    for png in ("history.png", "importance.png"):
        assert (finished / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = imo("compare", finished / "best", "--out", finished.parent / "cmp", cwd=project)
    assert r.code == 0 and "seeds" in r.stdout, r.stderr
    r = imo("evaluate", runs[1], "--json", cwd=project)
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["ua"] == pytest.approx(tests[1])


def test_a_finished_sweep_resumes_to_the_same_report_and_refuses_other_options(project, finished, imo):
    before = {t.number: (t.params, t.value) for t in study_of(finished).trials}
    r = imo(*BASE, "--lr", "1e-6", "--head-opt", "hidden=8", "--epochs", "3", "--space", "good.toml", "--trials", "4",
            "--final-seeds", "2", "--out", "sweeps/s1", cwd=project)
    assert r.code == 0, r.stderr
    assert {t.number: (t.params, t.value) for t in study_of(finished).trials} == before
    r = imo(*BASE, "--lr", "1e-6", "--head-opt", "hidden=8", "--epochs", "4", "--space", "good.toml",
            "--out", "sweeps/s1", cwd=project)
    assert r.code == 2 and "holds a sweep with train epochs=3, this one has 4" in r.error, r.stderr
    r = imo(*BASE, "--lr", "1e-6", "--head-opt", "hidden=8", "--epochs", "3", "--out", "sweeps/s1", cwd=project)
    assert r.code == 2 and "holds a sweep with space" in r.error and "pass a new --out" in r.error, r.stderr
    with SweepDir(finished).held():
        r = imo(*BASE, "--lr", "1e-6", "--head-opt", "hidden=8", "--epochs", "3", "--space", "good.toml",
                "--out", "sweeps/s1", cwd=project)
    assert r.code == 2 and "is being run by another `imo sweep`" in r.error, r.stderr
    r = imo(*BASE, "--epochs", "1", "--out", "runs/default", cwd=project)
    assert r.code == 2 and "holds `imo train` runs, not a sweep" in r.error, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("folds", [False, True], ids=["split", "folds"])
def test_the_test_data_is_never_scored_before_the_final_runs(project, imo, monkeypatch, tmp_path, folds):
    """Every utterance a run fetches or scores is recorded with the run's corpus; during the search no run sees
    its test data (split=test, or its fold's group); the final runs score each their test data once."""
    from imo_pipeline.manifest import load_manifest

    phase = ["search"]
    runs: list[tuple[object, str | None, str]] = []        # (corpus, test group, phase) of every Trainer built
    seen: list[tuple[object, str, str, tuple[str, ...]]] = []   # (corpus, phase, how, ids)

    init = trainer.Trainer.__init__

    def spy_init(self, cfg, out, corpus, *a, **k):
        runs.append((corpus, cfg.test_group, phase[0]))
        init(self, cfg, out, corpus, *a, **k)

    predict = trainer.predict_split

    def spy_predict(model, corpus, idx, batch_size):
        seen.append((corpus, phase[0], "scored", tuple(corpus.utterances[int(i)].id for i in idx)))
        return predict(model, corpus, idx, batch_size)

    item = Corpus.item

    def spy_item(self, k):
        seen.append((self, phase[0], "fetched", (self.utterances[int(k)].id,)))
        return item(self, k)

    final = sweep_report.run_experiment

    def spy_final(*a, **k):
        phase[0] = "final"
        return final(*a, **k)

    monkeypatch.setattr(trainer.Trainer, "__init__", spy_init)
    monkeypatch.setattr(trainer, "predict_split", spy_predict)
    monkeypatch.setattr(Corpus, "item", spy_item)
    if hasattr(Corpus, "gather"):                       # batches gathered as tensors (stacked trainer)
        gather = Corpus.gather

        def spy_gather(self, groups):
            seen.append((self, phase[0], "fetched", tuple(self.utterances[int(i)].id for g in groups for i in g)))
            return gather(self, groups)

        monkeypatch.setattr(Corpus, "gather", spy_gather)
    monkeypatch.setattr(sweep_report, "run_experiment", spy_final)
    args = ["--folds", "fold"] if folds else []
    r = imo(*BASE, "--epochs", "2", "--space", "good.toml", "--trials", "3", "--final-seeds", "1", *args,
            "--out", tmp_path / "sw", cwd=project)
    assert r.code == 0, r.stderr
    utts = {u.id: u for u in load_manifest(project / "m.jsonl")}

    def is_test(uid: str, group: str | None) -> bool:
        return utts[uid].fold == group if folds else utts[uid].split == "test"

    groups_of = {}
    for corpus, group, ph in runs:
        groups_of.setdefault(id(corpus), set()).add((group, ph))
    search = [(c, how, ids) for c, ph, how, ids in seen if ph == "search"]
    assert search and any(how == "scored" for _, how, _ in search)
    for corpus, how, ids in search:
        for group, ph in groups_of[id(corpus)]:
            assert ph == "search"
            leaked = [u for u in ids if is_test(u, group)]
            assert not leaked, f"{how} test utterance(s) {leaked[:3]} of group {group} during the search"
    assert not any(is_test(u.id, g) for c, g, ph in runs if ph == "search" for u in c.utterances)
    final = [set(ids) for _, ph, how, ids in seen if ph == "final" and how == "scored"]
    tests = ({g: {u for u in utts if utts[u].fold == g} for g in ("Ses01", "Ses02", "Ses03")} if folds
             else {None: {u for u in utts if utts[u].split == "test"}})
    for g, ids in tests.items():                     # each final run scores its whole test data, once
        assert sum(call == ids for call in final) == 1, g


def test_a_failed_trial_is_reported_and_the_sweep_goes_on(project, imo, monkeypatch, tmp_path):
    """Trial 1's run folder is taken by a file (its runs are refused); trial 2's task crashes every time
    (retried, then failed); the first task crashes once (the retry succeeds)."""
    out = tmp_path / "sw"
    (out / "trials").mkdir(parents=True)
    (out / "trials" / "trial-0001").write_text("in the way")
    real = sweep_mod.train_together
    calls = []

    def flaky(jobs, corpus):
        calls.append([str(o) for _, o in jobs])
        if len(calls) == 1 or any("trial-0002" in str(o) for _, o in jobs):
            raise RuntimeError("injected crash")
        return real(jobs, corpus)

    monkeypatch.setattr(sweep_mod, "train_together", flaky)
    r = imo(*BASE, "--epochs", "2", "--space", "good.toml", "--trials", "4", "--final-seeds", "1", "--retries", "1",
            "--out", out, cwd=project)
    assert r.code == 0, r.stderr
    t = trials_by_number(out)
    assert [t[k].state.name for k in range(4)] == ["COMPLETE", "FAIL", "FAIL", "COMPLETE"]
    assert "is a file" in t[1].user_attrs["error"]
    assert "crashed after 1 retries (RuntimeError: injected crash)" in t[2].user_attrs["error"]
    assert "crashed (RuntimeError: injected crash); retrying" in r.stderr
    assert "trial 1 failed:" in r.stderr and "trial 2 failed:" in r.stderr
    assert sum("trial-0002" in c[0] for c in calls) == 2                      # one retry
    md = (out / "trials.md").read_text()
    assert md.count("| failed |") == 2 and "injected crash" in md and "is a file" in md
    assert json.loads((out / "result.json").read_text())["trials"] == {"complete": 2, "failed": 2}


def test_a_combination_the_head_refuses_fails_only_its_trials(project, imo, tmp_path):
    (tmp_path / "space.toml").write_text("[head]\nn_heads = { choices = [3, 4] }\n"
                                         "[train]\nlr = { low = 1e-3, high = 1e-2, log = true }\n")
    out = tmp_path / "sw"
    r = imo("sweep", "-m", "a,t", "--head", "cross_attention", "--head-opt", "d_model=8", "--epochs", "1",
            "--space", tmp_path / "space.toml", "--trials", "5", "--final-seeds", "1", "--no-progress",
            "--out", out, cwd=project)
    assert r.code == 0, r.stderr
    trials = study_of(out).trials
    refused = [t for t in trials if t.params["head.n_heads"] == 3]
    assert refused and len(refused) < len(trials)
    for t in trials:
        if t.params["head.n_heads"] == 3:
            assert t.state.name == "FAIL" and "n_heads=3 does not divide d_model=8" in t.user_attrs["error"]
        else:
            assert t.state.name == "COMPLETE"
    assert json.loads((out / "result.json").read_text())["final"]["params"]["head.n_heads"] == 4


def test_trials_of_one_architecture_are_asked_together_and_trained_in_one_call(project, imo, monkeypatch,
                                                                                tmp_path):
    """For a head that trains stacked, each batch of --stack trials shares the shape parameters (drawn by the
    first) and its trials go to ``train_runs`` together, fold by fold; the other parameters are drawn apart."""
    monkeypatch.setattr(sweep_mod, "stack_profile", lambda head: (True, ("dropout",)))
    calls = []
    real = trainer.train_runs

    def spy(jobs, corpus, *a, **k):
        calls.append(sorted(Path(o).parent.name for _, o in jobs if Path(o).parts[-3] == "trials"))
        return real(jobs, corpus, *a, **k)

    monkeypatch.setattr(trainer, "train_runs", spy)
    (tmp_path / "space.toml").write_text("[train]\nlr = { low = 3e-3, high = 3e-2, log = true }\n"
                                         "batch_size = { choices = [8, 16] }\n"
                                         "[head]\nhidden = { choices = [8, 16, 32] }\n"
                                         "dropout = { low = 0.0, high = 0.3 }\n")
    r = imo(*BASE, "--epochs", "1", "--folds", "fold", "--space", tmp_path / "space.toml", "--trials", "4",
            "--stack", "2", "--final-seeds", "1", "--no-prune", "--out", tmp_path / "sw", cwd=project)
    assert r.code == 0, r.stderr
    t = trials_by_number(tmp_path / "sw")
    for a, b in ((0, 1), (2, 3)):
        shape = [(t[k].params["batch_size"], t[k].params["head.hidden"]) for k in (a, b)]
        assert shape[0] == shape[1], shape
        assert t[a].params["lr"] != t[b].params["lr"] and t[a].params["head.dropout"] != t[b].params["head.dropout"]
    assert [c for c in calls if c] == [["trial-0000", "trial-0001"]] * 3 + [["trial-0002", "trial-0003"]] * 3


def test_bad_trials_are_pruned_after_a_fold(project, imo, tmp_path):
    (tmp_path / "space.toml").write_text("[train]\nlr = { choices = [1e-7, 2e-2] }\n")
    out = tmp_path / "sw"
    r = imo(*BASE, "--head-opt", "hidden=8", "--epochs", "1", "--folds", "fold", "--space", tmp_path / "space.toml",
            "--trials", "8", "--final-seeds", "1", "--out", out, cwd=project)
    assert r.code == 0, r.stderr
    trials = study_of(out).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned, [(t.params, t.state.name) for t in trials]
    for t in pruned:
        assert t.params["lr"] == 1e-7 and len(t.user_attrs["fold_values"]) < 3
        assert not (out / "trials" / t.user_attrs["folder"] / "fold-Ses03").exists()    # not trained further
    for t in trials:
        if t.state.name == "COMPLETE":
            assert t.user_attrs["fold_values"].keys() == {"Ses01", "Ses02", "Ses03"}
            assert t.value == pytest.approx(np.mean(list(t.user_attrs["fold_values"].values())))
    assert study_of(out).best_trial.params["lr"] == 2e-2
    assert "pruned after" in (out / "trials.md").read_text()


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_a_killed_sweep_resumes_with_the_same_study(project, tmp_path):
    """A real `imo sweep` SIGKILLed while trial 2 trains, then re-run: the finished trials are kept as they are,
    the cut-off trial is recorded as failed and re-run once with its parameters (ending as it would have
    uninterrupted), and the study ends with --trials counted trials."""
    args = [sys.executable, "-m", "imo_pipeline", *BASE, "--head-opt", "hidden=8", "--epochs", "12", "--folds",
            "fold", "--space", str(project / "good.toml"), "--trials", "5", "--final-seeds", "1", "--no-prune"]
    ref = subprocess.run([*args, "--out", str(tmp_path / "ref")], cwd=project, env=_env(), capture_output=True,
                         text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(out)], cwd=project, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = out / "trials" / "trial-0002" / "fold-Ses02" / "last.json"   # trial 2 is in its second fold
    deadline = time.monotonic() + 600
    while proc.poll() is None and not target.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"
    cut = [t.number for t in study_of(out).trials if t.state.name == "RUNNING"]
    assert cut, "no trial was running at the kill"
    kept = {n: (t.params, t.value, (out / "trials" / t.user_attrs["folder"] / "fold-Ses03" / "metrics.jsonl")
                .read_text()) for n, t in trials_by_number(out).items() if t.state.name == "COMPLETE"}
    again = subprocess.run([*args, "--out", str(out)], cwd=project, env=_env(), capture_output=True, text=True,
                           timeout=900)
    assert again.returncode == 0, again.stderr
    assert "cut off when the last sweep stopped" in again.stderr
    t = trials_by_number(out)
    reference = trials_by_number(tmp_path / "ref")
    for n, (params, value, metrics) in kept.items():                  # finished trials: untouched, not re-run
        assert (t[n].params, t[n].value) == (params, value) == (reference[n].params, reference[n].value)
        assert (out / "trials" / t[n].user_attrs["folder"] / "fold-Ses03" / "metrics.jsonl").read_text() == metrics
    for n in cut:
        assert t[n].state.name == "FAIL" and t[n].user_attrs["cut_off"] is True
        reruns = [x for x in t.values() if x.user_attrs.get("rerun_of") == n]
        assert len(reruns) == 1, f"trial {n} re-run {len(reruns)} times"
        rerun = reruns[0]
        assert rerun.params == t[n].params and rerun.state.name == "COMPLETE"
        assert rerun.user_attrs["folder"] == f"trial-{n:04d}"          # its runs resumed in their folders
        assert rerun.value == pytest.approx(reference[n].value)        # as if never interrupted
        assert rerun.user_attrs["fold_values"] == pytest.approx(reference[n].user_attrs["fold_values"])
    counted = [x for x in t.values() if not x.user_attrs.get("cut_off")]
    assert len(counted) == 5 and all(x.state.name == "COMPLETE" for x in counted)
    assert len({json.dumps(x.params, sort_keys=True) for x in counted}) == 5   # no trial repeated
    assert (out / "best" / "cv.json").is_file() and (out / "report.md").is_file()


@pytest.mark.slow
def test_trials_train_in_parallel_on_a_local_dask_cluster(project, imo, tmp_path):
    out = tmp_path / "sw"
    r = imo(*BASE, "--head-opt", "hidden=8", "--epochs", "2", "--folds", "fold", "--space", "good.toml",
            "--trials", "4", "--final-seeds", "1", "--workers", "2", "--out", out, cwd=project)
    assert r.code == 0, r.stderr
    assert "on 2 dask worker(s)" in r.stderr
    trials = study_of(out).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    pids = {w.split("pid ")[1] for t in trials for w in t.user_attrs["workers"]}
    assert len(pids) == 2 and str(os.getpid()) not in pids          # trained by both workers, not by the client
    assert (out / "best" / "cv.json").is_file()
