"""`imo extract`: run a frozen encoder over a manifest (or one shard of it) into a store.

The command only parses: it builds one ``ExtractJob`` (every option checked
there) and hands it to the local path (``ExtractJob.run``) or, with
``--workers``/``--scheduler``, to ``extract_on_cluster``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from ..manifest import ShardSpec
from ..project import load_project, parse_modality


def extract(
    modality: str = typer.Option(..., "--modality", "-m", help="audio, text or video."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest JSONL (default: imo.toml's manifest)."),
    data_root: Optional[Path] = typer.Option(None, help="Folder media paths resolve against (default: imo.toml's data_root, else the manifest's folder)."),
    encoder: Optional[str] = typer.Option(None, help="Registered name (fbank), family:source (fabnet:ckpt.pth), or a hub id / local folder."),
    out: Optional[str] = typer.Option(None, help="Store path or URL (default: <cache>/<modality>.zarr from imo.toml)."),
    layers: str = typer.Option("last", help="Hidden states kept: last, all, or indices like 6,12."),
    device: str = typer.Option("auto", help="auto (CUDA if visible, else MPS, else CPU), cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("auto", help="auto (fp16 autocast on GPU), fp32, fp16, bf16."),
    dtype: str = typer.Option("float16", help="Stored values: float16, or float32 for features beyond float16's range."),
    encoder_opt: Optional[List[str]] = typer.Option(None, "--encoder-opt", help="Encoder family option KEY=VALUE (repeatable), e.g. --encoder-opt max_tokens=128; recorded in the store."),
    batch_seconds: Optional[float] = typer.Option(None, help="Batch budget: seconds of audio (tokens for text, frames for video)."),
    shard: str = typer.Option("0/1", help="Write part i of n (0-based), e.g. 3/8 for a SLURM array task."),
    shard_mb: float = typer.Option(128, help="Size of a Zarr shard file (the commit block) in MB."),
    streams: Optional[int] = typer.Option(None, help="Batches run through the model at once (default: one per CPU core, 1 on GPU)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    fps: Optional[float] = typer.Option(None, help="Video: frames sampled per second (default 5); same as --encoder-opt fps=N."),
    max_frames: Optional[int] = typer.Option(None, help="Video: most frames per utterance, spread evenly (default 300); same as --encoder-opt max_frames=N."),
    face: Optional[bool] = typer.Option(None, "--face/--no-face", help="Video: crop the largest face (default) or the centred square; same as --encoder-opt face=true|false."),
    workers: Optional[int] = typer.Option(None, help="Run on a local dask cluster of N worker processes, one task per part."),
    scheduler: Optional[str] = typer.Option(None, help="Run on an existing dask cluster: its scheduler address tcp://HOST:PORT."),
    parts: Optional[int] = typer.Option(None, help="With --workers/--scheduler: parts of the store (default: the existing store's, else 2 per worker)."),
    retries: int = typer.Option(2, help="With --workers/--scheduler: retries of a failed part task."),
) -> None:
    """Extract embeddings of one modality into a sharded Zarr store; re-running resumes."""
    from ..distributed import check_cluster_options
    from ..job import ExtractJob, check_positive, encoder_options
    from ..options import parse_pairs

    mod = parse_modality(modality)
    project = load_project()
    on_cluster = workers is not None or scheduler is not None
    if on_cluster:
        check_cluster_options(scheduler, workers, parts, retries)
        if shard != "0/1":
            raise ConfigError(f"--shard {shard} runs one part as a batch job; with --workers/--scheduler every part "
                              f"runs as a dask task, so leave --shard out (use --parts N to set how many)")
    if fps is not None:
        check_positive("--fps", fps)
    if max_frames is not None:
        check_positive("--max-frames", max_frames, integer=True)
    manifest_path = str(manifest or project.require_manifest())
    enc = encoder or project.encoder(mod)
    options = encoder_options(enc, mod, parse_pairs(encoder_opt or [], "--encoder-opt"),
                              {"fps": ("--fps", fps), "max_frames": ("--max-frames", max_frames),
                               "face": ("--face/--no-face", face)})
    job = ExtractJob(
        manifest=manifest_path,
        data_root=None if (data_root or project.data_root) is None else str(data_root or project.data_root),
        encoder=enc, modality=mod, out=str(out or project.store_path(mod)), layers=layers, device=device,
        precision=precision, dtype=dtype, budget=batch_seconds, shard_mb=shard_mb, streams=streams,
        options=tuple(options.items()), shard=ShardSpec.parse(shard))
    if on_cluster:
        _run_on_cluster(job, scheduler, workers, parts, retries, progress)
    else:
        _run_here(job, progress)


def _run_here(job, progress: bool) -> None:
    manifest = job.load_manifest()
    job = job.resolved()
    ext = job.build_extractor()
    typer.echo(f"{job.modality}: {ext.family} {ext.config.source or ''} on {ext.device}, layers {ext.layers}, "
               f"dim {ext.dim} -> {job.out} (part {job.shard})", err=True)
    result = job.run(ext, manifest, progress=progress, log=lambda msg: typer.echo(msg, err=True))
    typer.echo(result.summary(ext.unit))
    if result.failed:
        typer.echo(f"{len(result.failed)} utterance(s) failed; see {result.errors_file}; fix them and re-run "
                   f"the same command to extract only those", err=True)
        raise typer.Exit(1)


def _run_on_cluster(job, scheduler, workers, parts, retries, progress: bool) -> None:
    from ..distributed import extract_on_cluster

    where = scheduler or f"a local cluster of {workers} worker process(es)"
    if scheduler is None:
        job = job.resolved()  # local workers see this machine's devices; a remote cluster's are decided there
    typer.echo(f"{job.modality}: {job.encoder} on {where}, device {job.device} -> {job.out}", err=True)
    result = extract_on_cluster(job, scheduler=scheduler, workers=workers, parts=parts, retries=retries,
                                progress=progress)
    typer.echo(result.summary())
    for i, msg in sorted(result.part_errors.items()):
        typer.echo(f"part {i}/{result.n_parts} failed: {msg}", err=True)
    if result.failed:
        files = sorted({r.result.errors_file for r in result.parts.values() if r.result.failed})
        typer.echo(f"{len(result.failed)} utterance(s) failed; see {', '.join(files)}; fix them and re-run the "
                   f"same command to extract only those", err=True)
    if result.failed or result.part_errors:
        raise typer.Exit(1)
