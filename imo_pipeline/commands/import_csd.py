"""`imo import-csd FILE.csd --manifest M.jsonl --modality audio --out STORE.zarr`."""

from __future__ import annotations

from pathlib import Path
import typer


def import_csd(
    csd: Path = typer.Argument(..., help="A CMU-MultimodalSDK computational sequence (.csd)."),
    manifest: Path = typer.Option(..., help="Manifest whose utterances the features are aligned to."),
    modality: str = typer.Option(..., "--modality", "-m", help="audio, text or video."),
    out: str = typer.Option(..., help="Embedding store to write (.zarr)."),
    dtype: str = typer.Option("float16", help="Stored value type: float16, or float32 for features beyond +-65504."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Import released features (COVAREP, FACET, GloVe, ...) into an embedding store heads can train on."""
    from ..csd import import_csd as run
    from ..manifest import load_manifest
    from ..project import parse_modality

    man = load_manifest(manifest)
    result = run(csd, man, out, parse_modality(modality), progress=progress, dtype=dtype)
    typer.echo(result.summary())
    for uid, why in list(result.failed.items())[:10]:
        typer.echo(f"  {uid}: {why}", err=True)
    if result.failed:
        typer.echo(f"{len(result.failed)} utterance(s) not imported (listed in the store's part attrs 'failed')", err=True)
        raise typer.Exit(1)
