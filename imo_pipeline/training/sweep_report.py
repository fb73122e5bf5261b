"""The end of a sweep: the best trial retrained with several seeds (``best/``, tested once), and the report:
best configuration, validation and test mean ± sample std, every trial (Markdown + CSV), Optuna's parameter
importances, and the optimisation-history and importance PNGs (Optuna's matplotlib backend)."""

from __future__ import annotations

import csv
import io
import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from ..paths import child
from .config import TrainConfig, seed_list
from .experiment import STD_DEFINITION, format_result, mean_std, run_experiment
from .runs import RunDir
from .sweep import SweepDir, SweepOptions, _quiet, split_params, trial_config
from .sweep_space import Space


def _state(t) -> str:
    name = t.state.name.lower()
    return {"fail": "cut off" if t.user_attrs.get("cut_off") else "failed"}.get(name, name)


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" if std is None else f"{mean:.4f} ± {std:.4f}"


def final_stage(study, sd: SweepDir, cfg: TrainConfig, fold_key: str | None, opts: SweepOptions, metric: str,
                log: Callable[[str], None]) -> dict[str, Any] | None:
    """Retrain the best complete trial with ``opts.final_seeds`` seeds (every fold with ``fold_key``) into
    ``best/`` (an `imo train --seeds [--folds]` folder; a previous best of another trial is moved to
    ``best-trial-NNNN/``); the test split is read here, once per run. None when no trial completed."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return None
    best = study.best_trial
    best_cfg = trial_config(cfg, *split_params(best.params))
    old = sd.read_json(sd.FINAL)
    if old is not None and old.get("trial") != best.number and sd.best.exists():
        k, aside = 0, child(sd.path, f"best-trial-{old['trial']:04d}")
        while aside.exists():
            k += 1
            aside = child(sd.path, f"best-trial-{old['trial']:04d}-{k}")
        os.replace(sd.best, aside)
        log(f"trial {best.number} is now the best: the final runs of trial {old['trial']} moved to {aside}")
    sd.write_json(sd.FINAL, {"trial": best.number, "params": best.params})
    seeds = seed_list(opts.final_seeds, cfg.seed)
    log(f"final: trial {best.number} (search valid {metric} {best.value:.4f}) retrained with seeds "
        f"{','.join(map(str, seeds))}" + (f" on every fold of {fold_key}" if fold_key else "")
        + f" -> {sd.best}; the test split is read now, once per run")
    result = run_experiment(best_cfg, sd.best, fold_key, seeds, opts.progress, _quiet)
    runs = []
    for r in result["runs"]:
        rd = RunDir(sd.best / r["folder"])
        summary = rd.read_json(RunDir.SUMMARY)
        row = next((x for x in rd.read_metrics() if x.get("epoch") == summary["best_epoch"]), {})
        valid = {k[len("valid_"):]: float(v) for k, v in row.items()
                 if k.startswith("valid_") and k != "valid_loss" and isinstance(v, (int, float))}
        valid.setdefault(metric, float(summary["best_valid"]))
        runs.append({"folder": r["folder"], "fold": r["fold"], "seed": r["seed"], "valid": valid,
                     "test": r["metrics"]})
    vmean, vstd = mean_std([r["valid"] for r in runs])
    return {"trial": best.number, "params": best.params, "search_value": best.value, "seeds": seeds,
            "folder": "best", "kind": result["kind"], "n": result["n"], "runs": runs,
            "valid": {"mean": vmean, "std": vstd}, "test": {"mean": result["mean"], "std": result["std"]},
            "table": format_result(result)}


def trial_rows(study, groups: list[str | None], keys: list[str]) -> list[dict[str, Any]]:
    """One row per trial (by number): state, objective, each fold's value, parameters, time, notes."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        folds = t.user_attrs.get("fold_values", {})
        note = []
        if t.user_attrs.get("rerun_of") is not None:
            note.append(f"re-run of trial {t.user_attrs['rerun_of']}")
        if t.user_attrs.get("cut_off"):
            note.append("cut off by a stop; re-run")
        if t.state.name == "PRUNED":
            note.append(f"pruned after {len(folds)} of {len(groups)} folds")
        if t.user_attrs.get("error"):
            note.append(str(t.user_attrs["error"]).replace("|", "/").replace("\n", " "))
        value = t.value if t.state.name == "COMPLETE" else None
        rows.append({"trial": t.number, "state": _state(t), "value": value,
                     **{f"fold {g}" if g is not None else "valid": folds.get(str(g)) for g in groups},
                     **{k: t.params.get(k) for k in keys},
                     "train_s": t.user_attrs.get("train_seconds"), "folder": t.user_attrs.get("folder"),
                     "note": "; ".join(note)})
    return rows


def _markdown_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_num(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return buf.getvalue()


def importances(study, seed: int) -> tuple[dict[str, float], str | None]:
    """Optuna's fANOVA importance of each parameter over the complete trials (seeded); ({}, why) when it
    cannot be computed (fewer than two complete trials, or nothing varied)."""
    import optuna

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed))
    except (ValueError, RuntimeError) as e:
        return {}, str(e)
    if not imp:
        return {}, "no parameter varied among the complete trials"
    return {k: float(v) for k, v in imp.items()}, None


def _png(sd: SweepDir, name: str, draw: Callable[[], Any]) -> Path | None:
    from . import plots  # noqa: F401  (sets the Agg backend)
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = draw()
    fig = ax.figure if hasattr(ax, "figure") else ax
    fig.set_size_inches(7.5, 4.5)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return sd.write(name, buf.getvalue())


def write_report(study, sd: SweepDir, cfg: TrainConfig, space: Space, fold_key: str | None,
                 groups: list[str | None], opts: SweepOptions, metric: str, direction: str,
                 final: dict[str, Any] | None, search_seconds: float) -> dict[str, Any]:
    """report.md, result.json, trials.md, trials.csv, history.png and importance.png (each written aside and
    renamed); returns result.json's content. ConfigError after writing when no trial completed."""
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    keys = [p.key for p in space.params]
    rows = trial_rows(study, groups, keys)
    states: dict[str, int] = {}
    for r in rows:
        states[r["state"]] = states.get(r["state"], 0) + 1
    imp, why = importances(study, cfg.seed)
    written = [sd.write(sd.TRIALS_CSV, _csv(rows)), sd.write(sd.TRIALS_MD, _markdown_table(rows))]
    if any(r["state"] == "complete" for r in rows):
        written.append(_png(sd, sd.HISTORY, lambda: plot_optimization_history(study, target_name=f"valid {metric}")))
    if imp:
        written.append(_png(sd, sd.IMPORTANCE, lambda: plot_param_importances(
            study, evaluator=__import__("optuna").importance.FanovaImportanceEvaluator(seed=cfg.seed))))
    objective = (f"valid {metric}, mean over the {len(groups)} folds of {fold_key}" if fold_key
                 else f"valid {metric} (the manifest's valid split)")
    result = {"sweep": str(sd.path), "head": cfg.head, "modalities": cfg.modalities, "objective": objective,
              "metric": metric, "direction": direction, "folds": fold_key,
              "groups": groups if fold_key else None, "trials": states, "n_trials": len(rows),
              "space": space.to_dict(), "space_source": space.source,
              "sampler": "TPE (constant_liar)", "pruner": "median after each fold" if opts.prune and fold_key
              else "none", "search_seconds": search_seconds, "importance": imp, "importance_note": why,
              "final": {k: v for k, v in final.items() if k != "table"} if final else None,
              "std_definition": STD_DEFINITION}
    written.append(sd.write_json(sd.RESULT, result))
    md = _report_markdown(sd, cfg, result, final, rows, imp, why)
    written.append(sd.write(sd.REPORT, md))
    result["written"] = [str(p) for p in written]
    if final is None:
        counts = ", ".join(f"{v} {k}" for k, v in states.items())
        raise ConfigError(f"no trial of sweep {sd.path} completed ({counts}); see the reasons in "
                          f"{sd.file(sd.TRIALS_MD)}")
    return result


def _report_markdown(sd: SweepDir, cfg: TrainConfig, result: dict, final: dict | None, rows: list[dict],
                     imp: dict[str, float], why: str | None) -> str:
    states = ", ".join(f"{v} {k}" for k, v in result["trials"].items())
    lines = [f"# Sweep {sd.path.name}", "",
             f"Head `{cfg.head}` on {'+'.join(cfg.modalities)}; {result['n_trials']} trials ({states}). "
             f"Objective: {result['objective']} ({result['direction']}), every trial on seed {cfg.seed}; sampler "
             f"{result['sampler']}; pruning: {result['pruner']}. Search time {result['search_seconds'] / 60:.1f} "
             f"min. The test split was read only by the final runs.", ""]
    if final is not None:
        train, head = split_params(final["params"])
        lines += [f"## Best configuration: trial {final['trial']}", "",
                  f"Search value (valid, seed {cfg.seed}): {final['search_value']:.4f}", "",
                  "| option | value |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in train.items()]
        lines += [f"| head {k} | {_num(v)} |" for k, v in head.items()]
        lines += ["", f"## Final runs (`best/`): seeds {', '.join(map(str, final['seeds']))}"
                  + (f" x {len(result['groups'])} folds" if result["folds"] else ""), "",
                  f"n = {final['n']} runs; mean ± std, std = {STD_DEFINITION}.", "",
                  "| metric | valid | test |", "|---|---|---|"]
        for k in final["test"]["mean"]:
            lines.append(f"| {k} | {_pm(final['valid']['mean'].get(k), final['valid']['std'].get(k))} | "
                         f"{_pm(final['test']['mean'][k], final['test']['std'].get(k))} |")
        lines += ["", "`best/` works with `imo compare`, and each run folder in it with `imo evaluate` and "
                  "`imo predict`.", ""]
    else:
        lines += ["## No trial completed", "", "See the notes in the trials table.", ""]
    lines += ["## Parameter importance (fANOVA over the complete trials)", ""]
    if imp:
        lines += ["| parameter | importance |", "|---|---|"] + [f"| {k} | {v:.3f} |" for k, v in imp.items()]
        lines += ["", f"![importance]({sd.IMPORTANCE})"]
    else:
        lines.append(f"Not computed: {why.rstrip('.')}.")
    if (sd.path / sd.HISTORY).is_file() and any(r["state"] == "complete" for r in rows):
        lines += ["", "## Optimisation history", "", f"![history]({sd.HISTORY})"]
    lines += ["", f"## Trials ({sd.TRIALS_CSV})", "", _markdown_table(rows)]
    return "\n".join(lines)

