"""`imo verify STORE`."""

from __future__ import annotations

import json

import typer


def verify(store: str = typer.Argument(..., help="Path or URL of an embedding store (.zarr)."),
           mark: bool = typer.Option(True, "--mark/--no-mark", help="Mark damaged parts in the store (readers then "
                                     "refuse them and `imo extract --shard i/n` rebuilds them)."),
           as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of text."),
           progress: bool = typer.Option(True, help="Show a progress bar.")) -> None:
    """Check every file of a store against the checksum recorded when it was written; exit status 1 on damage."""
    from ..store.verify import verify_store

    report = verify_store(store, mark=mark, progress=progress)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        for line in report.lines():
            typer.echo(line)
    if report.damaged:
        raise typer.Exit(1)
