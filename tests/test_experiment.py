"""Seeds x folds through the real `imo train`: run folders per seed and fold, per-seed/per-fold/overall mean and
sample std equal to a computation from the per-run files, exact resume after a stop and after a kill, one
validation rule in every fold, and the layouts that must not be mixed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from imo_pipeline.errors import ConfigError
from imo_pipeline.manifest import Utterance
from imo_pipeline.training.config import TrainConfig
from imo_pipeline.training.trainer import split_indices
from store_utils import make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)

HEAD = ["--head", "concat", "--head-opt", "hidden=8", "--batch-size", "8", "--lr", "3e-3", "--no-progress"]
METRICS = ("wa", "ua", "f1_macro", "f1_weighted")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp")
    manifest, _ = make_partial_info_set(root / "cache", per_class=12, modalities=("audio", "text"), folds=3,
                                        speakers=3, seed=4)
    manifest.rename(root / "m.jsonl")
    (root / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n')
    return root


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"}
            for ln in (run / "metrics.jsonl").read_text().splitlines()]


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def without_time(result: dict) -> dict:
    out = json.loads(json.dumps(result))
    for r in out["runs"]:
        r.pop("train_seconds")
    return out


def test_seeds_give_a_folder_each_and_mean_std_equal_to_the_per_seed_files(project, imo):
    r = imo("train", "-m", "a,t", "--epochs", "2", *HEAD, "--seeds", "3", "--seed", "4", "--out", "runs/s3",
            cwd=project)
    assert r.code == 0, r.stderr
    out = project / "runs/s3"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["seed-4", "seed-5", "seed-6"]
    assert not (out / "config.json").exists()
    res = json.loads((out / "summary.json").read_text())
    per = {s: summary(out / f"seed-{s}") for s in (4, 5, 6)}
    for s in per:
        assert json.loads((out / f"seed-{s}" / "config.json").read_text())["train"]["seed"] == s
    for k in METRICS:
        vals = [per[s]["test"][k] for s in (4, 5, 6)]
        assert res["mean"][k] == pytest.approx(np.mean(vals))
        assert res["std"][k] == pytest.approx(np.std(vals, ddof=1))
        assert [res["per_seed"][str(s)]["mean"][k] for s in (4, 5, 6)] == pytest.approx(vals)
    assert res["n"] == 3 and res["seeds"] == [4, 5, 6] and "ddof=1" in res["std_definition"]
    a, b = load_file(out / "seed-4" / "best.safetensors"), load_file(out / "seed-5" / "best.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a)                       # the seeds are really different runs
    assert "mean ± std (seeds, n=3)" in r.stdout and "ddof=1" in r.stdout and "seed-6" in r.stdout
    # a list of seeds; re-running a finished experiment trains nothing and reports the same
    r = imo("train", "-m", "a,t", "--epochs", "2", *HEAD, "--seeds", "0,2", "--out", "runs/s02", cwd=project)
    assert r.code == 0, r.stderr
    assert sorted(p.name for p in (project / "runs/s02").iterdir() if p.is_dir()) == ["seed-0", "seed-2"]
    again = imo("train", "-m", "a,t", "--epochs", "2", *HEAD, "--seeds", "3", "--seed", "4", "--out", "runs/s3",
                cwd=project)
    assert again.code == 0 and "already trained" in again.stderr
    assert json.loads((out / "summary.json").read_text())["mean"] == res["mean"]


def test_cv_x_seeds_reports_per_fold_per_seed_and_overall(project, imo):
    r = imo("train", "-m", "a,t", "--epochs", "2", *HEAD, "--folds", "fold", "--seeds", "2", "--out", "runs/cvs",
            cwd=project)
    assert r.code == 0, r.stderr
    out = project / "runs/cvs"
    res = json.loads((out / "cv.json").read_text())
    groups = ["Ses01", "Ses02", "Ses03"]
    per = {(g, s): summary(out / f"fold-{g}" / f"seed-{s}")["test"] for g in groups for s in (0, 1)}
    assert [(x["fold"], x["seed"], x["folder"]) for x in res["runs"]] == \
        [(g, s, f"fold-{g}/seed-{s}") for g in groups for s in (0, 1)]
    for k in METRICS:
        allv = [per[g, s][k] for g in groups for s in (0, 1)]
        assert res["mean"][k] == pytest.approx(np.mean(allv)) and res["std"][k] == pytest.approx(np.std(allv, ddof=1))
        for g in groups:
            v = [per[g, s][k] for s in (0, 1)]
            assert res["per_fold"][g]["mean"][k] == pytest.approx(np.mean(v))
            assert res["per_fold"][g]["std"][k] == pytest.approx(np.std(v, ddof=1))
        seed_means = [np.mean([per[g, s][k] for g in groups]) for s in (0, 1)]
        assert [res["per_seed"][str(s)]["mean"][k] for s in (0, 1)] == pytest.approx(seed_means)
        assert res["std_over_seeds"][k] == pytest.approx(np.std(seed_means, ddof=1))
    for g in groups:                                               # the held-out group is the test set of its runs
        cfg = json.loads((out / f"fold-{g}" / "seed-1" / "config.json").read_text())
        assert cfg["train"]["test_group"] == g and cfg["train"]["seed"] == 1
    assert "per fold (mean ± std over seeds)" in r.stdout and "std of the per-seed means" in r.stdout


def test_cv_x_seeds_resumes_exactly_after_stops(project, imo):
    args = ["train", "-m", "a,t", "--epochs", "3", *HEAD, "--folds", "fold", "--seeds", "2"]
    assert imo(*args, "--out", "runs/ref", cwd=project).code == 0
    r = imo(*args, "--out", "runs/stopped", "--stop-after", "1", cwd=project)
    assert r.code == 0 and "re-run the same command to resume" in r.stderr
    assert not (project / "runs/stopped/cv.json").exists()
    assert len(rows(project / "runs/stopped/fold-Ses01/seed-0")) == 1
    assert imo(*args, "--out", "runs/stopped", "--stop-after", "2", cwd=project).code == 0
    r = imo(*args, "--out", "runs/stopped", cwd=project)
    assert r.code == 0, r.stderr
    assert "resuming" in r.stderr and "after epoch 2" in r.stderr
    ref, got = project / "runs/ref", project / "runs/stopped"
    for g in ("Ses01", "Ses02", "Ses03"):
        for s in (0, 1):
            assert rows(got / f"fold-{g}/seed-{s}") == rows(ref / f"fold-{g}/seed-{s}"), (g, s)
    a, b = (json.loads((d / "cv.json").read_text()) for d in (ref, got))
    assert without_time(a) == without_time(b)


@pytest.mark.slow
def test_cv_x_seeds_killed_mid_run_resumes_to_the_uninterrupted_result(project, tmp_path):
    """A real `imo train --folds --seeds` process SIGKILLed while its third run trains, then re-run."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "imo_pipeline", "train", "-m", "a,t", "--epochs", "6", *HEAD, "--folds", "fold",
            "--seeds", "2"]
    ref = subprocess.run([*args, "--out", str(tmp_path / "ref")], cwd=project, env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([*args, "--out", str(out)], cwd=project, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    target = out / "fold-Ses02" / "seed-0" / "last.json"        # the third run has committed an epoch
    deadline = time.monotonic() + 300
    while proc.poll() is None and not target.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (out / "cv.json").exists() and not (out / "fold-Ses03").exists()
    final = subprocess.run([*args, "--out", str(out)], cwd=project, env=env, capture_output=True, text=True,
                           timeout=600)
    assert final.returncode == 0, final.stderr
    assert "already trained" in final.stderr                      # the first two runs are not trained again
    for g in ("Ses01", "Ses02", "Ses03"):
        for s in (0, 1):
            assert rows(out / f"fold-{g}/seed-{s}") == rows(tmp_path / f"ref/fold-{g}/seed-{s}"), (g, s)
    a, b = (json.loads((d / "cv.json").read_text()) for d in (tmp_path / "ref", out))
    assert without_time(a) == without_time(b)


def _utts(speakers: bool = True) -> list[Utterance]:
    out = []
    for f in range(4):
        for spk in range(5):
            for k in range(6):
                out.append(Utterance(f"f{f}s{spk}u{k}", "ang" if k % 2 else "hap", split="valid" if f == 1 else "train",
                                     fold=f"S{f}", speaker=f"S{f}-{spk}" if speakers else None))
    return out


def test_every_fold_validates_on_a_share_of_its_training_speakers():
    utts = _utts()
    shares = set()
    for g in ("S0", "S1", "S2", "S3"):
        cfg = TrainConfig(modalities=["text"], stores={}, manifest="", fold_key="fold", test_group=g, seed=3)
        sp = split_indices(utts, cfg, log=lambda *a: None)
        spk = {k: {utts[i].speaker for i in sp[k]} for k in sp}
        assert {utts[i].fold for i in sp["test"]} == {g} and len(sp["test"]) == 30
        assert not spk["train"] & spk["valid"] and not (spk["train"] | spk["valid"]) & spk["test"]
        assert len(spk["valid"]) == 2                 # round(0.1 x 15 training speakers), in every fold alike
        assert all(utts[i].speaker in spk["valid"] for i in sp["valid"])   # whole speakers: the manifest's valid
        shares.add(len(sp["valid"]))                                       # split (session S1) is not used
        assert len(sp["train"]) + len(sp["valid"]) == 90
    assert shares == {12}
    logs = []
    cfg = TrainConfig(modalities=["text"], stores={}, manifest="", fold_key="fold", test_group="S0", seed=4)
    other = split_indices(utts, cfg, log=logs.append)
    assert "2 of the 15 training speakers" in logs[0] and "seed 4" in logs[0]
    assert len(other["valid"]) == 12                   # the seed draws the speakers


def test_without_speakers_or_with_valid_rule_utterances_a_share_of_utterances_validates():
    for utts, rule in ((_utts(speakers=False), "speakers"), (_utts(), "utterances")):
        cfg = TrainConfig(modalities=["text"], stores={}, manifest="", fold_key="fold", test_group="S2",
                          valid_rule=rule, valid_fraction=0.2)
        logs = []
        sp = split_indices(utts, cfg, log=logs.append)
        assert len(sp["valid"]) == 18 and len(sp["train"]) == 72 and "training utterances" in logs[0]
        assert not set(sp["valid"]) & set(sp["train"])


def test_a_single_split_keeps_the_manifests_valid_split():
    from dataclasses import replace

    split = {"S0": "train", "S1": "valid", "S2": "train", "S3": "test"}
    utts = [replace(u, split=split[u.fold]) for u in _utts()]
    sp = split_indices(utts, TrainConfig(modalities=["text"], stores={}, manifest=""), log=lambda *a: None)
    assert {utts[i].fold for i in sp["valid"]} == {"S1"} and {utts[i].fold for i in sp["train"]} == {"S0", "S2"}
    utts = [replace(u, split="test" if u.fold == "S3" else "train") for u in utts]   # no valid split: the folds' rule
    sp = split_indices(utts, TrainConfig(modalities=["text"], stores={}, manifest=""), log=lambda *a: None)
    assert len({utts[i].speaker for i in sp["valid"]}) == 2 and len(sp["valid"]) == 12


@pytest.mark.parametrize("first,second,fragment", [
    (["--folds", "fold"], ["--seeds", "2"], "holds a cross-validation (cv.json or fold-* folders), not seeded runs"),
    (["--seeds", "2"], ["--folds", "fold"], "holds seeded runs of one split (seed-* folders), not a cross-validation"),
    (["--seeds", "2"], [], "holds seeded runs (seed-* folders); pass a new --out, or --seeds to resume them"),
    ([], ["--seeds", "2"], "holds a single run (config.json), not seeded runs"),
    (["--folds", "fold"], ["--folds", "fold", "--seeds", "2"], "holds a run trained without --seeds"),
])
def test_layouts_are_not_mixed(project, imo, tmp_path, first, second, fragment):
    base = ["train", "-m", "t", "--epochs", "1", *HEAD, "--out", tmp_path / "x"]
    assert imo(*base, *first, cwd=project).code == 0
    r = imo(*base, *second, cwd=project)
    assert r.code == 2 and r.error.startswith("error: ") and fragment in r.error, r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("value,fragment", [
    ("0", "--seeds 0: give a count >= 1"), ("1,1", "--seeds 1,1: give distinct whole numbers >= 0"),
    ("x", "--seeds 'x': give a count"), ("1,-2", "give distinct whole numbers >= 0"),
])
def test_bad_seeds_are_refused_in_one_line(project, imo, tmp_path, value, fragment):
    r = imo("train", "-m", "t", *HEAD, "--seeds", value, "--out", tmp_path / "x", cwd=project)
    assert r.code == 2 and fragment in r.error, r.stderr
    assert not (tmp_path / "x").exists()


def test_a_seed_folder_name_comes_from_a_whole_number_only(tmp_path):
    from imo_pipeline.training.runs import RunDir

    assert RunDir(tmp_path).seed(3).path == tmp_path / "seed-3"
    with pytest.raises(ConfigError, match="seed '../x'"):
        RunDir(tmp_path).seed("../x")


def test_a_run_resumes_only_on_the_splits_it_began_with(project, imo, tmp_path):
    """A run begun before an option existed resumes with its default; one whose splits would now differ (e.g.
    begun under another validation rule) is refused rather than trained on other data."""
    args = ["train", "-m", "t", "--epochs", "3", *HEAD, "--out", tmp_path / "r"]
    assert imo(*args, "--stop-after", "1", cwd=project).code == 0
    path = tmp_path / "r" / "config.json"
    cfg = json.loads(path.read_text())
    for k in ("valid_rule", "max_frames", "total_updates"):      # as an older imo wrote it
        del cfg["train"][k]
    path.write_text(json.dumps(cfg))
    r = imo(*args, "--stop-after", "2", cwd=project)
    assert r.code == 0 and "resuming" in r.stderr and "after epoch 1" in r.stderr, r.stderr
    cfg["splits"]["valid"] += 1
    path.write_text(json.dumps(cfg))
    r = imo(*args, cwd=project)
    assert r.code == 2 and "was trained on splits" in r.error and "pass a new --out" in r.error, r.stderr
    cfg["splits"]["valid"] -= 1
    path.write_text(json.dumps(cfg))
    r = imo(*args, cwd=project)
    assert r.code == 0 and "resuming" in r.stderr, r.stderr
