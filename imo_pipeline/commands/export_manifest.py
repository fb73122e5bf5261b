"""`imo export-manifest m.jsonl --format lhotse --out CUTS.jsonl.gz`: a manifest in another toolkit's format."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

FORMATS = ("lhotse",)


def export_manifest(
    manifest: Path = typer.Argument(..., help="Manifest JSONL to convert."),
    out: Path = typer.Option(..., "--out", "-o", help="File to write (lhotse: CUTS.jsonl.gz or .jsonl)."),
    format: str = typer.Option("lhotse", "--format", help="Target format: lhotse (a CutSet)."),
    data_root: Optional[Path] = typer.Option(None, help="Folder the manifest's media paths resolve against "
                                             "(default: the manifest's folder); written as absolute paths."),
    label_field: str = typer.Option("emotion", help="lhotse: supervision custom key that holds the label."),
) -> None:
    """Convert a manifest for another toolkit; utterances that cannot be converted are listed (exit status 1)."""
    from ..errors import ConfigError
    from ..manifest import load_manifest

    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: use one of {', '.join(FORMATS)}")
    from ..prepare.lhotse import export_lhotse

    result = export_lhotse(load_manifest(manifest, data_root), out, label_field=label_field)
    typer.echo(result.summary())
    if result.problems:
        raise typer.Exit(1)
