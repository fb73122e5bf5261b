"""`imo train` options: declared once, from a [train] section (imo.toml or --config FILE) under the command line;
the shipped recipe reaching TrainConfig and the head; --max-frames, --total-updates and --best-metric loss."""

from __future__ import annotations

import dataclasses
import inspect
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from imo_pipeline.commands.train import train as train_command
from imo_pipeline.training.config import ExperimentOptions, TrainConfig, TrainSection, option_fields
from imo_pipeline.training.data import Preprocess
from store_utils import make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)

RECIPE = Path(__file__).parents[1] / "recipes" / "sse-ft-iemocap.toml"
QUICK = ["--no-progress"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("opts")
    manifest, _ = make_partial_info_set(root / "cache", per_class=8, modalities=("audio", "text", "video"), seed=2)
    manifest.rename(root / "m.jsonl")
    return root


def toml(root: Path, train: str, name: str = "imo.toml") -> Path:
    path = root / name
    path.write_text('manifest = "m.jsonl"\ncache = "cache"\n[train]\n' + train)
    return path


def config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_the_options_are_declared_once():
    """The command's parameters, the [train] keys and the dataclass fields are one list."""
    params = set(inspect.signature(train_command).parameters) - {"config"}
    fields = {f.name for cls in (TrainConfig, ExperimentOptions) for f in dataclasses.fields(cls)}
    assert params == set(option_fields()) == {f.name for f in dataclasses.fields(TrainSection)}
    assert fields - params == {"fold_key", "test_group"}          # set per run by the plan, not by the user


def test_train_section_fills_what_the_command_line_leaves_out(project, imo, tmp_path):
    toml(project, 'modalities = ["a", "t"]\nhead = "concat"\nhead_options = {hidden = 8, dropout = 0.3}\n'
         'epochs = 2\nbatch_size = 8\nlr = 3e-3\nbetas = [0.8, 0.9]\nprogress = false\nout = "runs/from-file"\n')
    r = imo("train", "--epochs", "1", "--head-opt", "hidden=6", cwd=project)
    assert r.code == 0, r.stderr
    run = project / "runs/from-file"                                # out, relative to imo.toml's folder
    cfg = config(run)
    t = cfg["train"]
    assert t["epochs"] == 1 and t["batch_size"] == 8 and t["lr"] == 3e-3 and t["betas"] == [0.8, 0.9]
    assert t["modalities"] == ["audio", "text"] and t["head"] == "concat"
    assert t["head_options"] == {"hidden": 6, "dropout": 0.3}       # tables merge key by key
    assert cfg["head"]["config"]["hidden"] == 6 and cfg["head"]["config"]["dropout"] == 0.3
    assert "options from" in r.stderr and "from the command line: epochs, head_options" in r.stderr


def test_config_file_is_used_instead_of_imo_toml_train(project, imo, tmp_path):
    toml(project, 'modalities = ["a", "t"]\nlr = 0.5\n')                # not read: --config replaces it
    sub = tmp_path / "recipes"
    sub.mkdir()
    cfg_file = sub / "mine.toml"
    cfg_file.write_text(f'[train]\nmodalities = ["text"]\nhead = "concat"\nhead_options = {{hidden = 4}}\n'
                        f'epochs = 1\nbatch_size = 8\nmanifest = "{project / "m.jsonl"}"\n'
                        f'stores = {{text = "../store-link"}}\n')
    (tmp_path / "store-link").symlink_to(project / "cache" / "text.zarr")   # relative to the config file's folder
    r = imo("train", "--config", cfg_file, "--out", tmp_path / "run", *QUICK, cwd=project)
    assert r.code == 0, r.stderr
    cfg = config(tmp_path / "run")
    assert cfg["train"]["lr"] == TrainConfig.lr and cfg["train"]["modalities"] == ["text"]
    assert cfg["stores"]["text"] == str((project / "cache" / "text.zarr").resolve())


@pytest.mark.parametrize("text,fragment", [
    ("epoch = 2\n", "[train] has no option 'epoch'; valid: modalities, stores, manifest"),
    ('epochs = "2"\n', "[train] option epochs: '2' is not an integer"),
    ("betas = [0.9]\n", "[train] option betas: [0.9] is not a list of 2 values"),
    ('seeds = "many"\n', "[train] option seeds: 'many' is not an integer or a list of an integer"),
    ('head_options = "d_model=8"\n', "[train] option head_options: 'd_model=8' is not a table"),
    ('max_frames = {a = 2.5}\n', "[train] option max_frames.a: 2.5 is not an integer"),
    ('stores = {x = "cache/a.zarr"}\nmodalities = ["a"]\n', "unknown modality 'x'"),
])
def test_bad_train_keys_and_values_are_refused_in_one_line(project, imo, tmp_path, text, fragment):
    path = toml(tmp_path, text)
    r = imo("train", "--config", path, "--out", tmp_path / "run", *QUICK, cwd=project)
    assert r.code == 2 and fragment in r.error and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_config_file_is_one_line(project, imo, tmp_path):
    r = imo("train", "--config", tmp_path / "nope.toml", "-m", "t", "--out", tmp_path / "run", cwd=project)
    assert r.code == 2 and "config file" in r.error and "does not exist" in r.error


def test_the_recipe_reaches_train_config_and_the_head(project, imo, tmp_path):
    """The shipped recipe through `imo train --config`, tiny stores standing in for wav2vec/RoBERTa/FAb-Net."""
    recipe = tomllib.loads(RECIPE.read_text())["train"]
    stores = [f"--store={m[0]}={project / 'cache' / f'{m}.zarr'}" for m in ("audio", "text", "video")]
    r = imo("train", "--config", RECIPE, "--manifest", project / "m.jsonl", *stores, "--out", tmp_path / "sse",
            "--stop-after", "1", *QUICK, cwd=project)
    assert r.code == 0, r.stderr
    cfg = config(tmp_path / "sse")
    t, head = cfg["train"], cfg["head"]
    for key, value in recipe.items():
        if key == "head_options":
            for k, v in value.items():
                assert head["config"][k] == v, k                    # reached the built head
            assert t["head_options"] == value
        elif key == "modalities":
            assert t[key] == cfg["modalities"] == ["audio", "text", "video"]
        elif key in ("downsample", "max_frames"):
            assert t[key] == value
            for m, k in value.items():
                assert cfg["preprocess"][m]["downsample" if key == "downsample" else "max_frames"] == k
        else:
            assert t[key] == (list(value) if isinstance(value, list) else value), key
    assert head["name"] == "sse_ft" and cfg["task"]["name"] == "binary" and cfg["best_metric"] == "loss"
    assert head["structure"]["widths"] == {"audio": 16, "text": 12, "video": 8}   # widths kept, as the original
    row = json.loads((tmp_path / "sse" / "metrics.jsonl").read_text().splitlines()[0])
    # batch 1, 8 accumulated: ceil(train / 8) updates in epoch 1, all inside the 165-update warmup of 2,760
    assert row["step"] == -(-cfg["splits"]["train"] // 8)
    assert row["lr"] == pytest.approx(1e-5 * row["step"] / 165)
    best = json.loads((tmp_path / "sse" / "best.json").read_text())
    assert best["metric"] == "loss" and best["value"] == pytest.approx(row["valid_loss"])


def test_max_frames_keeps_the_first_stored_frames_before_downsampling():
    x = np.arange(10 * 2 * 3, dtype=np.float32).reshape(10, 2, 3)
    p = Preprocess(layers=[1], downsample=2, dtype="float32", max_frames=5)
    out = p.apply(x)
    assert out.shape == (3, 1, 3) and p.out_length(10) == 3 and p.out_length(4) == 2
    np.testing.assert_allclose(out[0, 0], x[0:2, 1].mean(0))
    np.testing.assert_allclose(out[2, 0], x[4, 1])               # the last window holds frame 4 alone
    assert Preprocess([0]).to_dict() == {"layers": [0], "downsample": 1, "dtype": "float16"}   # old configs unchanged
    assert Preprocess(**p.to_dict()) == p


def test_max_frames_total_updates_and_best_metric_loss_in_a_run(project, imo, tmp_path):
    from imo_pipeline.store import open_store
    from imo_pipeline.training.evaluate import evaluate_run
    from imo_pipeline.training.runs import load_run

    toml(project, "")
    r = imo("train", "-m", "a,t", "--head", "concat", "--head-opt", "hidden=8", "--batch-size", "4", "--epochs", "3",
            "--lr", "1e-2", "--warmup", "0", "--total-updates", "7", "--max-frames", "a=6,t=3", "--downsample", "a=2",
            "--best-metric", "loss", "--out", tmp_path / "run", *QUICK, cwd=project)
    assert r.code == 0, r.stderr
    cfg = config(tmp_path / "run")
    assert cfg["preprocess"]["audio"] == {"layers": [1], "downsample": 2, "dtype": "float16", "max_frames": 6}
    assert cfg["preprocess"]["text"]["max_frames"] == 3
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["step"] == 5 and rows[0]["lr"] == pytest.approx(1e-2 * (1 - 4 / 7))   # poly over 7 updates
    assert rows[1]["lr"] == 0 and rows[2]["lr"] == 0                                     # past total_updates
    best = json.loads((tmp_path / "run" / "best.json").read_text())
    losses = [x["valid_loss"] for x in rows]
    assert best["metric"] == "loss" and best["epoch"] == 1 + int(np.argmin(losses))
    run = load_run(tmp_path / "run")                            # the cap is part of the run: evaluate == predict
    res = evaluate_run(run, "test", out=tmp_path / "eval", log=lambda *a: None)
    st = {m: open_store(p) for m, p in run.stores.items()}
    got = run.predict([{m: s.get(uid) for m, s in st.items()} for uid in res["ids"]])
    np.testing.assert_allclose(got, np.array(res["outputs"]), atol=1e-5)
    assert run.prepare({m: s.get(res["ids"][0]) for m, s in st.items()})["audio"].shape[0] == 3


@pytest.mark.parametrize("args,fragment", [
    (["--max-frames", "a=0"], "--max-frames 'audio=0': use a whole number of stored frames >= 1"),
    (["--max-frames", "v=3"], "--max-frames 'video=3': video is not among --modalities audio"),
    (["--total-updates", "0"], "--total-updates 0: use a whole number of optimizer steps >= 1"),
    (["--valid-rule", "random"], "--valid-rule 'random': use one of speakers, utterances"),
    (["--best-metric", "accuracy"], "use one of wa, ua, f1_macro, f1_weighted, loss"),
])
def test_new_options_are_checked(project, imo, tmp_path, args, fragment):
    toml(project, "")
    r = imo("train", "-m", "a", "--out", tmp_path / "run", *args, *QUICK, cwd=project)
    assert r.code == 2 and fragment in r.error, r.stderr
