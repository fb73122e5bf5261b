"""`imo train`: train a fusion head on cached embeddings (once, per seed, per fold, or per fold and seed).

Each parameter of the command is one field of ``TrainConfig`` or ``ExperimentOptions`` (training/config.py,
where the options are declared) under the same name; every one defaults to None (not given) so that the
``[train]`` section of imo.toml, or of ``--config FILE``, fills what the command line leaves out.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, List, Optional

import typer

from ..errors import ConfigError
from ..project import load_project, parse_modality, read_config_file
from ..registry import declared_names
from ..training.config import ExperimentOptions, TrainConfig, merge_options, section_values

_DEFAULTS = {f.name: f.default for cls in (TrainConfig, ExperimentOptions) for f in dataclasses.fields(cls)
             if f.default is not dataclasses.MISSING}


def _d(name: str, text: str = "") -> str:
    """Help text with the option's default (from its dataclass)."""
    default = _DEFAULTS.get(name)
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default: {shown})".strip() if default is not None else text


def parse_pairs(values: list[str], option: str, modality_keys: bool = True, commas: bool = False) -> dict[str, str]:
    """``["a=cache/x.zarr", ...]`` -> ``{"audio": "cache/x.zarr"}`` (keys parsed as modalities if asked; with
    ``commas`` one value may hold several pairs, ``a=936,v=300``)."""
    out = {}
    items = [p for v in values or [] for p in (v.split(",") if commas else [v])]
    for v in items:
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


def _seeds(text: str) -> int | list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()] if "," in text else int(text)
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: give a count (--seeds 5) or a comma list of seeds (--seeds 0,1,2)") from None


def _betas(text: str) -> tuple[float, ...]:
    try:
        b = tuple(float(x) for x in text.split(","))
    except ValueError:
        b = ()
    if len(b) != 2:
        raise ConfigError(f"--betas {text!r}: use two numbers in [0, 1), e.g. 0.9,0.98")
    return b


#: command-line text -> the option's value, for the options whose text is not already their type
PARSE = {
    "modalities": lambda v: [m for m in v.split(",") if m.strip()],
    "head_options": lambda v: {k: _value(x) for k, x in parse_pairs(v, "--head-opt", False).items()},
    "stores": lambda v: parse_pairs(v, "--store"),
    "downsample": lambda v: {m: _value(x) for m, x in parse_pairs(v, "--downsample", commas=True).items()},
    "max_frames": lambda v: {m: _value(x) for m, x in parse_pairs(v, "--max-frames", commas=True).items()},
    "betas": _betas,
    "seeds": _seeds,
    "manifest": lambda v: Path(v).resolve(),
    "data_root": lambda v: Path(v).resolve(),
}


def train(
    modalities: Optional[str] = typer.Option(None, "--modalities", "-m", help="Comma list of a/t/v (audio, text, video); required here or in \\[train]."),
    out: Optional[Path] = typer.Option(None, help="Run folder, e.g. runs/NAME (re-running the same command resumes)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file whose \\[train] section holds imo train "
                                          "options (used instead of imo.toml's \\[train]); the command line overrides it."),
    head: Optional[str] = typer.Option(None, help=_d("head", f"Fusion head: {', '.join(declared_names('heads', 'register_head'))}.")),
    head_options: List[str] = typer.Option([], "--head-opt", help="Head option KEY=VALUE, e.g. d_model=256 (repeatable)."),
    task: Optional[str] = typer.Option(None, help=_d("task", "classification, binary (one decision per emotion) or regression.")),
    class_weights: Optional[str] = typer.Option(None, help=_d("class_weights", "none or balanced (inverse class frequency).")),
    stores: List[str] = typer.Option([], "--store", help="MODALITY=PATH of a store (default: <cache>/<modality>.zarr from imo.toml)."),
    manifest: Optional[Path] = typer.Option(None, help="Manifest JSONL (default: imo.toml's manifest)."),
    data_root: Optional[Path] = typer.Option(None, help="Data root (default: imo.toml's)."),
    folds: Optional[str] = typer.Option(None, help="Leave-one-group-out cross-validation over this manifest field (e.g. fold)."),
    seeds: Optional[str] = typer.Option(None, help="Train each fold (or the split) once per seed: N (N seeds from --seed) "
                                        "or a comma list (0,1,2); runs go to OUT/seed-S (OUT/fold-G/seed-S)."),
    epochs: Optional[int] = typer.Option(None, help=_d("epochs")),
    batch_size: Optional[int] = typer.Option(None, help=_d("batch_size")),
    lr: Optional[float] = typer.Option(None, help=_d("lr", "Peak learning rate (AdamW).")),
    betas: Optional[str] = typer.Option(None, help=_d("betas", "AdamW betas.")),
    eps: Optional[float] = typer.Option(None, help=_d("eps", "AdamW eps.")),
    weight_decay: Optional[float] = typer.Option(None, help=_d("weight_decay")),
    warmup: Optional[float] = typer.Option(None, help=_d("warmup", "Warmup: fraction of all steps (<1) or a number of steps.")),
    schedule: Optional[str] = typer.Option(None, help=_d("schedule", "After warmup: poly, cosine or constant.")),
    power: Optional[float] = typer.Option(None, help=_d("power", "Power of the polynomial decay.")),
    total_updates: Optional[int] = typer.Option(None, help="Optimizer steps the schedule spans, apart from the epochs "
                                                "(the lr is 0 after them; default: epochs x steps per epoch)."),
    clip: Optional[float] = typer.Option(None, help=_d("clip", "Max gradient norm (0: no clipping).")),
    accum: Optional[int] = typer.Option(None, help=_d("accum", "Batches per optimizer step (gradient accumulation).")),
    patience: Optional[int] = typer.Option(None, help=_d("patience", "Early stopping: epochs without improvement (0: off).")),
    best_metric: Optional[str] = typer.Option(None, help="Metric that picks the best checkpoint, or loss (the valid "
                                              "loss; default: ua, f1_mean or mae)."),
    seed: Optional[int] = typer.Option(None, help=_d("seed")),
    modality_dropout: Optional[float] = typer.Option(None, help=_d("modality_dropout", "Per sample, drop each "
                                                     "modality with this probability (never all), so the run can "
                                                     "predict when one is missing.")),
    valid_fraction: Optional[float] = typer.Option(None, help=_d("valid_fraction", "Share held out for validation "
                                                   "in every fold, and in a split without valid.")),
    valid_rule: Optional[str] = typer.Option(None, help=_d("valid_rule", "speakers (a share of the training "
                                             "speakers, when every one is named) or utterances.")),
    downsample: List[str] = typer.Option([], help="MODALITY=K: mean over K frames (default: audio to ~12.5 frames/s)."),
    max_frames: List[str] = typer.Option([], help="MODALITY=N: keep the first N stored frames, e.g. a=935,v=300 "
                                         "(before --downsample)."),
    threads: Optional[int] = typer.Option(None, help=_d("threads", "CPU threads (1 is fastest for one small head; a "
                                          "spare core builds batches). With several runs (--folds, --seeds, sweeps) "
                                          "N trains them as N stacks at once, one core each: 2 on 2 cores.")),
    in_memory: Optional[str] = typer.Option(None, help=_d("in_memory", "auto (load when it fits in half the free "
                                            "RAM), yes or no.")),
    stop_after: Optional[int] = typer.Option(None, help="Stop each run after this many epochs; re-run without it to resume."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: on)."),
) -> None:
    """Train only the fusion head on cached embeddings; writes config, metrics log, checkpoints and plots to --out."""
    given: dict[str, Any] = {k: v for k, v in locals().items() if v is not None and v != []}
    from heads import head_config

    from ..training.config import build_train_config, seed_list
    from ..training.experiment import format_result, run_experiment

    project = load_project()
    config_file = Path(given.pop("config")).expanduser().resolve() if "config" in given else project.path
    source = read_config_file(config_file) if config_file != project.path else project
    file_values = section_values(source.sections.get("train"))
    cli_values = {k: PARSE[k](v) if k in PARSE else v for k, v in given.items()}
    options = merge_options(file_values, cli_values)
    head_config(options.get("head", _DEFAULTS["head"]), options.get("head_options"))  # refused before stores load
    cfg, exp = build_train_config(options, project)
    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    if file_values:
        log(f"options from {config_file} [train]: {', '.join(sorted(file_values))}"
            + (f"; from the command line: {', '.join(sorted(cli_values))}" if cli_values else ""))
    runs = seed_list(exp.seeds, cfg.seed)
    res = run_experiment(cfg, exp.out, exp.folds, runs, exp.progress, log)
    if "stopped_after" in res:
        return
    if exp.folds or runs is not None:
        what = f"cross-validation over {exp.folds} ({len(res['folds'])} folds)" if exp.folds else "one split"
        seeds_text = f", seeds {','.join(map(str, runs))}" if runs is not None else ""
        typer.echo(f"{what}{seeds_text}: test metrics")
        typer.echo(format_result(res))
        from ..training.runs import RunDir
        parent = RunDir(exp.out)
        typer.echo(f"written: {parent.file(parent.result_name(res['kind']))}")
        return
    split = res["eval_split"]
    scalars = {k: v for k, v in res[split].items() if isinstance(v, (int, float))}
    typer.echo(f"best epoch {res['best_epoch']} (valid {res['best_metric']} {res['best_valid']:.4f}); "
               f"{split}: " + ", ".join(f"{k} {v:.4f}" for k, v in scalars.items()))
    typer.echo(f"run folder: {exp.out}")
