"""`imo sweep`: search hyperparameters of a head with Optuna (TPE, median pruning per fold), trials in this
process or on dask, selected on validation only; then retrain the best with several seeds and test once.

Its options are those of `imo train` (the same parameters, declared once in training/config.py and named
in commands/train.py; here they are the fixed values every trial shares, with imo.toml's ``[train]`` or
``--config FILE`` filling what the command line leaves out) less ``--out``, ``--seeds`` and
``--stop-after``, plus the sweep's own (the parameters of ``_own``).
"""

from __future__ import annotations

import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from . import train as train_command

SKIPPED = ("out", "seeds", "stop_after")          # imo train options a sweep sets itself (or has no use for)


def _own(
    out: Optional[Path] = typer.Option(None, help="Sweep folder, e.g. sweeps/NAME (re-running the same command "
                                       "resumes the study)."),
    space: Optional[Path] = typer.Option(None, help="TOML file of ranges under \\[train] and \\[head] (default: the "
                                         "head's default space; see --show-space)."),
    trials: int = typer.Option(20, help="Trials in the study (complete, pruned or failed; a larger number extends "
                               "a finished sweep)."),
    final_seeds: int = typer.Option(3, help="Seeds the best configuration is retrained with (from --seed); the "
                                    "test split is read by these runs only."),
    stack: int = typer.Option(4, help="Trials asked together with one architecture, trained side by side (heads "
                              "that train stacked; others ask one trial per free worker)."),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Median pruning after each fold (with --folds)."),
    workers: Optional[int] = typer.Option(None, help="Train trials on a local dask cluster of N worker processes."),
    scheduler: Optional[str] = typer.Option(None, help="Train trials on an existing dask scheduler "
                                            "(tcp://HOST:PORT); workers must see the same paths."),
    retries: int = typer.Option(1, help="Retries of a crashed task before its trials are recorded as failed."),
    show_space: bool = typer.Option(False, "--show-space", help="Print the space (TOML) and exit."),
) -> None:
    """(the sweep's own parameters)"""


def _parameters() -> tuple[list[inspect.Parameter], dict[str, Any], set[str]]:
    own = inspect.signature(_own).parameters
    hints = {**typing.get_type_hints(train_command.train), **typing.get_type_hints(_own)}
    train_params = [p for name, p in inspect.signature(train_command.train).parameters.items()
                    if name not in SKIPPED and name not in own]
    params = [p.replace(annotation=hints[p.name]) for p in [*own.values(), *train_params]]
    return params, {p.name: hints[p.name] for p in params}, set(own)


_PARAMS, _HINTS, OWN = _parameters()


def sweep(**given: Any) -> None:
    """Search a head's hyperparameters (Optuna on dask), then retrain the best with several seeds and test once."""
    from heads import head_config

    from ..errors import ConfigError
    from ..project import load_project, read_config_file
    from ..training.config import TrainConfig, build_train_config, merge_options, section_values
    from ..training.sweep import SweepOptions, run_sweep
    from ..training.sweep_space import load_space, space_toml

    own = {k: given.pop(k) for k in OWN}
    given = {k: v for k, v in given.items() if v is not None and v != []}
    log = lambda msg: typer.echo(msg, err=True)  # noqa: E731
    project = load_project()
    config_file = Path(given.pop("config")).expanduser().resolve() if "config" in given else project.path
    source = read_config_file(config_file) if config_file != project.path else project
    file_values = section_values(source.sections.get("train"))
    ignored = sorted(k for k in file_values if k in SKIPPED)
    file_values = {k: v for k, v in file_values.items() if k not in SKIPPED}
    cli_values = {k: train_command.PARSE[k](v) if k in train_command.PARSE else v for k, v in given.items()}
    options = merge_options(file_values, cli_values)
    head = options.get("head", train_command._DEFAULTS["head"])
    head_config(head, options.get("head_options"))               # refused before anything is read
    if own["show_space"]:
        base = TrainConfig(modalities=options.get("modalities") or ["audio", "text", "video"], stores={},
                           manifest="", **{k: v for k, v in options.items()
                                           if k in ("head", "head_options", "task", "epochs", "batch_size")})
        space = load_space(own["space"], head, base)
        typer.echo(f"# space of head {head} ({space.source})\n" + space_toml(space), nl=False)
        return
    if own["out"] is None:
        raise ConfigError("no sweep folder given: pass --out sweeps/NAME")
    cfg, exp = build_train_config({**options, "out": own["out"]}, project)
    if file_values:
        log(f"fixed options from {config_file} [train]: {', '.join(sorted(file_values))}"
            + (f" ({', '.join(ignored)} ignored: a sweep sets them)" if ignored else ""))
    space = load_space(own["space"], cfg.head, cfg)
    given_keys = [k for k in options if k != "head_options"] + \
        [f"head.{k}" for k in options.get("head_options") or {}]
    overridden = [p.key for p in space.params if p.key in given_keys]
    if overridden:
        log(f"note: {', '.join(overridden)} given as fixed value(s) but searched by the space: the space decides")
    opts = SweepOptions(trials=own["trials"], final_seeds=own["final_seeds"], stack=own["stack"],
                        prune=own["prune"], retries=own["retries"], workers=own["workers"],
                        scheduler=own["scheduler"], progress=exp.progress)
    res = run_sweep(cfg, space, own["out"], exp.folds, opts, log)
    final = res["final"]
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final["params"].items())
    typer.echo(f"best: trial {final['trial']} ({res['objective']} {final['search_value']:.4f}): {params}")
    typer.echo(f"final runs in {Path(res['sweep']) / final['folder']} (seeds {','.join(map(str, final['seeds']))}), "
               f"mean ± std (sample std, n={final['n']}):")
    for k in final["test"]["mean"]:
        v, t = final["valid"], final["test"]
        typer.echo(f"  {k:14s} valid {_pm(v['mean'].get(k), v['std'].get(k))}   test "
                   f"{_pm(t['mean'][k], t['std'].get(k))}")
    typer.echo(f"written: {', '.join(res['written'])}")


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f}" + ("" if std is None else f" ± {std:.4f}")


sweep.__signature__ = inspect.Signature(_PARAMS)       # typer reads the parameters from here
sweep.__annotations__ = {**_HINTS, "return": None}
