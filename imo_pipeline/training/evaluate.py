"""Evaluating a trained run on a split of its manifest, through the same code path as ``Run.predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..manifest import load_manifest
from ..store import open_store
from .data import open_corpus
from .metrics import per_class_table
from .plots import plot_confusion
from .runs import Run, write_json
from .trainer import TrainConfig, confusion_for, evaluate_split, split_indices


def evaluate_run(run: Run, split: str = "test", manifest: str | None = None, stores: dict[str, str] | None = None,
                 out: str | Path | None = None, log: Callable = print) -> dict:
    """Metrics of ``run`` on ``split`` (train/valid/test, as the run split the data); writes
    ``eval-<split>.json`` and ``confusion_matrix-<split>.png`` into ``out`` (default: the run folder)."""
    tcfg = TrainConfig(**run.config["train"])
    paths = {m: str((stores or {}).get(m, run.stores[m])) for m in run.modalities}
    for m, p in paths.items():
        open_store(p).check(modality=m, expect=run.store_meta[m], against=f"run {run.path} (trained on {run.stores[m]})")
    man = load_manifest(manifest or tcfg.manifest, tcfg.data_root)
    corpus = open_corpus(man, paths, in_memory="no", progress=False, log=log, preprocess=run.preprocess)
    idx = split_indices(corpus.utterances, tcfg, log=lambda *a: None)[split]
    task = run.task_obj
    targets = task.targets(corpus.utterances)
    outputs, metrics, loss = evaluate_split(run.model, task, corpus, idx, targets, run.batch_size)
    result = {"run": str(run.path), "split": split, "n": int(len(idx)), "loss": loss, "metrics": metrics,
              "stores": paths, "ids": [corpus.utterances[int(i)].id for i in idx],
              "outputs": np.asarray(outputs).tolist()}
    if task.name == "classification" and metrics:
        result["per_class"] = per_class_table(metrics["confusion"], task.labels)
    out = Path(out or run.path)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"eval-{split}.json", result)
    if metrics:
        cm, names = confusion_for(task, metrics, targets[idx], outputs)
        plot_confusion(cm, names, out / f"confusion_matrix-{split}.png", f"{run.path.name}: {split}")
    return result
