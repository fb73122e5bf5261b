"""`imo predict RUN --timeline FILE [--out DIR]`: the part of `imo predict` that labels a long recording."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from .media_options import ASR_OPTIONS, SEGMENT_OPTIONS, asr_config, segment_config


def predict_timeline(run: Path, timeline: Path, out: Path | None, device: str, window: float | None,
                     hop: float | None, transcribe: bool, progress: bool, **options: Any) -> None:
    """Build the timeline from the parsed options, run it, print where its files went and what failed."""
    from ..errors import ConfigError
    from ..predict import Predictor
    from ..timeline import Timeline, TimelineConfig

    other = [f"--{k.replace('_', '-')}" for k in ("audio", "text", "video", "frames", "manifest", "data_root")
             if options.get(k) is not None]
    if other:
        raise ConfigError(f"--timeline labels one recording; leave out {', '.join(other)}")
    if not Path(timeline).exists():
        raise ConfigError(f"--timeline {timeline}: no such file; give an audio or video recording")
    seg = segment_config(**{k: options[k] for k in SEGMENT_OPTIONS})
    cfg = TimelineConfig(segment=seg, window=window, hop=hop)      # options checked before the run loads
    asr_cfg = asr_config(**{k: options[k] for k in ASR_OPTIONS})
    predictor = Predictor.load(run, device=device)
    if "text" in predictor.modalities or transcribe:
        cfg.asr = asr_cfg
    result = Timeline(predictor, cfg).run(timeline, out if out is not None else Path.cwd(), progress=progress)
    failed = result.failed
    typer.echo(f"{len(result.segments) - len(failed)} segments labelled, {len(failed)} failed "
               f"({result.scan.duration:.1f} s of {timeline.name})")
    typer.echo(f"  {result.csv}\n  {result.json}\n  {result.png}")
    for s in failed:
        typer.echo(f"  segment {s.index} [{s.start:.2f}, {s.end:.2f}): {s.error}", err=True)
    if failed:
        raise typer.Exit(1)
