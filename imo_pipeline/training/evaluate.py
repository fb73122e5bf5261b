"""Evaluating a trained run, through the same code path as ``Run.predict``: on a split of its own data, on
another corpus (``--manifest OTHER.jsonl`` with its stores and a label map), and with modalities dropped.

- Own data (the manifest the run was trained on, by fingerprint): ``split`` as the run split the data.
- Another corpus: every utterance of its manifest, or those whose ``split`` field is ``split``. Its stores
  must be made from that manifest by the run's encoders (``EmbeddingStore.check``). Labels go through
  ``label_map`` (OTHER label -> run label); a label that is neither mapped nor one of the run's labels is
  left out and counted.
- ``drop``: those modalities are absent for every utterance (their stores are not opened).
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

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


def parse_label_map(value: str | None) -> dict[str, str]:
    """``--label-map joy=hap,anger=ang`` or ``--label-map FILE.json`` (an object ``{"joy": "hap", ...}``) ->
    ``{other label: run label}``; ConfigError (one line) for anything else."""
    if not value:
        return {}
    fix = "use OTHER=RUN pairs, e.g. --label-map joy=hap,anger=ang, or a JSON file {\"joy\": \"hap\"}"
    if value.endswith(".json") or Path(value).is_file():
        path = Path(value)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"--label-map {value}: no such file; {fix}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"--label-map {value} is not a readable JSON file ({e}); {fix}") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) and k and v
                                                 for k, v in data.items()):
            raise ConfigError(f"--label-map {value}: expected a JSON object of label names {{\"joy\": \"hap\"}}; {fix}")
        return dict(data)
    out: dict[str, str] = {}
    for pair in value.split(","):
        key, sep, val = (s.strip() for s in pair.partition("="))
        if not sep or not key or not val:
            raise ConfigError(f"--label-map {value!r}: {pair!r} is not OTHER=RUN; {fix}")
        if key in out and out[key] != val:
            raise ConfigError(f"--label-map {value!r} maps {key!r} twice ({out[key]!r}, {val!r}); keep one")
        out[key] = val
    return out


def parse_drop(values: Iterable[str], run: Run) -> list[str]:
    """``--drop v`` / ``--drop a,t`` -> modality names in the run's order; refuses a modality the run does not
    use, and dropping all of them."""
    from ..project import parse_modality

    drop = set()
    for v in values or []:
        for part in str(v).split(","):
            if part.strip():
                try:
                    m = parse_modality(part.strip())
                except ConfigError:
                    raise ConfigError(f"--drop {part.strip()!r}: use a, t or v (audio, text, video)") from None
                if m not in run.modalities:
                    raise ConfigError(f"--drop {part.strip()}: run {run.path} uses {', '.join(run.modalities)}; "
                                      f"drop one of those")
                drop.add(m)
    if drop and len(drop) == len(run.modalities):
        raise ConfigError(f"--drop {','.join(m[0] for m in run.modalities)} leaves run {run.path} no input; keep at "
                          f"least one of {', '.join(run.modalities)}")
    return [m for m in run.modalities if m in drop]


def _relabel(utts: list, task, label_map: dict[str, str], what: str, log: Callable) -> tuple[list, list, dict]:
    """(kept utterance positions, relabelled utterances, left-out counts per original label)."""
    labels = task.labels
    bad = {k: v for k, v in label_map.items() if v not in labels}
    if bad:
        k, v = next(iter(bad.items()))
        raise ConfigError(f"--label-map {k}={v}: {v!r} is not a label of the run ({', '.join(labels)}); map to one "
                          f"of those")
    keep, out, left = [], [], Counter()
    for i, u in enumerate(utts):
        name = label_map.get(u.label, u.label) if isinstance(u.label, str) else u.label
        if name in labels:
            keep.append(i)
            out.append(u if name == u.label else dataclasses.replace(u, label=name))
        else:
            left[str(u.label)] += 1
    unused = sorted(set(label_map) - {u.label for u in utts})
    if unused:
        log(f"note: --label-map names {', '.join(map(repr, unused))}, which no utterance of {what} has")
    if not keep:
        seen = ", ".join(sorted(left)[:8])
        raise ConfigError(f"none of the {len(utts)} utterances of {what} has a label of the run ({', '.join(labels)}); "
                          f"their labels are {seen}: map them with --label-map OTHER=RUN,... (e.g. "
                          f"{sorted(left)[0]}={labels[0]})")
    return keep, out, dict(sorted(left.items()))


def evaluate_run(run: Run, split: str | None = None, manifest: str | None = None,
                 stores: dict[str, str] | None = None, out: str | Path | None = None, log: Callable = print,
                 label_map: dict[str, str] | None = None, drop: Iterable[str] = ()) -> dict:
    """Metrics of ``run`` (module doc): on ``split`` of its own data (default test), or on another corpus
    (``manifest`` of other content; every utterance, or its ``split``), with ``drop`` modalities absent.
    Writes the metrics JSON and the confusion PNG named by ``RunDir.eval_names`` into ``out`` (default: the
    run folder) and returns the result (also ``json``/``png``: the paths written).

    The run's own stores must be unchanged since training (content fingerprints in config.json); a store given
    in ``stores`` (another copy, or another corpus's) must come from the same encoder.
    """
    drop = [m for m in run.modalities if m in set(drop)]
    kept = [m for m in run.modalities if m not in drop]
    if not kept:
        raise ConfigError(f"dropping {', '.join(drop)} leaves run {run.path} no input; keep at least one modality")
    stores = dict(stores or {})
    tcfg = TrainConfig(**run.config["train"])
    man = load_manifest(manifest or tcfg.manifest, None if manifest else tcfg.data_root)
    own_fp = run.config.get("manifest_fingerprint") or run.store_meta[run.modalities[0]].manifest_fingerprint
    other = man.fingerprint != own_fp
    if not other and split is None:
        split = "test"
    corpus_name = Path(str(manifest)).stem if other else None
    json_name, png_name = RunDir.eval_names(split, corpus_name, drop)
    target = RunDir(out or run.path)
    target.refuse_file("--out")
    for m in stores:
        if m not in kept:
            why = "is dropped" if m in drop else f"is not used by run {run.path} ({', '.join(run.modalities)})"
            log(f"note: ignoring --store {m[0]}=...: {m} {why}")
    if drop and not run.modality_dropout:
        log(f"note: run {run.path} was trained without --modality-dropout: it never saw {', '.join(drop)} missing")
    opened = {}
    for m in kept:
        if other and m not in stores:
            raise StoreError(f"--manifest {manifest} is another corpus than run {run.path} was trained on; pass its "
                             f"{m} store (extracted from it with the run's encoder) with --store {m[0]}=PATH")
        path = str(stores.get(m, run.stores[m]))
        if not is_url(path) and not Path(path).exists():
            raise StoreError(f"{m} store {path} of run {run.path} does not exist; restore it or pass "
                             f"--store {m[0]}=PATH (a copy made with the same encoder)")
        st = open_store(path)
        if not other and _same_path(path, run.stores[m]):
            check_run_stores(run.dir, run.config, {m: st})
        st.check(modality=m, manifest=man if other else None, expect=run.store_meta[m],
                 against=f"run {run.path} (trained on {run.stores[m]})")
        opened[m] = st
    corpus = open_corpus(man, opened, in_memory="no", progress=False, log=log,
                         preprocess={m: run.preprocess[m] for m in kept})
    if other:
        idx = np.array([i for i, u in enumerate(corpus.utterances) if split is None or u.split == split], np.int64)
        what = f"split {split}" if split else f"{manifest}"
        if not len(idx):
            have = sorted({u.split for u in corpus.utterances if u.split})
            raise ConfigError(f"--split {split}: {manifest} has no utterances with split={split!r} (its splits: "
                              f"{', '.join(have) or 'none'}); leave --split out to evaluate every utterance")
    else:
        idx = split_indices(corpus.utterances, tcfg, log=lambda *a: None)[split]
        what = f"split {split}"
        if not len(idx):
            raise ConfigError(f"split {split!r} of run {run.path} has no utterances; pick another --split")
    utts = [corpus.utterances[int(i)] for i in idx]
    require_labels(utts, f"of {what}")
    task = run.task_obj
    left: dict[str, int] = {}
    if task.labels is not None:
        keep, utts, left = _relabel(utts, task, label_map or {}, what, log)
        idx = idx[keep]
        if left:
            log(f"left out {sum(left.values())} of the {len(keep) + sum(left.values())} utterances of {what}: their "
                f"labels are not the run's ({', '.join(f'{k}: {v}' for k, v in left.items())}); map them with "
                f"--label-map OTHER=RUN")
    elif label_map:
        raise ConfigError(f"--label-map: run {run.path} predicts a value (--task {task.name}), not classes; "
                          f"leave --label-map out")
    targets = task.targets(utts)
    logits = predict_split(run.model, corpus, idx, run.batch_size)
    bad = nonfinite_rows(logits)
    if len(bad):
        raise StoreError(f"run {run.path} gives non-finite outputs for {len(bad)} of the {len(idx)} {split} "
                         f"utterances (e.g. {utts[int(bad[0])].id!r}); their features are out of range: "
                         f"{verify_hint(st.path for st in opened.values())}")
    outputs, metrics, loss = score(task, logits, targets)
    result = {"run": str(run.path), "split": split, "n": int(len(idx)), "loss": loss, "metrics": metrics,
              "manifest": str(manifest or tcfg.manifest), "manifest_fingerprint": man.fingerprint,
              "other_corpus": other, "dropped": drop, "label_map": dict(label_map or {}),
              "left_out": {"n": int(sum(left.values())), "labels": left},
              "excluded": len([u for u in man if u.id in corpus.excluded]),
              "stores": {m: st.path for m, st in opened.items()}, "ids": [u.id for u in utts],
              "outputs": np.asarray(outputs).tolist()}
    if task.name == "classification" and metrics:
        result["per_class"] = per_class_table(metrics["confusion"], task.labels)
    result["json"] = str(target.write_eval(json_name, result))
    if metrics:
        cm, names = confusion_for(task, metrics, targets, outputs)
        title = f"{run.path.name}: {corpus_name + ' ' if other else ''}{split or 'all'}"
        title += f" without {', '.join(drop)}" if drop else ""
        result["png"] = str(target.plot(png_name, lambda p: plot_confusion(cm, names, p, title)))
    return result
