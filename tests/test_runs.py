"""Run folders under hostile conditions: atomic epoch commits (a kill inside the checkpoint window resumes to
the uninterrupted result), stores replaced under a run, tampered checkpoints, path escape through fold values,
every `imo train` option validated, non-finite training stopped, failed or unlabeled data refused.

CLI cases go through the real entry point (``imo_pipeline.cli.run``: one line, exit status 2); the kill test
runs `imo train` as a real process and SIGKILLs it between the files of a commit."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from imo_pipeline.errors import ConfigError, ManifestError, StoreError
from imo_pipeline.manifest import Manifest, ShardSpec, load_manifest
from imo_pipeline.paths import safe_name
from imo_pipeline.store import PartWriter, StoreMeta, open_store
from imo_pipeline.training import runs as runs_module
from imo_pipeline.training.data import open_corpus
from imo_pipeline.training.runs import RunDir, load_run
from imo_pipeline.training.trainer import Trainer, TrainConfig, load_corpus, train
from store_utils import QUIET, SHAPES, make_partial_info_set, one_thread, write_store  # noqa: F401

HEAD = ["--head", "concat", "--head-opt", "hidden=8", "--batch-size", "8", "--lr", "3e-3", "--no-progress"]


def refused(r, *fragments: str) -> str:
    """Assert exit status 2 with one `error:` line (no traceback) holding every fragment."""
    assert r.code == 2, (r.code, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.error.startswith("error: "), r.stderr
    for f in fragments:
        assert f in r.error, (f, r.error)
    return r.error


def restamp(manifest: Path, stores: dict[str, Path], man: Manifest | None = None) -> None:
    """Give the stores the fingerprint of an edited manifest (as if extracted from it)."""
    fp = (man or load_manifest(manifest)).fingerprint
    for p in stores.values():
        zj = Path(p) / "zarr.json"
        meta = json.loads(zj.read_text())
        meta["attributes"]["imo"]["manifest_fingerprint"] = fp
        zj.write_text(json.dumps(meta))


def make_project(root: Path, **kw) -> Path:
    manifest, _ = make_partial_info_set(root / "cache", per_class=kw.pop("per_class", 8),
                                        modalities=("audio", "text"), seed=kw.pop("seed", 4), **kw)
    manifest.rename(root / "m.jsonl")
    (root / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n')
    return root


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("proj"), folds=2)


def rows(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k != "seconds"}
            for ln in (run / "metrics.jsonl").read_text().splitlines()]


def tensors(path: Path) -> dict[str, np.ndarray]:
    return {k: v.numpy() for k, v in load_file(path).items()}


# --- the commit protocol -----------------------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for SIGKILL in-process: nothing after it runs (no cleanup catches a BaseException here)."""


def _commit_epoch(rd: RunDir, model: torch.nn.Module, epoch: int, improved: bool) -> None:
    c = rd.commit()
    c.stage(RunDir.METRICS, "".join(json.dumps({"epoch": e}) + "\n" for e in range(1, epoch + 1)).encode())
    if improved:
        c.stage_checkpoint("best", model, {"epoch": epoch})
    c.stage_checkpoint("last", model, {"epoch": epoch}, state={"w": torch.full((3,), float(epoch))},
                       covers=(RunDir.METRICS,))
    c.apply()


REAL = {"_write_file": runs_module._write_file, "_replace": runs_module._replace}


def _patch(monkeypatch, step) -> None:
    """Route the commit's file writes and renames through ``step(real, *args)``."""
    for name, real in REAL.items():
        monkeypatch.setattr(runs_module, name, lambda *a, real=real: step(real, *a))


@pytest.mark.parametrize("improved", [True, False])
def test_a_crash_at_any_step_of_a_commit_leaves_one_whole_epoch(tmp_path, monkeypatch, improved):
    model = torch.nn.Linear(3, 2)
    w1 = model.weight.detach().clone()
    rd = RunDir(tmp_path / "r")

    def two_epochs(crash_at: int | None) -> int:
        """Commit epoch 1, then epoch 2 with a crash after step ``crash_at``; returns the steps of epoch 2."""
        shutil.rmtree(rd.path, ignore_errors=True)
        with rd.training():
            with torch.no_grad():
                model.weight.copy_(w1)
            _commit_epoch(rd, model, 1, True)
            with torch.no_grad():
                model.weight.add_(1.0)
            count = [0]

            def step(real, *a):
                real(*a)
                count[0] += 1
                if count[0] == crash_at:
                    raise Crash

            _patch(monkeypatch, step)
            try:
                _commit_epoch(rd, model, 2, improved)
            finally:
                monkeypatch.undo()
        return count[0]

    n_steps = two_epochs(None)
    assert n_steps >= 8                         # staged files, journal, renames
    seen = set()
    for crash_at in range(1, n_steps + 1):
        with pytest.raises(Crash):
            two_epochs(crash_at)
        reader = RunDir(rd.path)              # a reader (`imo evaluate`) finishes a journaled commit, drops nothing
        read_epoch = reader.read_checkpoint("last", with_state=True, strict=True)[0]["epoch"]
        with rd.training():                   # a trainer reopening it rolls forward or back
            record, weights, state = rd.read_checkpoint("last", with_state=True, strict=True)
            epoch = record["epoch"]
            assert read_epoch == epoch
            seen.add(epoch)
            assert float(state["w"][0]) == epoch
            assert torch.equal(weights["weight"], w1 + (1.0 if epoch == 2 else 0.0)), crash_at
            assert [r["epoch"] for r in rd.read_metrics()] == list(range(1, epoch + 1))
            best, _, _ = rd.read_checkpoint("best")
            assert best["epoch"] == (2 if epoch == 2 and improved else 1)
            left = [p.name for p in rd.path.iterdir() if p.name.endswith((".new", ".tmp")) or p.name == "commit.json"]
            assert not left, (crash_at, left)
    assert seen == {1, 2}                     # crashes before the journal roll back, after it roll forward


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    import imo_pipeline.training.runs as runs

    func, name, nth = sys.argv[1], sys.argv[2], int(sys.argv[3])
    real, seen = getattr(runs, func), [0]

    def hooked(*args):
        real(*args)
        if any(Path(a).name == name for a in args if isinstance(a, (str, Path))):
            seen[0] += 1
            if seen[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)   # inside the checkpoint window

    setattr(runs, func, hooked)
    sys.argv = ["imo", *sys.argv[4:]]
    from imo_pipeline.cli import run
    run()
""")


@pytest.mark.slow
def test_imo_train_killed_inside_the_checkpoint_window_resumes_to_the_uninterrupted_result(project, imo, tmp_path):
    args = ["train", "-m", "a,t", "--epochs", "6", *HEAD]
    ref = imo(*args, "--out", tmp_path / "ref", cwd=project)
    assert ref.code == 0, ref.stderr
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    # (function, file, occurrence in that process) -> what the folder shows right after the kill
    plans = [
        ("_write_file", "last.state.pt.new", 2, "staged"),   # epoch 2 staged halfway, no journal: rolled back to 1
        ("_replace", "commit.json", 1, "journal"),           # epoch 2 journal written, nothing renamed yet
        ("_replace", "last.state.pt", 1, "journal"),         # killed again while reopening finishes epoch 2's commit
        ("_replace", "last.safetensors", 2, "journal"),      # epoch 4: last.safetensors renamed, last.state.pt not
    ]
    for func, name, nth, evidence in plans:
        p = subprocess.run([sys.executable, str(killer), func, name, str(nth), *args, "--out", str(out)],
                           cwd=project, env=env, capture_output=True, text=True, timeout=300)
        assert p.returncode == -signal.SIGKILL, (func, name, p.returncode, p.stderr[-2000:])
        if evidence == "staged":
            assert list(out.glob("*.new")) and not (out / "commit.json").exists()
        else:
            assert (out / "commit.json").is_file()
    final = subprocess.run([sys.executable, "-m", "imo_pipeline", *args, "--out", str(out)], cwd=project, env=env,
                           capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    assert "resuming" in final.stderr and "after epoch 4" in final.stderr, final.stderr[:3000]
    ref_dir = tmp_path / "ref"
    assert rows(out) == rows(ref_dir)
    drop = {"train_seconds", "data_wait_share"}
    a, b = (json.loads((d / "summary.json").read_text()) for d in (ref_dir, out))
    assert {k: v for k, v in a.items() if k not in drop} == {k: v for k, v in b.items() if k not in drop}
    for f in ("last.safetensors", "best.safetensors"):
        x, y = tensors(ref_dir / f), tensors(out / f)
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x), f
    assert not list(out.glob("*.new")) and not (out / "commit.json").exists()


def test_a_second_trainer_on_the_same_folder_is_refused(project, tmp_path):
    cfg = TrainConfig(modalities=["text"], stores={"text": str(project / "cache/text.zarr")},
                      manifest=str(project / "m.jsonl"), head="concat", head_options={"hidden": 8}, epochs=1)
    with RunDir(tmp_path / "r").training():
        with pytest.raises(ConfigError, match=r"is being trained by another process .*pass a new --out"):
            train(cfg, tmp_path / "r", **QUIET)
    assert train(cfg, tmp_path / "r", **QUIET)["epochs_run"] == 1


# --- checkpoints and run folders refused in one line -------------------------------------------------------------


def resume_args(run: Path) -> list:
    return ["train", "-m", "a,t", "--epochs", "4", *HEAD, "--out", run]


@pytest.fixture(scope="module")
def stopped(project, tmp_path_factory):
    """A run stopped after epoch 2 of 4 (resumable) by `imo train --stop-after 2`; copied by each test."""
    from imo_pipeline import cli

    out = tmp_path_factory.mktemp("stopped") / "run"
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(project)
    sys.argv = ["imo", *map(str, resume_args(out)), "--stop-after", "2"]
    try:
        with pytest.raises(SystemExit) as e:
            cli.run()
    finally:
        os.chdir(cwd)
        sys.argv = argv
    assert e.value.code in (0, None) and len(rows(out)) == 2
    return out


def test_resume_of_the_stopped_run_works_from_the_cli(project, stopped, imo, tmp_path):
    run = shutil.copytree(stopped, tmp_path / "run")
    r = imo(*resume_args(run), cwd=project)
    assert r.code == 0, r.stderr
    assert "resuming" in r.stderr and len(rows(run)) == 4


@pytest.mark.parametrize("damage,fragment", [
    ("truncate", "does not match last.json (truncated, edited or replaced"),
    ("flip", "does not match last.json"),
    ("swap", "does not match last.json"),
    ("missing", "last.safetensors is missing but last.json names it"),
])
def test_a_damaged_last_checkpoint_is_refused_on_resume(project, stopped, imo, tmp_path, damage, fragment):
    run = shutil.copytree(stopped, tmp_path / "run")
    f = run / "last.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))
    elif damage == "swap":
        shutil.copy(run / "best.safetensors", f)   # weights of another epoch (best is epoch 1 or 2)
        if (run / "best.safetensors").read_bytes() == data:
            f.write_bytes(data[:-4] + b"\0\0\0\0")
    else:
        f.unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    refused(imo(*resume_args(run), cwd=project), str(f) if damage != "missing" else "last.safetensors", fragment,
            "delete the run folder")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before   # nothing rewritten


def test_a_pickle_planted_as_run_state_never_runs(project, stopped, imo, tmp_path):
    run = shutil.copytree(stopped, tmp_path / "run")
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (run / "last.state.pt").write_bytes(pickle.dumps({"optimizer": Evil()}))
    refused(imo(*resume_args(run), cwd=project), "last.state.pt does not match last.json", "pass a new --out")
    # an attacker who also fixes the digest meets the safe loader
    rec = json.loads((run / "last.json").read_text())
    import hashlib
    rec["files"]["last.state.pt"] = hashlib.sha256((run / "last.state.pt").read_bytes()).hexdigest()
    (run / "last.json").write_text(json.dumps(rec))
    line = refused(imo(*resume_args(run), cwd=project), "run state", "which imo does not load",
                   "delete the run folder", "or pass a new --out")
    assert "weights_only=False" not in line
    assert not marker.exists()


def test_a_tampered_or_truncated_best_checkpoint_is_refused_by_evaluate(project, stopped, imo, tmp_path):
    run = shutil.copytree(stopped, tmp_path / "run")
    best = run / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    refused(imo("evaluate", run, cwd=project), "best.safetensors does not match best.json")
    # an older record without digests: the safetensors reader itself refuses the truncated file
    rec = json.loads((run / "best.json").read_text())
    del rec["files"]
    (run / "best.json").write_text(json.dumps(rec))
    refused(imo("evaluate", run, cwd=project), "best.safetensors is truncated or not a safetensors file")
    (run / "config.json").write_text("{not json")
    refused(imo("evaluate", run, cwd=project), "config.json is not valid JSON")


def test_out_that_is_a_file_or_a_foreign_folder_is_refused(project, imo, tmp_path):
    f = tmp_path / "taken.txt"
    f.write_text("mine")
    refused(imo("train", "-m", "t", "--out", f, *HEAD, cwd=project), f"--out {f} is a file")
    refused(imo("train", "-m", "t", "--out", f, "--folds", "fold", *HEAD, cwd=project), f"--out {f} is a file")
    assert f.read_text() == "mine"
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "config.json").write_text("{}")
    (foreign / "thesis.tex").write_text("precious")
    refused(imo("train", "-m", "t", "--out", foreign, *HEAD, cwd=project), "is not a run folder (it holds 'thesis.tex')")
    assert (foreign / "config.json").read_text() == "{}" and (foreign / "thesis.tex").read_text() == "precious"


# --- a store replaced under a run ---------------------------------------------------------------------------------


def replace_store(path: Path, manifest: Path, encoder: str = "synthetic", longer: int = 0) -> None:
    """Re-extract ``path`` in place: other weights (``encoder``) or other data (``longer`` frames more)."""
    st = open_store(path)
    items = {uid: np.ones((len(st.get(uid)) + longer, st.n_layers, st.dim), np.float32) for uid in st.ids}
    shutil.rmtree(path)
    write_store(path, st.modality, items, load_manifest(manifest).fingerprint, encoder=encoder,
                frame_rate=st.meta.frame_rate)


@pytest.mark.parametrize("change,fragment", [
    ({"encoder": "other"}, "encoder_fingerprint 'fp-synthetic-2x16' -> 'fp-other-2x16'"),
    ({"longer": 1}, "content fingerprint"),
])
def test_a_store_replaced_under_a_run_is_refused_by_resume_and_evaluate(tmp_path, imo, change, fragment):
    root = make_project(tmp_path / "p", per_class=5)
    r = imo("train", "-m", "a,t", "--out", "runs/x", "--epochs", "3", "--stop-after", "1", *HEAD, cwd=root)
    assert r.code == 0, r.stderr
    shutil.copytree(root / "cache/audio.zarr", tmp_path / "original-audio.zarr")
    config = (root / "runs/x/config.json").read_bytes()
    replace_store(root / "cache/audio.zarr", root / "m.jsonl", **change)
    msg = f"store {root / 'cache/audio.zarr'} changed since run runs/x was trained on it"
    refused(imo("train", "-m", "a,t", "--out", "runs/x", "--epochs", "3", *HEAD, cwd=root), msg, fragment,
            "pass a new --out, or restore the store")
    assert (root / "runs/x/config.json").read_bytes() == config          # the run still describes its old store
    refused(imo("evaluate", "runs/x", cwd=root), msg, fragment)
    refused(imo("evaluate", "runs/x", "--store", f"a={root / 'cache/audio.zarr'}", cwd=root), msg)
    # another copy of the store it was trained on is fine; one made by another encoder is not
    ok = imo("evaluate", "runs/x", "--store", f"a={tmp_path / 'original-audio.zarr'}", "--out", tmp_path / "ev", cwd=root)
    assert ok.code == 0, ok.stderr
    assert json.loads((tmp_path / "ev/eval-test.json").read_text())["stores"]["audio"].endswith("original-audio.zarr")
    if "encoder" in change:
        refused(imo("evaluate", "runs/x", "--store", f"a={root / 'cache/audio.zarr'}", "--out", tmp_path / "e2", cwd=root),
                "changed since")
        other = tmp_path / "other.zarr"
        shutil.copytree(root / "cache/audio.zarr", other)
        refused(imo("evaluate", "runs/x", "--store", f"a={other}", cwd=root),
                "has encoder_fingerprint='fp-other-2x16' but run runs/x (trained on")
    # restoring the store lets the run go on
    shutil.rmtree(root / "cache/audio.zarr")
    shutil.copytree(tmp_path / "original-audio.zarr", root / "cache/audio.zarr")
    r = imo("train", "-m", "a,t", "--out", "runs/x", "--epochs", "3", *HEAD, cwd=root)
    assert r.code == 0 and "resuming runs/x after epoch 1" in r.stderr, r.stderr


# --- path escape through data ---------------------------------------------------------------------------------------


def test_fold_values_never_become_paths_outside_out(tmp_path, imo):
    root = make_project(tmp_path / "p", per_class=5, folds=2)
    lines = [json.loads(x) for x in (root / "m.jsonl").read_text().splitlines()]
    evil = {"Ses01": "../../../escaped", "Ses02": "/tmp/abs/../x y"}
    for ln in lines:
        ln["fold"] = evil[ln["fold"]]
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    restamp(root / "m.jsonl", {m: root / f"cache/{m}.zarr" for m in ("audio", "text")})
    (root / "runs").mkdir()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    r = imo("train", "-m", "a,t", "--folds", "fold", "--out", "runs/cv", "--epochs", "1", *HEAD, cwd=root)
    assert r.code == 0, r.stderr
    new = sorted(str(p) for p in tmp_path.rglob("*") if str(p) not in before)
    outside = [p for p in new if not p.startswith(str(root / "runs/cv"))]
    assert new and not outside, outside
    assert not (tmp_path / "escaped").exists() and not (root.parent / "escaped").exists()
    cv = json.loads((root / "runs/cv/cv.json").read_text())
    assert set(cv["folds"]) == set(evil.values())                    # the groups as the manifest names them
    assert cv["folders"] == {g: "fold-" + safe_name(g) for g in evil.values()}
    assert sorted(p.name for p in (root / "runs/cv").iterdir() if p.is_dir()) == sorted(cv["folders"].values())
    assert all("/" not in name and name not in (".", "..") for name in cv["folders"].values())
    # two groups whose folder names would collide are refused before anything is trained
    crafted = safe_name("../../../escaped")
    for ln in lines:
        ln["fold"] = crafted if ln["fold"] == "/tmp/abs/../x y" else ln["fold"]
    (root / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    restamp(root / "m.jsonl", {m: root / f"cache/{m}.zarr" for m in ("audio", "text")})
    refused(imo("train", "-m", "a,t", "--folds", "fold", "--out", "runs/cv2", "--epochs", "1", *HEAD, cwd=root),
            "map to the same folder", "rename one of them")
    assert not (root / "runs/cv2").exists() or not any((root / "runs/cv2").iterdir())


# --- options ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,fragment", [
    (["--lr", "nan"], "--lr nan: use a finite number > 0"),
    (["--lr", "inf"], "--lr inf: use a finite number > 0"),
    (["--lr", "0"], "--lr 0.0: use a finite number > 0"),
    (["--betas", "2,3"], "--betas '2.0,3.0': use two numbers in [0, 1)"),
    (["--betas", "0.9,nan"], "--betas '0.9,nan': use two numbers in [0, 1)"),
    (["--betas", "0.9"], "--betas '0.9': use two numbers in [0, 1)"),
    (["--eps", "0"], "--eps 0.0: use a finite number > 0"),
    (["--weight-decay", "-0.1"], "--weight-decay -0.1: use a finite number >= 0"),
    (["--warmup", "nan"], "--warmup nan: use a fraction of all steps in [0, 1) or a whole number of steps"),
    (["--warmup", "2.5"], "--warmup 2.5: use a fraction"),
    (["--power", "0"], "--power 0.0: use a finite number > 0"),
    (["--clip", "-1"], "--clip -1.0: use a finite max gradient norm >= 0 (0: no clipping)"),
    (["--clip", "inf"], "--clip inf"),
    (["--downsample", "a=0"], "--downsample 'audio=0': use a whole number of frames >= 1, or auto"),
    (["--downsample", "a=1.5"], "--downsample 'audio=1.5': use a whole number"),
    (["--downsample", "v=2"], "--downsample 'video=2': video is not among --modalities audio,text"),
    (["--stop-after", "-1"], "--stop-after -1: use a whole number of epochs >= 1"),
    (["--stop-after", "0"], "--stop-after 0"),
    (["--patience", "-1"], "--patience -1: use a whole number of epochs >= 0"),
    (["--epochs", "0"], "--epochs 0: use a whole number >= 1"),
    (["--batch-size", "0"], "--batch-size 0: use a whole number >= 1"),
    (["--accum", "0"], "--accum 0"),
    (["--threads", "0"], "--threads 0"),
    (["--seed", "-1"], "--seed -1: use a whole number >= 0"),
    (["--schedule", "linear"], "--schedule 'linear': use one of poly, cosine, constant"),
    (["--in-memory", "maybe"], "--in-memory 'maybe': use one of auto, yes, no"),
    (["--class-weights", "inverse", "--task", "binary"], "--class-weights 'inverse': use none or balanced"),
    (["--class-weights", "balanced", "--task", "regression"], "--task regression has no classes"),
    (["--best-metric", "wa", "--task", "regression"], "--best-metric 'wa' is not a regression metric; use one of mae"),
    (["--best-metric", "acc", "--task", "classification"], "use one of wa, ua, f1_macro, f1_weighted"),
])
def test_every_bad_train_option_is_one_line_naming_it(project, imo, tmp_path, args, fragment):
    out = tmp_path / "never"
    refused(imo("train", "-m", "a,t", "--out", out, *args, "--no-progress", cwd=project), fragment)
    assert not out.exists()


def test_a_non_finite_loss_stops_the_run_with_status_2(project, imo, tmp_path):
    out = tmp_path / "blowup"
    args = ["train", "-m", "a,t", "--head", "concat", "--head-opt", "hidden=8", "--batch-size", "8",
            "--epochs", "3", "--no-progress", "--out", out, "--warmup", "0"]
    line = refused(imo(*args, "--lr", "1e20", cwd=project), f"run {out} stopped at epoch 1", "became non-finite",
                   "Lower --lr (now 1e+20)", "new --out", "imo verify")
    assert "no epoch was committed" in line
    assert not (out / "summary.json").exists() and not (out / "last.json").exists()
    refused(imo(*args, "--lr", "1e38", "--out", tmp_path / "overflow", cwd=project), "became non-finite")


def test_the_non_finite_check_keeps_the_last_good_epoch(project, tmp_path):
    cfg = TrainConfig(modalities=["text"], stores={"text": str(project / "cache/text.zarr")},
                      manifest=str(project / "m.jsonl"), head="concat", head_options={"hidden": 8}, epochs=3)
    _, corpus = load_corpus(cfg, **QUIET)
    trainer = Trainer(cfg, tmp_path / "r", corpus, **QUIET)
    real_step = trainer.opt.step

    def poisoned_step(*a, **kw):             # the last optimizer step of epoch 2 leaves a NaN weight
        out = real_step(*a, **kw)
        if trainer.state.step == 2 * trainer.steps_per_epoch - 1:
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = float("nan")
        return out

    trainer.opt.step = poisoned_step
    with pytest.raises(ConfigError, match=r"stopped at epoch 2: the weights \(.*\) became non-finite .*last good "
                                          r"checkpoint \(epoch 1\) is kept"):
        trainer.run()
    assert [r["epoch"] for r in rows(tmp_path / "r")] == [1]
    assert json.loads((tmp_path / "r/last.json").read_text())["epoch"] == 1
    assert all(np.isfinite(v).all() for v in tensors(tmp_path / "r/last.safetensors").values())


# --- failed and unlabeled data ----------------------------------------------------------------------------------------


def all_failed_store(path: Path, modality: str, manifest: Path, ids: list[str]) -> Path:
    L, D, rate, _ = SHAPES[modality]
    meta = StoreMeta(modality=modality, encoder={"type": "synthetic", "source": None, "layers": "all"},
                     encoder_fingerprint=f"fp-synthetic-{L}x{D}", layers=list(range(L)), dim=D, frame_rate=rate,
                     manifest_fingerprint=load_manifest(manifest).fingerprint)
    shutil.rmtree(path, ignore_errors=True)
    with PartWriter(path, ShardSpec(0, 1), meta, ids, shard_mb=1, chunk_mb=0.25) as w:
        w.finish({i: "decode error: corrupt file" for i in ids})
    return path


def test_a_run_whose_every_utterance_failed_extraction_says_so(tmp_path, imo):
    root = make_project(tmp_path / "p", per_class=5)
    ids = [u.id for u in load_manifest(root / "m.jsonl")]
    all_failed_store(root / "cache/audio.zarr", "audio", root / "m.jsonl", ids)
    refused(imo("train", "-m", "a,t", "--out", "runs/x", *HEAD, cwd=root),
            f"all {len(ids)} utterances failed extraction in store {root / 'cache/audio.zarr'}",
            f"see its errors file {root / 'cache/audio.errors.jsonl'}")
    assert "no split=train" not in imo("train", "-m", "a", "--out", "runs/y", *HEAD, cwd=root).stderr


def test_a_run_whose_train_utterances_all_failed_says_so(tmp_path):
    train_ids = [f"{c}_{i:03d}" for c in ("ang", "hap", "neu", "sad") for i in range(3)]   # 60 % of 5 per class
    manifest, stores = make_partial_info_set(tmp_path / "d", per_class=5, modalities=("text",), seed=2,
                                             drop={"text": train_ids})
    cfg = TrainConfig(modalities=["text"], stores={"text": str(stores["text"])}, manifest=str(manifest),
                      head="concat", head_options={"hidden": 8}, epochs=1)
    with pytest.raises(StoreError, match=rf"all {len(train_ids)} split=train utterances failed extraction in store "
                                         rf".*text.zarr .*errors file .*text.errors.jsonl"):
        train(cfg, tmp_path / "run", **QUIET)


def test_unlabeled_utterances_are_refused_by_training(tmp_path):
    manifest, stores = make_partial_info_set(tmp_path / "d", per_class=5, modalities=("text",), seed=2)
    man = load_manifest(manifest)
    gone = [u.id for u in man if u.split == "valid"][:3]
    utts = [replace(u, label=None) if u.id in gone else u for u in man]
    unlabeled = Manifest(utts, man.data_root, str(manifest))
    restamp(manifest, stores, unlabeled)
    corpus = open_corpus(unlabeled, stores, **QUIET)
    cfg = TrainConfig(modalities=["text"], stores={"text": str(stores["text"])}, manifest=str(manifest),
                      head="concat", head_options={"hidden": 8}, epochs=1)
    with pytest.raises(ManifestError, match=rf"3 utterance\(s\) of train/valid/test have no label \(e.g. "
                                            rf"'{gone[0]}'\)"):
        Trainer(cfg, tmp_path / "run", corpus, **QUIET)
    assert not (tmp_path / "run").exists()
    # the same utterances without a split are simply not used
    utts = [replace(u, label=None, split=None) if u.id in gone else u for u in man]
    quiet = Manifest(utts, man.data_root, str(manifest))
    restamp(manifest, stores, quiet)
    summary = Trainer(cfg, tmp_path / "run2", open_corpus(quiet, stores, **QUIET), **QUIET).run()
    assert summary["epochs_run"] == 1


def test_predict_features_that_overflow_float16_are_refused(stopped):
    run = load_run(stopped)
    st = {m: open_store(p) for m, p in run.stores.items()}
    uid = st["audio"].ids[0]
    item = {m: s.get(uid).astype(np.float32) for m, s in st.items()}
    assert np.isfinite(run.predict([item])).all()
    item["audio"][0, :, 0] = 1e30
    from imo_pipeline.errors import MediaError
    with pytest.raises(MediaError, match=r"audio features hold non-finite values .*float16's range"):
        run.predict([item])


def test_evaluate_refuses_unlabeled_utterances_of_its_split(project, stopped, imo, tmp_path):
    lines = [json.loads(x) for x in (project / "m.jsonl").read_text().splitlines()]
    test_ids = [x["id"] for x in lines if x["split"] == "test"]
    for x in lines:
        if x["id"] in test_ids[:2]:
            del x["label"]
    other = tmp_path / "unlabeled.jsonl"
    other.write_text("".join(json.dumps(x) + "\n" for x in lines))
    copies = {m: shutil.copytree(project / f"cache/{m}.zarr", tmp_path / f"{m}.zarr") for m in ("audio", "text")}
    restamp(other, copies)
    args = ["evaluate", stopped, "--manifest", other, "--store", f"a={copies['audio']}", "--store",
            f"t={copies['text']}", "--split", "test", "--out", tmp_path / "ev"]
    refused(imo(*args, cwd=project), f"2 utterance(s) of split test have no label (e.g. {test_ids[0]!r})",
            "imo predict --manifest")
    assert not list((tmp_path / "ev").glob("eval-*"))
    r = imo(*args[:-4], "--split", "valid", "--out", tmp_path / "ev", cwd=project)      # other splits are labeled
    assert r.code == 0, r.stderr


def test_a_full_disk_during_a_commit_is_one_line_and_the_run_resumes(project, stopped, imo, tmp_path, monkeypatch):
    run = shutil.copytree(stopped, tmp_path / "run")
    real = runs_module._write_file

    def full(path, data):
        if Path(path).name == "last.state.pt.new":
            raise OSError(28, "No space left on device")
        real(path, data)

    monkeypatch.setattr(runs_module, "_write_file", full)
    refused(imo(*resume_args(run), cwd=project), "last.state.pt.new (No space left on device)",
            "re-run the same command to resume")
    assert json.loads((run / "last.json").read_text())["epoch"] == 2 and len(rows(run)) == 2
    monkeypatch.setattr(runs_module, "_write_file", real)
    r = imo(*resume_args(run), cwd=project)
    assert r.code == 0 and "after epoch 2" in r.stderr and len(rows(run)) == 4, r.stderr


def test_evaluate_refuses_non_finite_outputs(project, stopped, imo, tmp_path):
    import hashlib

    from safetensors.torch import save_file
    run = shutil.copytree(stopped, tmp_path / "run")
    weights = {k: torch.full_like(torch.from_numpy(v), 3e38) for k, v in tensors(run / "best.safetensors").items()}
    save_file(weights, run / "best.safetensors")                 # weights whose outputs overflow, digest updated
    rec = json.loads((run / "best.json").read_text())
    rec["files"]["best.safetensors"] = hashlib.sha256((run / "best.safetensors").read_bytes()).hexdigest()
    (run / "best.json").write_text(json.dumps(rec))
    refused(imo("evaluate", run, cwd=project), f"run {run} gives non-finite outputs for 4 of the 4 test utterances",
            "imo verify STORE", str(project / "cache/audio.zarr"))
    assert not (run / "eval-test.json").exists()
