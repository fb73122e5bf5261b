"""`imo predict`: label new recordings with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .media_options import media_option

_TIMELINE = "--timeline: recordings of any length"


def predict(
    run: Path = typer.Argument(..., help="A run folder written by `imo train`."),
    audio: Optional[Path] = typer.Option(None, help="An audio file (wav, flac, ogg)."),
    text: Optional[str] = typer.Option(None, help="The transcript."),
    video: Optional[Path] = typer.Option(None, help="A video file."),
    frames: Optional[Path] = typer.Option(None, help="A folder of face-frame images (instead of --video)."),
    manifest: Optional[Path] = typer.Option(None, help="Predict every utterance of this manifest instead."),
    data_root: Optional[Path] = typer.Option(None, help="Where the manifest's media paths resolve (default: its folder)."),
    out: Optional[Path] = typer.Option(None, help="CSV file for --manifest predictions; with --timeline, the folder "
                                       "for its CSV, JSON and PNG (default: the current folder)."),
    device: str = typer.Option("cpu", help="Device for the encoders: cpu, cuda, auto."),
    timeline: Optional[Path] = typer.Option(None, help="Label an audio or video recording of any length segment by "
                                            "segment: NAME.timeline.csv, .json and .png in --out.",
                                            rich_help_panel=_TIMELINE),
    window: Optional[float] = typer.Option(None, help="Fixed windows of this many seconds instead of speech segments.",
                                           rich_help_panel=_TIMELINE),
    hop: Optional[float] = typer.Option(None, help="Seconds between window starts (default: --window).",
                                        rich_help_panel=_TIMELINE),
    transcribe: bool = typer.Option(False, help="Transcripts in the timeline for a run without text too.",
                                    rich_help_panel=_TIMELINE),
    vad_threshold: float = media_option("vad_threshold", _TIMELINE),
    vad_neg_threshold: Optional[float] = media_option("vad_neg_threshold", _TIMELINE),
    min_speech: float = media_option("min_speech", _TIMELINE),
    min_silence: float = media_option("min_silence", _TIMELINE),
    pad: float = media_option("pad", _TIMELINE),
    merge_gap: float = media_option("merge_gap", _TIMELINE),
    min_len: float = media_option("min_len", _TIMELINE),
    max_len: float = media_option("max_len", _TIMELINE),
    asr: Optional[str] = media_option("asr", _TIMELINE, help="faster-whisper model folder or name for the transcripts "
                                      "a run with text needs (default: the packaged Whisper base)."),
    compute_type: str = media_option("compute_type", _TIMELINE),
    language: str = media_option("language", _TIMELINE),
    beam_size: int = media_option("beam_size", _TIMELINE),
    asr_device: str = media_option("asr_device", _TIMELINE),
    progress: bool = media_option("progress", _TIMELINE),
) -> None:
    """Print the label and class probabilities (or the value) for new media; --manifest for many; --timeline for
    a long recording."""
    if timeline is not None:                     # every option goes on to the timeline (commands/timeline.py)
        from .timeline import predict_timeline

        return predict_timeline(**{k: v for k, v in locals().items() if k != "predict_timeline"})
    from ..errors import ConfigError
    from ..manifest import load_manifest
    from ..predict import Predictor, format_prediction, write_predictions

    if manifest is None and not any(x is not None for x in (audio, text, video, frames)):
        raise ConfigError("give the media to label (--audio, --text, --video/--frames), --manifest FILE or "
                          "--timeline RECORDING")
    predictor = Predictor.load(run, device=device)
    if manifest is not None:
        if out is None:
            raise ConfigError("--manifest needs --out predictions.csv")
        preds = predictor.predict_manifest(load_manifest(manifest, data_root))
        write_predictions(preds, out)
        failed = [p for p in preds if p.error]
        partial = [p for p in preds if p.missing]
        if partial:
            lacking = ", ".join(sorted({m for p in partial for m in p.missing}))
            typer.echo(f"note: {len(partial)} utterance(s) lack {lacking} (e.g. {partial[0].id!r}); run {run} was "
                       f"trained with --modality-dropout {predictor.run.modality_dropout:g} and predicts them from "
                       f"the modalities they have", err=True)
        typer.echo(f"{len(preds) - len(failed)} predicted, {len(failed)} failed -> {out}")
        for p in failed:
            typer.echo(f"  {p.id}: {p.error}", err=True)
        if failed:
            raise typer.Exit(1)
        return
    used = {}
    for name, value in {"audio": audio, "text": text, "video": video, "frames": frames}.items():
        if value is None:
            continue
        if ("video" if name == "frames" else name) in predictor.modalities:
            used[name] = value
        else:
            typer.echo(f"note: ignoring --{name}; run {run} uses {', '.join(predictor.modalities)}", err=True)
    pred = predictor.predict(**used)
    if pred.missing:
        have = ", ".join(m for m in predictor.modalities if m not in pred.missing)
        typer.echo(f"note: no {', '.join(pred.missing)} given; run {run} was trained with --modality-dropout "
                   f"{predictor.run.modality_dropout:g} and predicts from {have} alone", err=True)
    typer.echo(format_prediction(pred))
