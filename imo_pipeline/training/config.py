"""The options of `imo train`, declared once: ``TrainConfig`` (one run) and ``ExperimentOptions`` (the runs).

Everything else is derived from these two dataclasses: the ``[train]`` section of ``imo.toml`` (or of a
``--config FILE.toml``) is ``TrainSection``, made from their fields (each optional: a key left out keeps
its default); the `imo train` command names one parameter per field; ``merge_options`` lays the command
line over the file (tables key by key). This module imports neither torch nor the trainer, so reading
``imo.toml`` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import field_types

SCHEDULES = ("poly", "cosine", "constant")
IN_MEMORY = ("auto", "yes", "no")
VALID_RULES = ("speakers", "utterances")
NOT_IDENTITY = {"stop_after", "in_memory", "progress"}  # options that do not change the result
PLAN_FIELDS = ("fold_key", "test_group")                # set per run by the experiment plan, not by the user
MODALITY_TABLES = ("stores", "downsample", "max_frames")  # tables keyed by modality (a/audio, t/text, v/video)
PATH = {"path": True}                                   # field metadata: a path, relative to the file that sets it


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _whole(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass
class TrainConfig:
    """Everything that determines a training run (written to config.json as ``train``)."""

    modalities: list[str]
    stores: dict[str, str] = field(metadata=PATH)
    manifest: str = field(metadata=PATH)
    data_root: str | None = field(default=None, metadata=PATH)
    head: str = "cross_attention"
    head_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    class_weights: str = "none"            # none | balanced
    downsample: dict[str, Any] = field(default_factory=dict)  # modality -> factor or "auto"
    max_frames: dict[str, int] = field(default_factory=dict)  # modality -> keep the first N stored frames
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup: float = 0.1                    # < 1: fraction of all steps; >= 1: steps
    schedule: str = "poly"                 # poly | cosine | constant (after warmup)
    power: float = 1.0                     # of the polynomial decay
    total_updates: int | None = None       # optimizer steps the schedule spans (default: epochs x steps per epoch)
    clip: float = 1.0                      # max gradient norm (0: off)
    accum: int = 1                         # batches per optimizer step
    patience: int = 0                      # epochs without improvement before stopping (0: off)
    best_metric: str | None = None         # default: the task's (ua, f1_mean, mae); "loss": the valid loss
    seed: int = 0
    fold_key: str | None = None            # cross-validation: manifest field holding the group
    test_group: str | None = None          # the held-out group of this fold
    valid_fraction: float = 0.1            # share held out for validation where the manifest gives no valid split
    valid_rule: str = "speakers"           # speakers: a share of the training speakers (else of utterances)
    threads: int = 1                       # torch CPU threads (1: small head ops gain nothing from more, and
                                           # a spare core assembles batches; more threads oversubscribe a shared CPU);
                                           # runs trained stacked: this many stacks at once, one thread each
    in_memory: str = "auto"
    stop_after: int | None = None          # stop after this many epochs in total (resume later)
    modality_dropout: float = 0.0          # per sample, each modality absent with this probability (never all)

    def check(self) -> None:
        """Refuse any option outside its allowed values, with one line naming the option and what is allowed."""
        from .tasks import task_class

        def need(ok: bool, option: str, value: Any, allowed: str) -> None:
            if not ok:
                raise ConfigError(f"--{option} {value!r}: {allowed}")

        for name in ("epochs", "batch_size", "accum", "threads"):
            v = getattr(self, name)
            need(_whole(v) and v >= 1, name.replace("_", "-"), v, "use a whole number >= 1")
        need(_whole(self.patience) and self.patience >= 0, "patience", self.patience,
             "use a whole number of epochs >= 0 (0: no early stopping)")
        need(self.stop_after is None or (_whole(self.stop_after) and self.stop_after >= 1), "stop-after",
             self.stop_after, "use a whole number of epochs >= 1 (leave it out to train to the end)")
        need(_whole(self.seed) and self.seed >= 0, "seed", self.seed, "use a whole number >= 0")
        need(_finite(self.lr) and self.lr > 0, "lr", self.lr, "use a finite number > 0, e.g. 5e-4")
        b = tuple(self.betas) if isinstance(self.betas, (list, tuple)) else ()
        need(len(b) == 2 and all(_finite(x) and 0 <= x < 1 for x in b), "betas",
             ",".join(map(str, b)) if b else self.betas, "use two numbers in [0, 1), e.g. 0.9,0.98")
        need(_finite(self.eps) and self.eps > 0, "eps", self.eps, "use a finite number > 0, e.g. 1e-8")
        need(_finite(self.weight_decay) and self.weight_decay >= 0, "weight-decay", self.weight_decay,
             "use a finite number >= 0 (0: none)")
        need(_finite(self.warmup) and (0 <= self.warmup < 1 or float(self.warmup).is_integer()), "warmup",
             self.warmup, "use a fraction of all steps in [0, 1) or a whole number of steps")
        need(self.schedule in SCHEDULES, "schedule", self.schedule, f"use one of {', '.join(SCHEDULES)}")
        need(_finite(self.power) and self.power > 0, "power", self.power,
             "use a finite number > 0 (--schedule constant for no decay)")
        need(self.total_updates is None or (_whole(self.total_updates) and self.total_updates >= 1),
             "total-updates", self.total_updates,
             "use a whole number of optimizer steps >= 1 (leave it out: epochs x steps per epoch)")
        need(_finite(self.clip) and self.clip >= 0, "clip", self.clip,
             "use a finite max gradient norm >= 0 (0: no clipping)")
        need(self.in_memory in IN_MEMORY, "in-memory", self.in_memory, f"use one of {', '.join(IN_MEMORY)}")
        need(_finite(self.valid_fraction) and 0 < self.valid_fraction < 1, "valid-fraction", self.valid_fraction,
             "use a fraction in (0, 1)")
        need(self.valid_rule in VALID_RULES, "valid-rule", self.valid_rule, f"use one of {', '.join(VALID_RULES)}")
        need(_finite(self.modality_dropout) and 0 <= self.modality_dropout < 1 and (
            self.modality_dropout == 0 or len(self.modalities) > 1), "modality-dropout", self.modality_dropout,
             "use a probability in [0, 1) (0: off), with at least two --modalities")
        for m, k in (self.downsample or {}).items():
            need(m in self.modalities, "downsample", f"{m}={k}",
                 f"{m} is not among --modalities {','.join(self.modalities)}")
            need(k == "auto" or (_whole(k) and k >= 1), "downsample", f"{m}={k}",
                 "use a whole number of frames >= 1, or auto")
        for m, k in (self.max_frames or {}).items():
            need(m in self.modalities, "max-frames", f"{m}={k}",
                 f"{m} is not among --modalities {','.join(self.modalities)}")
            need(_whole(k) and k >= 1, "max-frames", f"{m}={k}", "use a whole number of stored frames >= 1")
        task_class(self.task).check_options(self.class_weights, self.best_metric)

    def identity(self) -> dict[str, Any]:
        """The options that determine the result, as config.json records them."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        return {k: v for k, v in d.items() if k not in NOT_IDENTITY}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every field's default as config.json records it (fields without one left out)."""
        out = {}
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                out[f.name] = json.loads(json.dumps(f.default))
            elif f.default_factory is not dataclasses.MISSING:
                out[f.name] = json.loads(json.dumps(f.default_factory()))
        return out


@dataclass
class ExperimentOptions:
    """The `imo train` options that shape the set of runs rather than one run."""

    out: Path | None = field(default=None, metadata=PATH)   # the run folder (or the folder of the runs)
    folds: str | None = None               # leave-one-group-out over this manifest field
    seeds: int | list[int] | None = None   # N: N seeds from --seed; a list: these seeds
    progress: bool = True                  # progress bars


def option_fields() -> dict[str, tuple[Any, Any, bool]]:
    """Every `imo train` option: ``{name: (type, default, is_path)}`` from TrainConfig (less the fields the plan
    sets) and ExperimentOptions; the one list the file section and the command are checked against."""
    out = {}
    for cls in (TrainConfig, ExperimentOptions):
        types = field_types(cls)
        for f in dataclasses.fields(cls):
            if f.name in PLAN_FIELDS:
                continue
            default = (f.default if f.default is not dataclasses.MISSING
                       else f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
            out[f.name] = (types[f.name], default, bool(f.metadata.get("path")))
    return out


def _section_type(tp: Any, is_path: bool) -> Any:
    if is_path and tp in (str, str | None):
        return Path | None                 # resolved against the folder of the file that sets it
    return tp | None


#: ``[train]`` of imo.toml / ``--config FILE``: every `imo train` option, each optional (None: not set).
TrainSection = dataclasses.make_dataclass(
    "TrainSection", [(name, _section_type(tp, is_path), field(default=None, metadata=PATH if is_path else {}))
                     for name, (tp, _, is_path) in option_fields().items()])
TrainSection.__doc__ = "``[train]``: any `imo train` option (TrainConfig and ExperimentOptions fields)."


def section_values(section: Any) -> dict[str, Any]:
    """The options a ``TrainSection`` sets (keys left out of the file are absent)."""
    if section is None:
        return {}
    return {f.name: getattr(section, f.name) for f in dataclasses.fields(section) if getattr(section, f.name) is not None}


def _modality_keys(table: dict[str, Any], option: str) -> dict[str, Any]:
    from ..project import parse_modality

    out: dict[str, Any] = {}
    for k, v in table.items():
        m = parse_modality(k)
        if m in out:
            raise ConfigError(f"{option} names {m} twice ({k!r} and another key); give it once")
        out[m] = v
    return out


def merge_options(file_values: dict[str, Any], cli_values: dict[str, Any]) -> dict[str, Any]:
    """``cli_values`` laid over ``file_values``: a table option (stores, head_options, downsample, max_frames)
    merges key by key, any other option is replaced. Modality keys and names (a, t, v) are normalised."""
    out: dict[str, Any] = {}
    for source in (file_values, cli_values):
        for k, v in source.items():
            if k in MODALITY_TABLES:
                v = _modality_keys(v, k)
            if k == "modalities":
                from ..project import parse_modality
                v = [parse_modality(m) for m in v]
            out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def seed_list(seeds: int | list[int] | None, seed: int) -> list[int] | None:
    """``--seeds N`` -> N seeds from ``seed``; a list -> that list; None -> None (one run, no seed folders)."""
    if seeds is None:
        return None
    if isinstance(seeds, list):
        bad = [s for s in seeds if not _whole(s) or s < 0]
        if not seeds or bad or len(set(seeds)) != len(seeds):
            raise ConfigError(f"--seeds {','.join(map(str, seeds))}: give distinct whole numbers >= 0, e.g. 0,1,2 "
                              f"(or a count: --seeds 5)")
        return list(seeds)
    if not _whole(seeds) or seeds < 1:
        raise ConfigError(f"--seeds {seeds!r}: give a count >= 1 (e.g. --seeds 5: seeds --seed .. --seed+4) or a "
                          f"comma list (--seeds 0,1,2)")
    return list(range(seed, seed + seeds))


def build_train_config(options: dict[str, Any], project: Any) -> tuple[TrainConfig, ExperimentOptions]:
    """The run config and the experiment options from merged ``options`` (see ``merge_options``), with the
    project's defaults (stores under its cache, its manifest and data root) for what the options leave out."""
    from ..paths import is_url

    if not options.get("modalities"):
        raise ConfigError("no modalities given: pass --modalities a,t,v (or modalities = [...] under [train])")
    mods = options["modalities"]
    if len(set(mods)) != len(mods):
        raise ConfigError(f"--modalities {','.join(mods)}: name each of a, t, v at most once")
    given = options.get("stores") or {}
    stores = {m: (given[m] if is_url(given[m]) else str(Path(given[m]).expanduser().resolve())) if m in given
              else str(project.store_path(m)) for m in mods}
    manifest = options.get("manifest") or project.require_manifest()
    root = options.get("data_root") or project.data_root
    run_names = {f.name for f in dataclasses.fields(TrainConfig)} - {"modalities", "stores", "manifest", "data_root"}
    cfg = TrainConfig(modalities=mods, stores=stores, manifest=str(Path(manifest).resolve()),
                      data_root=str(root) if root else None,
                      **{k: v for k, v in options.items() if k in run_names})
    exp = ExperimentOptions(**{f.name: options[f.name] for f in dataclasses.fields(ExperimentOptions)
                               if f.name in options})
    if exp.out is None:
        raise ConfigError("no run folder given: pass --out runs/NAME (or out = \"...\" under [train])")
    cfg.check()
    return cfg, exp
