"""`imo evaluate RUN`: metrics JSON, confusion matrix PNG and a per-class table, on the run's own data, on
another corpus (--manifest + --store + --label-map), or with modalities dropped (--drop)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by `imo train` (one fold's folder for --folds runs)."),
    split: Optional[str] = typer.Option(None, help="train, valid or test: as the run split the data (default test); "
                                                   "with another corpus, its utterances of that split (default all)."),
    checkpoint: str = typer.Option("best", help="best or last."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest (default: the one the run was trained on); another "
                                                       "corpus's manifest evaluates on every utterance of it."),
    store: List[str] = typer.Option([], help="MODALITY=PATH: another copy of a store, or another corpus's store "
                                             "(same encoder)."),
    label_map: Optional[str] = typer.Option(None, help="Another corpus's labels to the run's: joy=hap,anger=ang "
                                                       "or a JSON file; other labels are left out and counted."),
    drop: List[str] = typer.Option([], help="Modality absent for every utterance, e.g. v (repeatable or a,v); "
                                            "its store is not read."),
    out: Optional[Path] = typer.Option(None, help="Folder for the eval-*.json and the PNG (default: the run folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a trained run on a split of its data, on another corpus, or with modalities missing."""
    from ..training.evaluate import evaluate_run, parse_drop, parse_label_map
    from ..training.runs import load_run
    from .train import parse_pairs

    r = load_run(run, checkpoint)
    res = evaluate_run(r, split, str(manifest) if manifest else None, parse_pairs(store, "--store"), out,
                       log=lambda msg: typer.echo(msg, err=True), label_map=parse_label_map(label_map),
                       drop=parse_drop(drop, r))
    metrics = {k: v for k, v in res["metrics"].items() if k != "confusion"}
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    where = (f"{res['manifest']}" + (f" split {res['split']}" if res["split"] else "") if res["other_corpus"]
             else str(res["split"]))
    left = res["left_out"]["n"]
    typer.echo(f"{run} on {where} ({res['n']} utterances{f', {left} left out (labels not mapped)' if left else ''}"
               f"{', without ' + ', '.join(res['dropped']) if res['dropped'] else ''}; {checkpoint} checkpoint)")
    for k, v in metrics.items():
        typer.echo(f"  {k:16s} {v:.4f}")
    if res.get("per_class"):
        typer.echo(f"  {'class':12s} {'support':>8s} {'precision':>10s} {'recall':>8s} {'f1':>8s}")
        for row in res["per_class"]:
            typer.echo(f"  {row['class']:12s} {row['support']:8d} {row['precision']:10.4f} {row['recall']:8.4f} {row['f1']:8.4f}")
    typer.echo(f"written: {', '.join(res[k] for k in ('json', 'png') if k in res)}")
