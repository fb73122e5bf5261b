"""The `imo` command line. Each command lives in imo_pipeline/commands/<name>.py."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from . import __version__
from .errors import ImoError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multimodal emotion recognition on cached self-supervised embeddings.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"imo {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")) -> None:
    """imo: extract frozen SSL embeddings once, then train fusion heads in minutes."""


def _register() -> None:
    from .commands import export, export_manifest, extract, import_csd, inspect, prepare, verify

    app.command()(extract.extract)
    app.command()(inspect.inspect)
    app.command()(verify.verify)
    app.command()(prepare.prepare)
    app.command(name="import-csd")(import_csd.import_csd)
    app.command()(export.export)
    app.command(name="export-manifest")(export_manifest.export_manifest)
    from .commands import compare, demo, evaluate, predict, train

    app.command()(train.train)
    app.command()(compare.compare)
    app.command()(evaluate.evaluate)
    app.command()(predict.predict)
    app.command()(demo.demo)


_register()


def run() -> None:
    """Entry point that turns ImoError into a one-line message and exit status 2."""
    try:
        app()
    except ImoError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
