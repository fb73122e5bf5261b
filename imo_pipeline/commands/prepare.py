"""`imo prepare DATASET ROOT --out data_manifests/NAME.jsonl` (and `imo prepare media PATH...`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .media_options import asr_config, media_option, segment_config

_MEDIA = "media: raw recordings"
_EMOBOX = "emobox: EmoBox metadata"
_LHOTSE = "lhotse: cuts manifests"


def prepare(
    dataset: str = typer.Argument(..., help="iemocap, meld, mosi, mosei, ravdess, cremad; media (raw recordings), "
                                  "emobox (EmoBox metadata), lhotse (a lhotse CutSet)."),
    paths: List[Path] = typer.Argument(..., help="The release's top folder. media: audio/video files and/or folders; "
                                       "emobox: EmoBox's data/ folder, data/<NAME>/ or a metadata JSONL; "
                                       "lhotse: a cuts manifest (.jsonl or .jsonl.gz)."),
    out: Path = typer.Option(..., "--out", "-o", help="Manifest to write (JSONL); a NAME.report.json goes beside it."),
    labels: Optional[str] = typer.Option(None, help="Label set: iemocap 4class|6class|binary|original (the "
                                         "original work's protocol); meld 7class|sentiment; mosi/mosei "
                                         "regression|2class|7class; ravdess 8class|4class; cremad 6class|4class; "
                                         "emobox mapped|raw."),
    strict: bool = typer.Option(False, help="Fail on any missing file, unknown label code or mismatched id."),
    folds: Optional[str] = typer.Option(None, help="mosi/mosei: standard folds file (JSON or the SDK's *_std_folds.py); "
                                        "ravdess/cremad: number of actor-independent folds (default 5)."),
    labels_file: Optional[Path] = typer.Option(None, help="mosei: CMU_MOSEI_Labels.csd (default: found under ROOT)."),
    data_root: Optional[Path] = typer.Option(None, help="media: folder the manifest's media paths are written relative "
                                             "to (default: the manifest's folder); emobox/lhotse: folder their "
                                             "relative audio paths resolve against (checked when given)."),
    vad_threshold: float = media_option("vad_threshold", _MEDIA),
    vad_neg_threshold: Optional[float] = media_option("vad_neg_threshold", _MEDIA),
    min_speech: float = media_option("min_speech", _MEDIA),
    min_silence: float = media_option("min_silence", _MEDIA),
    pad: float = media_option("pad", _MEDIA),
    merge_gap: float = media_option("merge_gap", _MEDIA),
    min_len: float = media_option("min_len", _MEDIA),
    max_len: float = media_option("max_len", _MEDIA),
    asr: Optional[str] = media_option("asr", _MEDIA),
    no_asr: bool = media_option("no_asr", _MEDIA),
    compute_type: str = media_option("compute_type", _MEDIA),
    language: str = media_option("language", _MEDIA),
    beam_size: int = media_option("beam_size", _MEDIA),
    asr_device: str = media_option("asr_device", _MEDIA),
    progress: bool = media_option("progress", _MEDIA),
    emobox_dataset: Optional[str] = typer.Option(None, "--dataset", help="EmoBox dataset name (iemocap, cafe, ...; "
                                                 "default: from the folder or file name).", rich_help_panel=_EMOBOX),
    fold: int = typer.Option(1, help="EmoBox fold whose train/valid/test lists set each line's split.",
                             rich_help_panel=_EMOBOX),
    valid_fraction: float = typer.Option(0.2, help="Share of a fold's training part held out as valid when EmoBox "
                                         "gives no valid list (chosen by a hash of the key).", rich_help_panel=_EMOBOX),
    label_field: Optional[str] = typer.Option(None, help="Supervision field holding the label (an attribute such as "
                                              "'gender' or a custom key such as 'emotion'); none: no labels.",
                                              rich_help_panel=_LHOTSE),
) -> None:
    """Turn a dataset release, raw recordings, EmoBox metadata or a lhotse CutSet into a manifest;
    print counts and problems."""
    from ..errors import ConfigError
    from ..prepare import prepare as run

    if dataset == "media":
        seg = segment_config(vad_threshold, vad_neg_threshold, min_speech, min_silence, pad, merge_gap, min_len,
                             max_len)
        asr_cfg = None if no_asr else asr_config(asr, compute_type, language, beam_size, asr_device)
        root = (data_root or out.parent).resolve()
        options = {"paths": paths, "segment": seg, "asr": asr_cfg, "data_root": root, "progress": progress}
    else:
        if len(paths) != 1:
            raise ConfigError(f"imo prepare {dataset} takes one path, got {len(paths)}; only `imo prepare media` "
                              f"takes several")
        root = paths[0]
        if dataset == "emobox":
            options = {"name": emobox_dataset, "data_root": data_root, "fold": fold, "valid_fraction": valid_fraction}
        elif dataset == "lhotse":
            options = {"label_field": label_field, "data_root": data_root}
        else:
            options = {k: v for k, v in {"folds": folds, "labels_file": labels_file}.items() if v}
    utts, report = run(dataset, paths[0], out, labels=labels, strict=strict, **options)
    typer.echo(report.summary())
    typer.echo(f"wrote {len(utts)} utterances to {out} (report: {out.with_name(out.stem + '.report.json')})")
    if dataset == "media":
        if root == out.parent.resolve():
            typer.echo("media paths are relative to the manifest's folder: `imo extract` reads them as is")
        else:
            typer.echo(f"media paths are relative to {root}: use --data-root {root} or data_root in imo.toml")
    elif dataset in ("emobox", "lhotse") and data_root is not None:
        typer.echo(f"relative media paths are relative to {data_root}: use --data-root {data_root} or data_root "
                   f"in imo.toml")
    elif dataset in ("emobox", "lhotse"):
        start = "EmoBox's checkout (downloads/...)" if dataset == "emobox" else "the folder lhotse ran in"
        typer.echo(f"relative media paths are kept as the source gives them (relative to {start}), unchecked: "
                   f"pass that folder as --data-root here to check the files, and to imo extract")
    else:
        typer.echo(f"media paths are relative to {root}: use --data-root {root} or data_root in imo.toml")
