"""`imo compare` on real runs (single, seeded, cross-validated) trained on generated stores: the Markdown and CSV
tables and the PNG, mean ± sample std from the per-run files, and the refusal of mixed protocols."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from store_utils import make_partial_info_set, one_thread  # noqa: F401  (one_thread: autouse fixture)

FAST = ["--batch-size", "8", "--lr", "3e-3", "--epochs", "3", "--no-progress"]
CONCAT = ["--head", "concat", "--head-opt", "hidden=8"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Runs of one manifest: concat a+t, cross_attention a+t over 2 seeds, a probe, a CV, a binary run, an
    unfinished run; and a concat run on another manifest."""
    from imo_pipeline.cli import run as cli_run
    import os
    import sys

    root = tmp_path_factory.mktemp("cmp")
    manifest, _ = make_partial_info_set(root / "cache", per_class=10, modalities=("audio", "text"), folds=2, seed=3)
    manifest.rename(root / "m.jsonl")
    (root / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n')
    other, _ = make_partial_info_set(root / "other", per_class=10, modalities=("audio", "text"), seed=9)
    commands = [
        ["-m", "a,t", *CONCAT, "--out", "runs/concat"],
        ["-m", "a,t", "--head-opt", "d_model=16", "--head-opt", "n_heads=2", "--seeds", "2", "--out", "runs/xattn"],
        ["-m", "a", "--head", "probe", "--out", "runs/probe-a"],
        ["-m", "a,t", *CONCAT, "--folds", "fold", "--out", "runs/cv"],
        ["-m", "a,t", *CONCAT, "--task", "binary", "--out", "runs/binary"],
        ["-m", "a,t", *CONCAT, "--stop-after", "1", "--out", "runs/unfinished"],
        ["-m", "a,t", *CONCAT, "--manifest", str(other), "--store", f"a={root / 'other/audio.zarr'}",
         "--store", f"t={root / 'other/text.zarr'}", "--out", "runs/other"],
    ]
    cwd, argv = os.getcwd(), sys.argv
    os.chdir(root)
    try:
        for args in commands:
            sys.argv = ["imo", "train", *args, *FAST]
            with pytest.raises(SystemExit) as e:
                cli_run()
            assert e.value.code in (0, None), args
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return root


def test_compare_writes_the_table_csv_and_png_from_the_run_files(runs, imo, tmp_path):
    r = imo("compare", "runs/concat", "runs/xattn", "runs/probe-a", "--out", tmp_path / "cmp", cwd=runs)
    assert r.code == 0, r.stderr
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert md in r.stdout
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:9] == ["#", "run", "head", "modalities", "encoders", "task", "protocol", "seeds", "n"]
    assert header[9:13] == ["ua", "wa", "f1_macro", "f1_weighted"] and header[-2:] == ["parameters", "train s/run"]
    table = {c[1]: c for c in ([x.strip() for x in ln.strip("|").split("|")] for ln in lines[1:])}
    # the seeded entry: mean ± sample std of its per-seed summaries
    ua = [json.loads((runs / f"runs/xattn/seed-{s}/summary.json").read_text())["test"]["ua"] for s in (0, 1)]
    assert table["runs/xattn"][9] == f"{np.mean(ua):.3f} ± {np.std(ua, ddof=1):.3f}"
    assert table["runs/xattn"][7] == "0,1" and table["runs/xattn"][8] == "2"
    assert table["runs/xattn"][2] == "cross_attention" and table["runs/xattn"][3] == "a+t"
    assert table["runs/xattn"][4] == "a: synthetic, t: synthetic" and table["runs/probe-a"][4] == "a: synthetic"
    assert table["runs/concat"][6] == "split (test n=8)"
    single = json.loads((runs / "runs/concat/summary.json").read_text())["test"]["ua"]
    assert table["runs/concat"][9] == f"{single:.3f}"                  # one run: no spread to report
    params = json.loads((runs / "runs/probe-a/config.json").read_text())["parameters"]
    assert table["runs/probe-a"][-2] == f"{params:,}"
    means = [float(table[n][9].split(" ")[0]) for n in table]
    ranks = [int(table[n][0]) for n in table]
    assert means == sorted(means, reverse=True)                         # ranked by ua; ties share a rank
    assert ranks == [1 + sum(x > m + 1e-9 for x in means) for m in means] and ranks[0] == 1
    assert "ddof=1" in md and "Not one protocol" not in md
    rows = list(csv.DictReader(io.StringIO((tmp_path / "cmp" / "compare.csv").read_text())))
    got = {r["run"]: r for r in rows}
    assert float(got["runs/xattn"]["ua_mean"]) == pytest.approx(np.mean(ua))
    assert float(got["runs/xattn"]["ua_std"]) == pytest.approx(np.std(ua, ddof=1))
    assert got["runs/concat"]["ua_std"] == "" and got["runs/xattn"]["kind"] == "seeds"
    assert got["runs/probe-a"]["labels"] == "ang,hap,neu,sad"
    with Image.open(tmp_path / "cmp" / "compare.png") as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 150


def test_a_cv_entry_uses_every_fold(runs, imo, tmp_path):
    r = imo("compare", "runs/cv", "--out", tmp_path / "c", cwd=runs)
    assert r.code == 0, r.stderr
    folds = [json.loads((runs / f"runs/cv/fold-{g}/summary.json").read_text())["test"]["wa"] for g in ("Ses01", "Ses02")]
    row = next(ln for ln in r.stdout.splitlines() if "runs/cv" in ln)
    assert "2 folds fold (test)" in row and f"{np.mean(folds):.3f} ± {np.std(folds, ddof=1):.3f}" in row


@pytest.mark.parametrize("other,fragment", [
    ("runs/cv", "differ in protocol (split vs folds fold)"),
    ("runs/binary", "differ in task (classification vs binary)"),
    ("runs/other", "differ in manifest (fingerprint)"),
])
def test_mixed_protocols_are_refused_in_one_line_and_forced_apart(runs, imo, tmp_path, other, fragment):
    r = imo("compare", "runs/concat", other, "--out", tmp_path / "c", cwd=runs)
    assert r.code == 2 and r.error.startswith("error: cannot rank runs/concat and " + other), r.stderr
    assert fragment in r.error and "--force" in r.error and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists()
    r = imo("compare", "runs/concat", other, "--force", "--out", tmp_path / "f", cwd=runs)
    assert r.code == 0, r.stderr
    md = (tmp_path / "f" / "compare.md").read_text()
    assert "| protocol group |" in md and "Not one protocol (--force)" in md and "- B: " in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| A ") or ln.startswith("| B ")]
    assert [ln.split("|")[1].strip() for ln in rows] == ["A", "B"]
    assert all(ln.split("|")[2].strip() == "1" for ln in rows)      # each protocol ranked on its own


@pytest.mark.parametrize("args,fragment", [
    (["runs/unfinished"], "runs/unfinished has not finished (no summary.json)"),
    (["runs"], "runs is not a run folder (no config.json, cv.json or summary.json)"),
    (["runs/concat", "runs/concat"], "runs/concat is given twice"),
    (["runs/concat", "--metric", "nope"], "--metric 'nope': runs/concat has no such metric"),
])
def test_what_cannot_be_compared_is_one_line(runs, imo, tmp_path, args, fragment):
    r = imo("compare", *args, "--out", tmp_path / "c", cwd=runs)
    assert r.code == 2 and fragment in r.error, r.stderr


def test_a_cv_folder_of_an_older_imo_is_read_from_its_folders(runs, imo, tmp_path):
    import shutil

    old = shutil.copytree(runs / "runs/cv", tmp_path / "oldcv")
    res = json.loads((old / "cv.json").read_text())
    (old / "cv.json").write_text(json.dumps({k: res[k] for k in ("fold_key", "folds", "folders", "mean", "std")}))
    r = imo("compare", old, "--out", tmp_path / "c", cwd=runs)
    assert r.code == 0, r.stderr
    assert f"{res['mean']['ua']:.3f} ± {res['std']['ua']:.3f}" in r.stdout


def test_ties_share_a_rank_and_keep_the_order_given():
    from imo_pipeline.training.compare import Entry, Protocol, rank_entries

    p = Protocol("fp", "split", (), "test", (8,), "classification", ("a", "b"))
    entries = [Entry(Path(n), "run", [], {}, p, {"ua": v}, {"ua": None})
               for n, v in (("x", 0.5), ("y", 0.9), ("z", 0.5), ("w", 0.9))]
    got = rank_entries(entries)
    assert [(str(e.path), e.rank, e.group) for e in got] == [("y", 1, "A"), ("w", 1, "A"), ("x", 3, "A"), ("z", 3, "A")]
    mae = Protocol("fp", "split", (), "test", (8,), "regression", None)   # lower is better, ranked apart
    entries += [Entry(Path(n), "run", [], {}, mae, {"mae": v}, {"mae": None}) for n, v in (("r1", 0.7), ("r2", 0.4))]
    got = rank_entries(entries)
    assert [(str(e.path), e.rank, e.group) for e in got[4:]] == [("r2", 1, "B"), ("r1", 2, "B")]
