"""`imo prepare DATASET ROOT --out data_manifests/NAME.jsonl`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def prepare(
    dataset: str = typer.Argument(..., help="iemocap, meld, mosi, mosei, ravdess or cremad."),
    root: Path = typer.Argument(..., help="The release's top folder (e.g. IEMOCAP_full_release)."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest to write (JSONL); a NAME.report.json goes beside it."),
    labels: Optional[str] = typer.Option(None, help="Label set: iemocap 4class|6class|binary; meld 7class|sentiment; "
                                         "mosi/mosei regression|2class|7class; ravdess 8class|4class; cremad 6class|4class."),
    strict: bool = typer.Option(False, help="Fail on any missing file, unknown label code or mismatched id."),
    folds: Optional[str] = typer.Option(None, help="mosi/mosei: standard folds file (JSON or the SDK's *_std_folds.py); "
                                        "ravdess/cremad: number of actor-independent folds (default 5)."),
    labels_file: Optional[Path] = typer.Option(None, help="mosei: CMU_MOSEI_Labels.csd (default: found under ROOT)."),
) -> None:
    """Turn a dataset release into a manifest with labels, splits, folds and speakers; print counts and problems."""
    from ..prepare import prepare as run

    options = {"folds": folds, "labels_file": labels_file}
    utts, report = run(dataset, root, out, labels=labels, strict=strict, **{k: v for k, v in options.items() if v})
    typer.echo(report.summary())
    typer.echo(f"wrote {len(utts)} utterances to {out} (report: {out.with_name(out.stem + '.report.json')}); "
               f"media paths are relative to {root}: use --data-root {root} or data_root in imo.toml")
