"""`imo export STORE --format hdf5 --out FILE.h5`."""

from __future__ import annotations

from pathlib import Path

import typer


def export(
    store: str = typer.Argument(..., help="An embedding store (.zarr)."),
    out: Path = typer.Option(..., help="File to write (.h5, or .csd with --format csd)."),
    format: str = typer.Option("hdf5", "--format", "-f", help="hdf5 (one file, see README) or csd (CMU-MultimodalSDK)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Write a store to one HDF5 file (ids, offsets, values, pooled) or a .csd computational sequence."""
    from ..export import export_store

    path = export_store(store, out, format, progress)
    typer.echo(f"wrote {path}")
