"""Evaluating a trained run on a split of its manifest, through the same code path as ``Run.predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import ConfigError, StoreError
from ..manifest import load_manifest
from ..paths import is_url
from ..store import open_store
from .data import open_corpus
from .metrics import per_class_table
from .plots import plot_confusion
from .runs import Run, RunDir, check_run_stores, verify_hint
from .tasks import require_labels
from .trainer import TrainConfig, confusion_for, nonfinite_rows, predict_split, score, split_indices


def _same_path(a: str, b: str) -> bool:
    if is_url(a) or is_url(b):
        return a.rstrip("/") == b.rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def evaluate_run(run: Run, split: str = "test", manifest: str | None = None, stores: dict[str, str] | None = None,
                 out: str | Path | None = None, log: Callable = print) -> dict:
    """Metrics of ``run`` on ``split`` (train/valid/test, as the run split the data); writes
    ``eval-<split>.json`` and ``confusion_matrix-<split>.png`` into ``out`` (default: the run folder).

    The run's own stores must be unchanged since training (content fingerprints in config.json); a store given
    in ``stores`` (another copy) must come from the same encoder.
    """
    json_name, png_name = RunDir.eval_names(split)
    target = RunDir(out or run.path)
    target.refuse_file("--out")
    tcfg = TrainConfig(**run.config["train"])
    opened = {}
    for m in run.modalities:
        path = str((stores or {}).get(m, run.stores[m]))
        if not is_url(path) and not Path(path).exists():
            raise StoreError(f"{m} store {path} of run {run.path} does not exist; restore it or pass "
                             f"--store {m[0]}=PATH (a copy made with the same encoder)")
        st = open_store(path)
        if _same_path(path, run.stores[m]):
            check_run_stores(run.dir, run.config, {m: st})
        st.check(modality=m, expect=run.store_meta[m], against=f"run {run.path} (trained on {run.stores[m]})")
        opened[m] = st
    man = load_manifest(manifest or tcfg.manifest, tcfg.data_root)
    corpus = open_corpus(man, opened, in_memory="no", progress=False, log=log, preprocess=run.preprocess)
    idx = split_indices(corpus.utterances, tcfg, log=lambda *a: None)[split]
    utts = [corpus.utterances[int(i)] for i in idx]
    if not utts:
        raise ConfigError(f"split {split!r} of run {run.path} has no utterances; pick another --split")
    require_labels(utts, f"of split {split}")
    task = run.task_obj
    targets = task.targets(utts)
    logits = predict_split(run.model, corpus, idx, run.batch_size)
    bad = nonfinite_rows(logits)
    if len(bad):
        raise StoreError(f"run {run.path} gives non-finite outputs for {len(bad)} of the {len(idx)} {split} "
                         f"utterances (e.g. {utts[int(bad[0])].id!r}); their features are out of range: "
                         f"{verify_hint(st.path for st in opened.values())}")
    outputs, metrics, loss = score(task, logits, targets)
    result = {"run": str(run.path), "split": split, "n": int(len(idx)), "loss": loss, "metrics": metrics,
              "stores": {m: st.path for m, st in opened.items()}, "ids": [u.id for u in utts],
              "outputs": np.asarray(outputs).tolist()}
    if task.name == "classification" and metrics:
        result["per_class"] = per_class_table(metrics["confusion"], task.labels)
    target.write_eval(split, result)
    if metrics:
        cm, names = confusion_for(task, metrics, targets, outputs)
        target.plot(png_name, lambda p: plot_confusion(cm, names, p, f"{run.path.name}: {split}"))
    return result
