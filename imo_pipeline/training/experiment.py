"""Several runs of one configuration: folds x seeds, planned as jobs, trained through ``train_runs``, summarised.

``plan_runs`` turns one ``TrainConfig`` into a list of ``Job`` (a config with its fold and seed, and a run
folder that ``RunDir`` names): one per seed (``OUT/seed-<s>/``), one per group of ``--folds``
(``OUT/fold-<g>/``), or one per group and seed (``OUT/fold-<g>/seed-<s>/``). ``run_experiment`` trains them
with ``trainer.train_runs`` (the one entry point for many runs; re-running resumes every run where it stopped)
and writes the summary: ``cv.json`` for folds, ``summary.json`` for seeds of one split.

Every spread is the sample standard deviation (``ddof=1``, n - 1 in the denominator; undefined, written as
null, for a single value): ``std`` over all runs (folds x seeds), ``per_fold`` over a fold's seeds,
``per_seed`` over a seed's folds, and ``std_over_seeds`` of the per-seed means (how much the whole protocol's
result moves with the seed).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from .config import TrainConfig
from .runs import RunDir

STD_DEFINITION = "sample standard deviation (ddof=1: n-1 in the denominator); null where n < 2"
#: the order metrics are listed in (the tasks' headline metrics first; any other after them, by name)
METRIC_ORDER = ("ua", "wa", "f1_macro", "f1_weighted", "acc_mean", "f1_mean", "mae", "corr", "acc7",
                "acc2_non_zero", "f1_non_zero", "acc2_with_zero", "f1_with_zero")


@dataclass
class Job:
    """One run of an experiment: its config (seed and fold set), its folder, and where it sits in the plan."""

    cfg: TrainConfig
    out: Path
    fold: str | None
    seed: int
    fold_folder: str | None = None     # fold-<name>
    seed_folder: str | None = None     # seed-<s>

    @property
    def name(self) -> str:
        """The run's folder relative to the experiment's (e.g. ``fold-Ses01/seed-2``)."""
        return "/".join(p for p in (self.fold_folder, self.seed_folder) if p)


def sample_std(values: list[float]) -> float | None:
    """The one spread imo reports: sample standard deviation (ddof=1); None for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) >= 2 else None


def mean_std(rows: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float | None]]:
    """Per-metric mean and sample std over ``rows`` (each a dict of scalar metrics; keys of the first row)."""
    keys = [k for k in rows[0] if all(k in r for r in rows)]
    return ({k: float(np.mean([r[k] for r in rows])) for k in keys},
            {k: sample_std([r[k] for r in rows]) for k in keys})


def scalars(metrics: dict) -> dict[str, float]:
    """The scalar metrics of a summary's split (the confusion matrix and other lists left out), in METRIC_ORDER."""
    keys = sorted((k for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)),
                  key=lambda k: (METRIC_ORDER.index(k) if k in METRIC_ORDER else len(METRIC_ORDER), k))
    return {k: float(metrics[k]) for k in keys}


def groups_of(corpus_utts: list, fold_key: str) -> list[str]:
    from .trainer import group_of

    groups = sorted({group_of(u, fold_key) for u in corpus_utts})
    if len(groups) < 2:
        raise ConfigError(f"--folds {fold_key}: need at least two groups, the manifest has {groups}")
    return groups


def plan_runs(cfg: TrainConfig, out: str | Path, fold_key: str | None, seeds: list[int] | None,
              groups: list[str] | None = None) -> tuple[str, list[Job]]:
    """(kind, jobs): ``kind`` is ``cv`` (with ``fold_key``), ``seeds`` (seeds of one split) or ``run``."""
    parent = RunDir(out)
    if not fold_key and seeds is None:
        return "run", [Job(cfg, parent.path, None, cfg.seed)]
    kind = "cv" if fold_key else "seeds"
    parent.require_parent(kind)
    folds: list[tuple[str | None, RunDir, str | None]] = [(None, parent, None)]
    if fold_key:
        folds, seen = [], {}
        for g in groups or []:
            rd = parent.fold(g)
            if rd.path.name in seen:
                raise ConfigError(f"--folds {fold_key}: groups {seen[rd.path.name]!r} and {g!r} map to the same "
                                  f"folder {rd.path.name}; rename one of them in the manifest")
            seen[rd.path.name] = g
            folds.append((g, rd, rd.path.name))
    jobs = []
    for g, rd, fold_folder in folds:
        if seeds is None:
            jobs.append(Job(dataclasses.replace(cfg, fold_key=fold_key, test_group=g), rd.path, g, cfg.seed,
                            fold_folder, None))
            continue
        if fold_key and rd.is_run():
            raise ConfigError(f"--out {parent.path}: {rd.path} holds a run trained without --seeds; pass a new --out "
                              f"(or leave --seeds out to resume it)")
        for s in seeds:
            sd = rd.seed(s)
            jobs.append(Job(dataclasses.replace(cfg, fold_key=fold_key, test_group=g, seed=s), sd.path, g, s,
                            fold_folder, sd.path.name))
    return kind, jobs


def summarise(kind: str, jobs: list[Job], summaries: list[dict], fold_key: str | None,
              seeds: list[int] | None) -> dict[str, Any]:
    """The experiment's result from its jobs and their run summaries (same order): every run's test metrics,
    per fold, per seed and overall mean and sample std (see the module doc)."""
    runs = []
    for job, summary in zip(jobs, summaries):
        split = summary["eval_split"]
        runs.append({"fold": job.fold, "seed": job.seed, "folder": job.name, "eval_split": split,
                     "metrics": scalars(summary[split]), "best_epoch": summary.get("best_epoch"),
                     "train_seconds": summary.get("train_seconds")})
    mean, std = mean_std([r["metrics"] for r in runs])
    result: dict[str, Any] = {"kind": kind, "fold_key": fold_key, "seeds": seeds, "runs": runs, "n": len(runs),
                              "mean": mean, "std": std, "std_definition": STD_DEFINITION}
    by_seed = {s: [r["metrics"] for r in runs if r["seed"] == s] for s in dict.fromkeys(r["seed"] for r in runs)}
    if kind == "cv":
        groups = list(dict.fromkeys(r["fold"] for r in runs))
        per_fold = {}
        for g in groups:
            m, sd = mean_std([r["metrics"] for r in runs if r["fold"] == g])
            per_fold[g] = {"mean": m, "std": sd, "n": sum(r["fold"] == g for r in runs)}
        result["per_fold"] = per_fold
        result["folds"] = {g: v["mean"] for g, v in per_fold.items()}        # each fold's metrics (mean over seeds)
        result["folders"] = {g: next(j.fold_folder for j in jobs if j.fold == g) for g in groups}
    if seeds is not None:
        per_seed = {}
        for s, rows in by_seed.items():
            m, sd = mean_std(rows)
            per_seed[str(s)] = {"mean": m, "std": sd, "n": len(rows)}
        result["per_seed"] = per_seed
        seed_means = [v["mean"] for v in per_seed.values()]
        result["std_over_seeds"] = mean_std(seed_means)[1]
    return result


def run_experiment(cfg: TrainConfig, out: str | Path, fold_key: str | None = None, seeds: list[int] | None = None,
                   progress: bool = True, log: Callable = print) -> dict:
    """Train ``cfg`` once per fold of ``fold_key`` and per seed of ``seeds`` (either may be None), each run in its
    own folder under ``out`` (see the module doc); returns the experiment's result, written to cv.json (folds) or
    summary.json (seeds). A single run (neither) returns its own summary. ``{"stopped_after": N, "run": folder}``
    when a run stopped on ``stop_after``: re-running the same command resumes every run where it stopped."""
    from .trainer import load_corpus, train_runs

    cfg.check()
    RunDir(out).refuse_file()
    if fold_key or seeds is not None:
        RunDir(out).require_parent("cv" if fold_key else "seeds")
    _, corpus = load_corpus(cfg, progress, log)
    groups = groups_of(corpus.utterances, fold_key) if fold_key else None
    kind, jobs = plan_runs(cfg, out, fold_key, seeds, groups)
    summaries = train_runs([(j.cfg, j.out) for j in jobs], corpus, progress, log)
    for job, summary in zip(jobs, summaries):
        if "stopped_after" in summary:
            return {"stopped_after": summary["stopped_after"], "run": str(job.out)}
    if kind == "run":
        return summaries[0]
    result = summarise(kind, jobs, summaries, fold_key, seeds)
    parent = RunDir(out)
    parent.write_json(parent.result_name(kind), result)
    return result


def format_result(result: dict) -> str:
    """The experiment's result as a table: one line per run, then per-fold and per-seed means, then the
    overall mean ± sample std (the definition stated below the table)."""
    keys = list(result["mean"])

    def num(x: float | None) -> str:
        return "-" if x is None or not math.isfinite(x) else f"{x:.4f}"

    def pm(m: dict, s: dict) -> list[str]:
        return [f"{num(m[k])}±{num(s.get(k))}" for k in keys]

    rows: list[tuple[str, list[str]]] = [("run", [k[:15] for k in keys])]
    rows += [(r["folder"], [num(r["metrics"].get(k)) for k in keys]) for r in result["runs"]]
    seeded = result.get("seeds") is not None
    if result["kind"] == "cv" and seeded:
        rows.append(("per fold (mean ± std over seeds):", []))
        rows += [(f"  {g}", pm(v["mean"], v["std"])) for g, v in result["per_fold"].items()]
        rows.append(("per seed (mean ± std over folds):", []))
        rows += [(f"  seed {s}", pm(v["mean"], v["std"])) for s, v in result["per_seed"].items()]
    what = {"cv": "folds x seeds" if seeded else "folds", "seeds": "seeds"}[result["kind"]]
    rows.append((f"mean ± std ({what}, n={result['n']})", pm(result["mean"], result["std"])))
    if result["kind"] == "cv" and seeded and len(result["seeds"]) > 1:
        rows.append(("std of the per-seed means", [num(result["std_over_seeds"].get(k)) for k in keys]))
    width = max(len(label) for label, cells in rows if cells) + 1
    lines = [label if not cells else label.ljust(width) + "".join(c.rjust(16) for c in cells) for label, cells in rows]
    lines.append(f"std: {result['std_definition']}")
    return "\n".join(lines)
