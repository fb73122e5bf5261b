"""`imo compare RUN [RUN ...]`: finished runs in one table (Markdown + CSV) and one plot with error bars."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def compare(
    runs: List[Path] = typer.Argument(..., help="Run folders of `imo train`: single runs, --seeds or --folds folders."),
    out: Path = typer.Option(Path("compare"), help="Folder for compare.md, compare.csv and compare.png."),
    force: bool = typer.Option(False, help="List runs evaluated on different manifests, protocols or label sets "
                               "together anyway: each protocol gets a letter and its own ranking."),
    metric: Optional[str] = typer.Option(None, help="Metric that ranks and is plotted first (default: the task's "
                                         "ua, f1_mean or mae)."),
) -> None:
    """Put finished runs side by side: head, modalities, encoders, protocol, metrics as mean ± std, size, time."""
    from ..training.compare import compare as run_compare, markdown, write_report

    entries = run_compare(runs, force=force, metric=metric)
    files = write_report(entries, out, metric)
    typer.echo(markdown(entries, metric), nl=False)
    typer.echo(f"written: {files['markdown']}, {files['csv']}, {files['png']}")
