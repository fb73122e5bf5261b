"""`imo extract`: run a frozen encoder over a manifest (or one shard of it) into a store."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..manifest import ShardSpec, load_manifest
from ..project import load_project, parse_modality


def extract(
    modality: str = typer.Option(..., "--modality", "-m", help="audio, text or video."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest JSONL (default: imo.toml's manifest)."),
    data_root: Optional[Path] = typer.Option(None, help="Folder media paths resolve against (default: imo.toml's data_root, else the manifest's folder)."),
    encoder: Optional[str] = typer.Option(None, help="Registered name (fbank), family:source (fabnet:ckpt.pth), or a hub id / local folder."),
    out: Optional[str] = typer.Option(None, help="Store path or URL (default: <cache>/<modality>.zarr from imo.toml)."),
    layers: str = typer.Option("last", help="Hidden states kept: last, all, or indices like 6,12."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", help="auto (fp16 autocast on GPU), fp32, fp16, bf16."),
    batch_seconds: Optional[float] = typer.Option(None, help="Batch budget: seconds of audio (tokens for text, frames for video)."),
    shard: str = typer.Option("0/1", help="Write part i of n (0-based), e.g. 3/8 for a SLURM array task."),
    shard_mb: float = typer.Option(128, help="Size of a Zarr shard file (the commit block) in MB."),
    streams: Optional[int] = typer.Option(None, help="Batches run through the model at once (default: one per CPU core, 1 on GPU)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    fps: Optional[float] = typer.Option(None, help="Video: frames sampled per second (default 5)."),
    max_frames: Optional[int] = typer.Option(None, help="Video: most frames per utterance, spread evenly (default 300)."),
    face: Optional[bool] = typer.Option(None, "--face/--no-face", help="Video: crop the largest face (default) or the centred square."),
    workers: Optional[int] = typer.Option(None, help="Run on a local dask cluster of N worker processes, one task per part."),
    scheduler: Optional[str] = typer.Option(None, help="Run on an existing dask cluster: its scheduler address tcp://HOST:PORT."),
    parts: Optional[int] = typer.Option(None, help="With --workers/--scheduler: parts of the store (default: the existing store's, else 2 per worker)."),
    retries: int = typer.Option(2, help="With --workers/--scheduler: retries of a failed part task."),
) -> None:
    """Extract embeddings of one modality into a sharded Zarr store; re-running resumes."""
    from extractors import build_extractor

    from ..extract import extract as run_extract

    mod = parse_modality(modality)
    project = load_project()
    video = {"fps": fps, "max_frames": max_frames, "face": face}
    if workers is not None or scheduler is not None:
        from ..distributed import cluster_command
        cluster_command(project, mod, manifest, data_root, encoder, out, layers, device, precision, batch_seconds,
                        shard, shard_mb, streams, progress, workers, scheduler, parts, retries, video)
        return
    man = load_manifest(manifest or project.require_manifest(), data_root or project.data_root)
    spec = ShardSpec.parse(shard)
    ext = build_extractor(encoder or project.encoder(mod), mod, layers=layers, device=device, precision=precision, **video)
    store = out or str(project.store_path(mod))
    typer.echo(f"{mod}: {ext.family} {ext.config.source or ''} on {ext.device}, layers {ext.layers}, dim {ext.dim}"
               f" -> {store} (part {spec})", err=True)
    result = run_extract(man, ext, store, spec, budget=batch_seconds, progress=progress,
                         shard_mb=shard_mb, streams=streams)
    typer.echo(result.summary(ext.unit))
    if result.failed:
        typer.echo(f"{len(result.failed)} utterance(s) failed; see {result.errors_file}; fix them and re-run "
                   f"the same command to extract only those", err=True)
        raise typer.Exit(1)
