"""`imo evaluate RUN --split test`: metrics JSON, confusion matrix PNG and a per-class table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def evaluate(
    run: Path = typer.Argument(..., help="A run folder written by `imo train` (one fold's folder for --folds runs)."),
    split: str = typer.Option("test", help="train, valid or test (as the run split the data)."),
    checkpoint: str = typer.Option("best", help="best or last."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest (default: the one the run was trained on)."),
    store: List[str] = typer.Option([], help="MODALITY=PATH to evaluate on another copy of a store (same encoder)."),
    out: Optional[Path] = typer.Option(None, help="Folder for eval-<split>.json and the PNG (default: the run folder)."),
    as_json: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
) -> None:
    """Evaluate a trained run on a split of its manifest."""
    from ..training.evaluate import evaluate_run
    from ..training.runs import RunDir, load_run
    from .train import parse_pairs

    json_name, png_name = RunDir.eval_names(split)
    r = load_run(run, checkpoint)
    res = evaluate_run(r, split, str(manifest) if manifest else None, parse_pairs(store, "--store"), out,
                       log=lambda msg: typer.echo(msg, err=True))
    metrics = {k: v for k, v in res["metrics"].items() if k != "confusion"}
    if as_json:
        typer.echo(json.dumps(metrics, indent=2))
        return
    typer.echo(f"{run} on {split} ({res['n']} utterances, {checkpoint} checkpoint)")
    for k, v in metrics.items():
        typer.echo(f"  {k:16s} {v:.4f}")
    if res.get("per_class"):
        typer.echo(f"  {'class':12s} {'support':>8s} {'precision':>10s} {'recall':>8s} {'f1':>8s}")
        for row in res["per_class"]:
            typer.echo(f"  {row['class']:12s} {row['support']:8d} {row['precision']:10.4f} {row['recall']:8.4f} {row['f1']:8.4f}")
    typer.echo(f"written: {Path(out or run) / json_name}, {Path(out or run) / png_name}")
