"""The search space of `imo sweep`: a TOML file (or a head's default space) of ranges over `imo train` options.

```toml
# SPACE.toml: one table per option searched; every other option keeps its fixed value
[train]                                         # TrainConfig options (training/config.py)
lr = { low = 1e-4, high = 3e-3, log = true }    # float, sampled on a log scale
warmup = { low = 0.0, high = 0.2 }              # float, uniform
epochs = { low = 10, high = 30, step = 5 }      # int (the option is an integer): 10, 15, ..., 30
batch_size = { choices = [16, 32, 64] }         # categorical
schedule = { choices = ["poly", "cosine"] }

[head]                                          # the head's options (--head-opt), e.g. cross_attention's
d_model = { choices = [32, 64, 128] }
self_layers = { low = 0, high = 2 }
dropout = { low = 0.0, high = 0.3 }
```

A range's kind follows the option's declared type (an integer option samples integers, a float option
floats); ``type = "int" | "float" | "categorical"`` may be written and must agree. ``log = true`` samples
on a log scale (``low > 0``, no ``step``); ``step`` spaces the values. ``choices`` lists the values
(of the option's type) for a categorical. Each bound and choice is checked like the option itself
(``TrainConfig.check``, the head config's field rules), so a space that cannot give a valid value is
refused before anything trains; a combination that a head refuses (``n_heads`` not dividing
``d_model``) fails only the trials that draw it.

Options that define the data or the protocol (modalities, stores, manifest, head, task, seed, folds,
validation rule, the selection metric, ...) cannot be searched: they are fixed values (``[train]`` of
imo.toml, ``--config``, the command line). ``DEFAULT_SPACES`` holds each head's default space (the train
options every head shares, ``COMMON_TRAIN``, plus its own), used when ``--space`` is not given.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..options import check_value, field_types
from .config import TrainConfig

#: TrainConfig options that define the data, the protocol or the objective, or only how a run is carried out
FIXED_ONLY = ("modalities", "stores", "manifest", "data_root", "head", "head_options", "task", "downsample",
              "max_frames", "seed", "fold_key", "test_group", "valid_fraction", "valid_rule", "best_metric",
              "threads", "in_memory", "stop_after", "betas")
SECTIONS = ("train", "head")
HEAD_PREFIX = "head."          # Optuna parameter names of head options: head.d_model
KINDS = ("int", "float", "categorical")
RANGE_KEYS = ("type", "low", "high", "log", "step", "choices")


def _r(low: float, high: float, log: bool = False, step: float | None = None) -> dict[str, Any]:
    return {"low": low, "high": high, "log": log, **({"step": step} if step is not None else {})}


def _c(*choices: Any) -> dict[str, Any]:
    return {"choices": list(choices)}


#: the train options every head's default space searches
COMMON_TRAIN: dict[str, dict[str, Any]] = {
    "lr": _r(1e-4, 3e-3, log=True),
    "weight_decay": _r(1e-4, 0.1, log=True),
    "warmup": _r(0.0, 0.2),
    "batch_size": _c(16, 32, 64),
}
#: each head's default space: ``{"train": ..., "head": ...}`` (the train part added to COMMON_TRAIN)
DEFAULT_SPACES: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "cross_attention": {"head": {"d_model": _c(32, 64, 128), "self_layers": _r(0, 2), "cross_layers": _r(1, 2),
                                 "dropout": _r(0.0, 0.3), "input_dropout": _r(0.0, 0.3),
                                 "head_dropout": _r(0.0, 0.3)}},
    "sse_ft": {"train": {"lr": _r(1e-5, 5e-4, log=True)},
               "head": {"self_layers": _r(1, 3), "cross_layers": _r(1, 2), "ffn_dim": _c(512, 1024, 2048),
                        "dropout": _r(0.0, 0.2), "attn_dropout": _r(0.0, 0.2), "pooler_dropout": _r(0.0, 0.2)}},
    "mult": {"head": {"d_model": _c(30, 40, 60), "layers": _r(2, 5), "dropout": _r(0.0, 0.3),
                      "attn_dropout": _r(0.0, 0.3), "embed_dropout": _r(0.0, 0.3)}},
    "tfn": {"head": {"hidden": _c(16, 32), "post_hidden": _c(32, 64, 128), "subnet_dropout": _r(0.0, 0.5),
                     "dropout": _r(0.0, 0.5)}},
    "lmf": {"head": {"hidden": _c(16, 32, 64), "rank": _r(2, 8), "subnet_dropout": _r(0.0, 0.5),
                     "dropout": _r(0.0, 0.3)}},
    "late": {"head": {"hidden": _c(0, 32, 64, 128), "dropout": _r(0.0, 0.5)}},
    "gated": {"head": {"d_model": _c(32, 64, 128), "hidden": _c(32, 64, 128), "dropout": _r(0.0, 0.5)}},
    "concat": {"head": {"hidden": _c(64, 128, 256, 512), "dropout": _r(0.0, 0.5)}},
    "probe": {"head": {"dropout": _r(0.0, 0.3)}},
}


@dataclass
class Param:
    """One searched option: ``section`` train or head, its ``name``, and its range (``kind`` int, float or
    categorical)."""

    section: str
    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @property
    def key(self) -> str:
        """Its Optuna parameter name: ``lr``, ``head.d_model``."""
        return (HEAD_PREFIX if self.section == "head" else "") + self.name

    def to_dict(self) -> dict[str, Any]:
        if self.kind == "categorical":
            return {"type": self.kind, "choices": list(self.choices or [])}
        return {"type": self.kind, "low": self.low, "high": self.high, "log": self.log,
                **({"step": self.step} if self.step is not None else {})}

    def text(self) -> str:
        """``[16, 32, 64]``, ``1e-4 .. 3e-3 (log)``, ``0 .. 2``."""
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices or [])) + "}"
        extra = " (log)" if self.log else f" step {self.step:g}" if self.step is not None else ""
        return f"{self.low:g} .. {self.high:g}{extra}"

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna ``trial`` draws for this parameter."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, float(self.low), float(self.high), step=self.step, log=self.log)


@dataclass
class Space:
    """The searched options of one head (``params``), where they came from (``source``: a file or ``default``)."""

    head: str
    params: list[Param] = field(default_factory=list)
    source: str = "default"

    def to_dict(self) -> dict[str, Any]:
        """``{"train": {name: range}, "head": {...}}``: what sweep.json records (a resume must search the same)."""
        return {s: {p.name: p.to_dict() for p in self.params if p.section == s} for s in SECTIONS}

    def suggest(self, trial: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        """(train options, head options) drawn for ``trial``."""
        train, head = {}, {}
        for p in self.params:
            (head if p.section == "head" else train)[p.name] = p.suggest(trial)
        return train, head

    def architecture(self, per_run: tuple[str, ...]) -> list[str]:
        """The parameter keys that change a run's shapes (head options other than the head's ``per_run``
        options, batch size, accumulation): trials equal in them can train stacked."""
        return [p.key for p in self.params if (p.section == "head" and p.name not in per_run)
                or (p.section == "train" and p.name in ("batch_size", "accum"))]

    def table(self) -> str:
        """One line per parameter: section, name, kind, range."""
        width = max((len(p.key) for p in self.params), default=0)
        return "\n".join(f"  {p.key.ljust(width)}  {p.kind:11s}  {p.text()}" for p in self.params)


def searchable_train_options() -> list[str]:
    """The TrainConfig options a space may search (scalar options that do not define data or protocol)."""
    out = []
    for name, tp in field_types(TrainConfig).items():
        if name in FIXED_ONLY:
            continue
        base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        if all(b in (int, float, str, bool) for b in base):
            out.append(name)
    return out


def _train_kind(name: str) -> type:
    tp = field_types(TrainConfig)[name]
    base = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return base[0]


def _head_fields(head: str) -> dict[str, dataclasses.Field]:
    from heads import HEADS

    return {f.name: f for f in dataclasses.fields(HEADS.get(head).Config)}


def _check_train_value(name: str, value: Any, base: TrainConfig, where: str) -> Any:
    v = check_value(value, field_types(TrainConfig)[name], where)
    try:
        dataclasses.replace(base, **{name: v}).check()
    except ConfigError as e:
        raise ConfigError(f"{where}: {v!r} is refused ({e})") from None
    return v


def _check_head_value(head: str, f: dataclasses.Field, value: Any, where: str) -> Any:
    from heads import HEADS
    from heads.base import HeadConfig

    cls = HEADS.get(head).Config
    try:
        v = cls._coerce(head, f, value)
        HeadConfig.check(cls(**{f.name: v}), head)   # the field's own rule (structural rules: per trial)
    except ConfigError as e:
        raise ConfigError(f"{where}: {value!r} is refused ({e})") from None
    return v


def _param(section: str, name: str, spec: Any, kind_type: type, check, where: str) -> Param:
    shape = ("give {low = ..., high = ...} (optional log = true, step = ...) or {choices = [...]}, e.g. "
             + ("lr = { low = 1e-4, high = 3e-3, log = true }" if kind_type is float else
                "batch_size = { choices = [16, 32, 64] }"))
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: {spec!r} is not a range; {shape} (a fixed value goes under [train] of imo.toml, "
                          f"--config or the command line)")
    unknown = sorted(set(spec) - set(RANGE_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(map(repr, unknown))}; valid: {', '.join(RANGE_KEYS)}")
    natural = "int" if kind_type is int else "float" if kind_type is float else "categorical"
    kind = spec.get("type", "categorical" if "choices" in spec else natural)
    if kind not in KINDS:
        raise ConfigError(f"{where}: type {kind!r}: use one of {', '.join(KINDS)}")
    if kind == "categorical":
        choices = spec.get("choices")
        if set(spec) - {"type", "choices"} or not isinstance(choices, list) or not choices:
            raise ConfigError(f"{where}: a categorical takes only choices = [...] (a non-empty list); {shape}")
        values = [check(c) for c in choices]
        if len({repr(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: choices {choices!r} repeat a value; list each once")
        return Param(section, name, kind, choices=values)
    if kind != natural:
        raise ConfigError(f"{where}: type {kind!r} does not fit the option (it is {natural}); "
                          f"{'drop type' if natural != 'categorical' else 'give choices = [...]'}")
    if "choices" in spec or "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: {shape}")
    low, high = check(spec["low"]), check(spec["high"])
    log, step = spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log = {log!r}: use true or false")
    if not low < high:
        raise ConfigError(f"{where}: low = {low!r} must be below high = {high!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low!r}")
    if step is not None:
        if log:
            raise ConfigError(f"{where}: give log = true or a step, not both")
        ok = (isinstance(step, int) if kind == "int" else isinstance(step, (int, float))) and not isinstance(step, bool)
        if not ok or not math.isfinite(step) or step <= 0:
            raise ConfigError(f"{where}: step = {step!r}: use a {'whole ' if kind == 'int' else ''}number > 0")
    return Param(section, name, kind, low, high, log, float(step) if step is not None and kind == "float" else step)


def build_space(head: str, data: dict[str, Any], base: TrainConfig, source: str) -> Space:
    """The checked space of ``head`` from ``data`` (a parsed space file, or a default space) over the fixed
    options ``base``; one-line ConfigError naming ``source``, the section and the key."""
    bad = sorted(k for k in data if k not in SECTIONS)
    if bad:
        raise ConfigError(f"{source}: unknown section {', '.join(f'[{k}]' for k in bad)}; a space has [train] "
                          f"(imo train options) and [head] (the head's options)")
    params: list[Param] = []
    train = data.get("train") or {}
    head_opts = data.get("head") or {}
    for sec, table in (("train", train), ("head", head_opts)):
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{sec}] must be a table of ranges, got {table!r}")
    searchable = searchable_train_options()
    for name, spec in train.items():
        where = f"{source} [train] {name}"
        if name not in searchable:
            why = ("defines the data, the protocol or the objective, so it is a fixed value (under [train] of "
                   "imo.toml, --config or the command line)" if name in FIXED_ONLY or name in field_types(TrainConfig)
                   else "is not an imo train option")
            raise ConfigError(f"{where}: {name!r} {why}; searchable: {', '.join(searchable)}")
        params.append(_param("train", name, spec, _train_kind(name),
                             lambda v, n=name, w=where: _check_train_value(n, v, base, w), where))
    fields = _head_fields(head)
    for name, spec in head_opts.items():
        where = f"{source} [head] {name}"
        if name not in fields:
            raise ConfigError(f"{where}: head {head!r} has no option {name!r}; valid: {', '.join(sorted(fields))}")
        kind = type(fields[name].default)
        params.append(_param("head", name, spec, kind if kind in (int, float) else str,
                             lambda v, f=fields[name], w=where: _check_head_value(head, f, v, w), where))
    if not params:
        raise ConfigError(f"{source}: the space searches no option; give at least one range under [train] or [head]")
    return Space(head, params, source)


def default_space_data(head: str) -> dict[str, dict[str, Any]]:
    """The default space of ``head`` as a space file would hold it (COMMON_TRAIN plus the head's own)."""
    from heads import HEADS

    HEADS.get(head)                                  # an unknown head: the registry lists the valid ones
    own = DEFAULT_SPACES.get(head, {})
    return {"train": {**COMMON_TRAIN, **own.get("train", {})}, "head": dict(own.get("head", {}))}


def load_space(path: str | Path | None, head: str, base: TrainConfig) -> Space:
    """The space of ``--space PATH`` (TOML, see the module doc), or ``head``'s default space without it."""
    if path is None:
        return build_space(head, default_space_data(head), base, f"the default space of head {head!r}")
    from ..project import _read_toml

    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise ConfigError(f"--space {path}: no such file{' (it is a folder)' if p.is_dir() else ''}; pass a TOML "
                          f"file with [train] and [head] ranges (leave --space out for the head's default space)")
    space = build_space(head, _read_toml(p), base, str(p))
    space.source = str(p)
    return space


def space_toml(space: Space) -> str:
    """``space`` written as a space file (e.g. to start from the default: ``imo sweep --show-space``)."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = []
    for sec in SECTIONS:
        ps = [p for p in space.params if p.section == sec]
        if not ps:
            continue
        lines.append(f"[{sec}]")
        for p in ps:
            d = {k: v for k, v in p.to_dict().items() if k != "type" and not (k == "log" and not v)}
            lines.append(f"{p.name} = {{ " + ", ".join(f"{k} = {value(v)}" for k, v in d.items()) + " }")
        lines.append("")
    return "\n".join(lines)
