"""`imo demo`: the whole pipeline on a generated trimodal set, offline, in a few minutes on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("demo_run"), help="Folder for the data, stores, runs and plots."),
    per_class: int = typer.Option(60, help="Utterances per class (4 classes; 60/20/20 train/valid/test)."),
    epochs: int = typer.Option(30, help="Training epochs of every model."),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, help="Show extraction progress bars."),
) -> None:
    """Generate a synthetic trimodal emotion set, extract it, train probes and the fused head, evaluate, predict."""
    from ..demo.run import run_demo
    from ..errors import ConfigError

    if per_class < 5:
        raise ConfigError(f"--per-class {per_class}: use at least 5 (each split needs every class)")
    run_demo(out, per_class=per_class, epochs=epochs, seed=seed, progress=progress,
             log=lambda msg: typer.echo(msg))
