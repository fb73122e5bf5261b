"""`imo train`: train a fusion head on cached embeddings (or cross-validate it with --folds)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import ConfigError
from ..paths import is_url
from ..project import load_project, parse_modality
from ..registry import declared_names


def parse_pairs(values: list[str], option: str, modality_keys: bool = True) -> dict[str, str]:
    """``["a=cache/x.zarr", ...]`` -> ``{"audio": "cache/x.zarr"}`` (keys parsed as modalities if asked)."""
    out = {}
    for v in values or []:
        key, sep, val = v.partition("=")
        if not sep or not key or not val:
            raise ConfigError(f"{option} {v!r}: expected KEY=VALUE, e.g. {option} a=cache/audio.zarr")
        out[parse_modality(key) if modality_keys else key.strip()] = val.strip()
    return out


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def train(
    modalities: str = typer.Option(..., "--modalities", "-m", help="Comma list of a/t/v (audio, text, video)."),
    out: Path = typer.Option(..., help="Run folder, e.g. runs/NAME (re-running the same command resumes)."),
    head: str = typer.Option("cross_attention", help=f"Fusion head: {', '.join(declared_names('heads', 'register_head'))}."),
    head_opt: List[str] = typer.Option([], "--head-opt", help="Head option KEY=VALUE, e.g. d_model=256 (repeatable)."),
    task: str = typer.Option("classification", help="classification, binary (one decision per emotion) or regression."),
    class_weights: str = typer.Option("none", help="none or balanced (inverse class frequency)."),
    store: List[str] = typer.Option([], help="MODALITY=PATH of a store (default: <cache>/<modality>.zarr from imo.toml)."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest JSONL (default: imo.toml's manifest)."),
    data_root: Optional[Path] = typer.Option(None, help="Data root (default: imo.toml's)."),
    folds: Optional[str] = typer.Option(None, help="Leave-one-group-out cross-validation over this manifest field (e.g. fold)."),
    epochs: int = typer.Option(20),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(5e-4, help="Peak learning rate (AdamW)."),
    betas: str = typer.Option("0.9,0.98", help="AdamW betas."),
    eps: float = typer.Option(1e-8, help="AdamW eps."),
    weight_decay: float = typer.Option(0.01),
    warmup: float = typer.Option(0.1, help="Warmup: fraction of all steps (<1) or a number of steps."),
    schedule: str = typer.Option("poly", help="After warmup: poly, cosine or constant."),
    power: float = typer.Option(1.0, help="Power of the polynomial decay."),
    clip: float = typer.Option(1.0, help="Max gradient norm (0: no clipping)."),
    accum: int = typer.Option(1, help="Batches per optimizer step (gradient accumulation)."),
    patience: int = typer.Option(0, help="Early stopping: epochs without improvement (0: off)."),
    best_metric: Optional[str] = typer.Option(None, help="Metric that picks the best checkpoint (default: ua, f1_mean or mae)."),
    seed: int = typer.Option(0),
    modality_dropout: float = typer.Option(0.0, help="Per sample, drop each modality with this probability (never "
                                           "all), so the run can predict when one is missing."),
    downsample: List[str] = typer.Option([], help="MODALITY=K: mean over K frames (default: audio to ~12.5 frames/s)."),
    threads: int = typer.Option(1, help="CPU threads for the head (1 is fastest for small heads; a spare core builds batches)."),
    in_memory: str = typer.Option("auto", help="auto (load when it fits in half the free RAM), yes or no."),
    stop_after: Optional[int] = typer.Option(None, help="Stop after this many epochs; re-run without it to resume."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Train only the fusion head on cached embeddings; writes config, metrics log, checkpoints and plots to --out."""
    from heads import head_config

    from ..training.runs import RunDir
    from ..training.trainer import TrainConfig, cross_validate, train as run_train

    mods = [parse_modality(m) for m in modalities.split(",") if m.strip()]
    if len(set(mods)) != len(mods) or not mods:
        raise ConfigError(f"--modalities {modalities!r}: name each of a, t, v at most once")
    head_options = {k: _value(v) for k, v in parse_pairs(head_opt, "--head-opt", False).items()}
    head_config(head, head_options)       # unknown head or bad --head-opt: refused before any store is read
    project = load_project()
    given = parse_pairs(store, "--store")
    stores = {m: str(Path(given[m]).resolve() if not is_url(given[m]) else given[m]) if m in given
              else str(project.store_path(m)) for m in mods}
    try:
        b = tuple(float(x) for x in betas.split(","))
    except ValueError:
        b = ()
    if len(b) != 2:
        raise ConfigError(f"--betas {betas!r}: use two numbers in [0, 1), e.g. 0.9,0.98")
    man = manifest or project.require_manifest()
    root = data_root or project.data_root
    cfg = TrainConfig(
        modalities=mods, stores=stores, manifest=str(Path(man).resolve()), data_root=str(root) if root else None,
        head=head, head_options=head_options,
        task=task, class_weights=class_weights,
        downsample={m: _value(v) for m, v in parse_pairs(downsample, "--downsample").items()},
        epochs=epochs, batch_size=batch_size, lr=lr, betas=b, eps=eps, weight_decay=weight_decay, warmup=warmup,
        schedule=schedule, power=power, clip=clip, accum=accum, patience=patience, best_metric=best_metric,
        seed=seed, threads=threads, in_memory=in_memory, stop_after=stop_after, modality_dropout=modality_dropout)
    cfg.check()
    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    if folds:
        res = cross_validate(cfg, out, folds, progress, log)
        if "stopped_after" in res:
            return
        typer.echo(f"cross-validation over {folds} ({len(res['folds'])} folds), test metrics:")
        keys = [k for k in res["mean"] if k != "confusion"]
        typer.echo("fold".ljust(12) + "".join(k[:12].rjust(13) for k in keys))
        for g, m in res["folds"].items():
            typer.echo(str(g)[:12].ljust(12) + "".join(f"{m[k]:13.4f}" for k in keys))
        typer.echo("mean ± std".ljust(12) + "".join(f"{res['mean'][k]:7.4f}±{res['std'][k]:.3f}".rjust(13) for k in keys))
        typer.echo(f"written: {RunDir(out).file(RunDir.CV)}")
        return
    summary = run_train(cfg, out, progress=progress, log=log)
    if "stopped_after" in summary:
        return
    split = summary["eval_split"]
    scalars = {k: v for k, v in summary[split].items() if isinstance(v, (int, float))}
    typer.echo(f"best epoch {summary['best_epoch']} (valid {summary['best_metric']} {summary['best_valid']:.4f}); "
               f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    typer.echo(f"run folder: {out}")
