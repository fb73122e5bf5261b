"""The head base class: a config dataclass with validated options, the inputs a head sees, and shared helpers.

Batch contract
--------------
A head maps ``{modality: (x, mask)}`` to logits ``(B, C)``: ``x`` is float32
``(B, T, L, D)`` (``L`` stored layers of width ``D``), ``mask`` is bool ``(B, T)``
with True on real frames; padding sits after the real frames and its ``x`` is
zero. ``T >= 1`` always.

Absent modalities
-----------------
A modality is *absent* for sample ``i`` when ``mask[i]`` has no True frame
(a camera that saw no face, a missing transcript, ``--modality-dropout``,
``imo evaluate --drop``); its ``x[i]`` is then zeros and must not be read.
:func:`drop_modality` builds that form for some rows of a batch, :func:`absent_input` for a modality
the batch lacks altogether (``Head.complete_batch`` adds every missing one). Every head returns finite logits, and
finite gradients, for any pattern of absent modalities, including samples
where all of them are absent. A fully masked attention row is NaN, so a head
never lets a query attend over an empty key set. The heads here use one of:

- a start token that is never masked (``cross_attention``; audio and video in
  ``sse_ft``): an absent modality is its learned start token alone;
- a learned placeholder frame put into the empty row (:func:`fill_absent`:
  ``mult``; the untouched text of ``sse_ft``);
- exclusion from the fusion: the modality's pooled vector or output is left
  out of the sum / product (``late`` and ``gated`` renormalise their weights
  over the present modalities; ``tfn`` and ``lmf`` set ``h_m = 0`` so that
  ``[1; h_m]`` keeps only the other modalities' terms);
- a masked mean clamped at one frame (:func:`masked_mean`), which gives a zero
  vector that the head's LayerNorm maps to a learned constant (``concat``,
  ``probe``).

Stacked runs
------------
A head with ``stackable = True`` implements :meth:`Head.stacked_forward`: the
same computation for ``K`` runs at once, every parameter stacked ``(K, *shape)``
and every input ``(K, B, T, L, D)`` (:class:`Stack` says each run's real rows and
frames, its options in ``per_run_options`` and its dropout seed).
``imo_pipeline.training.stacked`` then trains folds, seeds or sweep trials of
one architecture side by side. Write its ``forward`` as ``stacked_forward`` with
``K = 1`` (as ``cross_attention`` does) so both paths are one code; use
:func:`stacked_linear`, :func:`stacked_layer_norm` and :meth:`Stack.dropout`,
whose masks are drawn per run over the run's own extent, so that a run gets the
same result stacked as alone.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from imo_pipeline.errors import ConfigError
from imo_pipeline.training.speedups import SPEEDUPS


@dataclass(frozen=True)
class InputSpec:
    """What one modality feeds the head: ``n_layers`` stored layers of width ``dim`` per frame."""

    n_layers: int
    dim: int


def option(default: Any, *, min: float | None = None, choices: tuple | None = None) -> Any:
    """A config field with validation metadata: ``min`` for numbers, ``choices`` for strings."""
    meta = {}
    if min is not None:
        meta["min"] = min
    if choices is not None:
        meta["choices"] = tuple(choices)
    return dataclasses.field(default=default, metadata=meta)


def _allowed(f: dataclasses.Field, kind: type) -> str:
    """Human text of the values field ``f`` accepts."""
    if "choices" in f.metadata:
        return "one of " + ", ".join(map(str, f.metadata["choices"]))
    if kind is bool:
        return "true or false"
    if kind is int:
        return f"an integer >= {f.metadata.get('min', 1)}"
    if kind is float:
        if f.name.endswith("dropout"):
            return "a number in [0, 1)"
        lo = f.metadata.get("min")
        return "a finite number" + (f" >= {lo}" if lo is not None else "")
    return "a string"


@dataclass
class HeadConfig:
    """Options every head takes; heads subclass it with their own fields.

    Fields are checked by type: integers are sizes or counts (>= 1 unless the
    field says ``option(..., min=0)``), floats must be finite and a field named
    ``*dropout`` lies in [0, 1), strings may list their ``choices``. A config
    subclass adds structural rules by overriding :meth:`check`.
    """

    dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "head") -> "HeadConfig":
        """Build from a dict (``--head-opt`` values or a run's ``describe()``) and :meth:`check` it.

        Unknown keys, wrong types and values out of range raise a one-line ConfigError naming the option.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if d.get("type", name) != name:
            raise ConfigError(f"head options of type {d['type']!r} given to head {name!r}")
        unknown = sorted(set(d) - set(fields) - {"type"})
        if unknown:
            raise ConfigError(f"head {name!r} has no option(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
        out = {k: cls._coerce(name, fields[k], v) for k, v in d.items() if k != "type"}
        cfg = cls(**out)
        cfg.check(name)
        return cfg

    @classmethod
    def _coerce(cls, name: str, f: dataclasses.Field, v: Any) -> Any:
        kind = type(f.default)
        bad = ConfigError(f"head {name!r} option {f.name}={v!r}: expected {_allowed(f, kind)} "
                          f"(e.g. --head-opt {f.name}={str(f.default).lower() if kind is bool else f.default})")
        if kind is bool:
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            if not isinstance(v, bool):
                raise bad
            return v
        if kind in (int, float):
            if isinstance(v, str):
                try:
                    v = float(v) if kind is float else int(v)
                except ValueError:
                    raise bad from None
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise bad
            if kind is int:
                if not math.isfinite(v) or v != int(v):
                    raise bad
                return int(v)
            return float(v)
        if not isinstance(v, kind):
            raise bad
        return v

    def check(self, name: str = "head") -> None:
        """Refuse values out of range (ConfigError naming the option and the allowed values).

        Subclasses add structural rules (e.g. ``n_heads`` divides ``d_model``) and call ``super().check(name)``.
        """
        for f in dataclasses.fields(self):
            v, kind = getattr(self, f.name), type(f.default)
            shown = f"{v:g}" if isinstance(v, float) else repr(v)
            bad = ConfigError(f"head {name!r} option {f.name}={shown}: expected {_allowed(f, kind)} "
                              f"(e.g. --head-opt {f.name}={f.default})")
            if kind is int and (isinstance(v, bool) or not isinstance(v, int) or v < f.metadata.get("min", 1)):
                raise bad
            if kind is float:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise bad
                if f.name.endswith("dropout") and not 0 <= v < 1:
                    raise bad
                if "min" in f.metadata and v < f.metadata["min"]:
                    raise bad
            if "choices" in f.metadata and v not in f.metadata["choices"]:
                raise bad

    def to_dict(self, name: str) -> dict[str, Any]:
        return {"type": name, **dataclasses.asdict(self)}


def check_divides(name: str, heads_field: str, n_heads: int, width_name: str, width: int) -> None:
    """Refuse ``n_heads`` that does not divide ``width`` (attention splits the width across heads)."""
    if width % n_heads:
        divisors = [k for k in range(1, min(width, 64) + 1) if width % k == 0]
        raise ConfigError(f"head {name!r} option {heads_field}={n_heads} does not divide {width_name}={width}; "
                          f"use a divisor of {width} ({', '.join(map(str, divisors))}{', ...' if width > 64 else ''})")


class Head(nn.Module):
    """Maps a batch ``{modality: (x (B, T, L, D) float32, mask (B, T) bool, True = frame)}`` to logits ``(B, C)``.

    See the module docstring for the batch contract and how absent modalities arrive.
    ``layers`` says which stored layers the head wants: ``"last"`` (one) or ``"all"``.
    ``min_modalities``/``max_modalities`` bound the modality subsets the head accepts.
    """

    Config: ClassVar[type[HeadConfig]] = HeadConfig
    layers: ClassVar[str] = "last"
    min_modalities: ClassVar[int] = 1
    max_modalities: ClassVar[int | None] = None
    registered_name: ClassVar[str]

    def __init__(self, config: HeadConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__()
        name = self.registered_name
        if not inputs:
            raise ConfigError("a head needs at least one modality")
        if self.max_modalities is not None and len(inputs) > self.max_modalities:
            raise ConfigError(f"head {name!r} takes {self.max_modalities} modality, got "
                              f"{', '.join(inputs)}; pass one with --modalities or use --head cross_attention")
        if len(inputs) < self.min_modalities:
            raise ConfigError(f"head {name!r} fuses at least {self.min_modalities} modalities, got "
                              f"{', '.join(inputs)}; pass more with --modalities, or use --head probe for one")
        if n_outputs < 1:
            raise ConfigError(f"head {name!r} needs at least one output, got {n_outputs}")
        config.check(name)
        self.check_inputs(config, inputs)
        self.config = config
        self.inputs = dict(inputs)
        self.modalities = list(inputs)
        self.n_outputs = n_outputs

    @classmethod
    def check_inputs(cls, config: HeadConfig, inputs: dict[str, InputSpec]) -> None:
        """Structural rules that depend on the inputs (e.g. widths divisible by ``n_heads``); raise ConfigError."""

    def complete_batch(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]]
                       ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """``batch`` with every modality of this head that it lacks added as absent for all samples."""
        missing = [m for m in self.modalities if m not in batch]
        if not missing:
            return batch
        x0, _ = next(iter(batch.values()))
        return {**batch, **{m: absent_input(x0.shape[0], self.inputs[m], x0.device) for m in missing}}

    # --- stacked runs -------------------------------------------------------------------------------------
    #: True when the head implements ``stacked_forward`` (the trainer then trains runs of it side by side)
    stackable: ClassVar[bool] = False
    #: options that may differ between runs trained stacked (read per run from ``Stack.configs``)
    per_run_options: ClassVar[tuple[str, ...]] = ()

    def stack_key(self) -> str:
        """Runs whose heads give equal keys can train stacked: same head, inputs, outputs and options, except
        ``per_run_options``."""
        config = {k: v for k, v in self.config.to_dict(self.registered_name).items() if k not in self.per_run_options}
        return json.dumps({"name": self.registered_name, "config": config, "n_outputs": self.n_outputs,
                           "inputs": {m: dataclasses.asdict(s) for m, s in self.inputs.items()}}, sort_keys=True)

    def stacked_forward(self, params: dict[str, torch.Tensor], batch: dict[str, tuple[torch.Tensor, torch.Tensor]],
                        stack: "Stack") -> torch.Tensor:
        """Logits ``(K, B, C)`` of ``K`` runs of this architecture at once. ``params`` maps every parameter name
        (as in ``named_parameters()``) to the runs' values stacked ``(K, *shape)``; ``batch`` is
        ``{m: (x (K, B, T, L, D), mask (K, B, T))}``; ``stack`` says each run's options, real rows and frames
        and dropout seeds. ``self`` supplies the structure only, not the weights. Heads with
        ``stackable = True`` implement it."""
        raise NotImplementedError(f"head {self.registered_name!r} cannot be trained stacked")

    def structure(self) -> dict[str, Any] | None:
        """What was built, for people (``describe()["structure"]``); not needed to rebuild."""
        return None

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this head (written to the run folder)."""
        d = {"name": self.registered_name, "config": self.config.to_dict(self.registered_name),
             "inputs": {m: dataclasses.asdict(s) for m, s in self.inputs.items()}, "n_outputs": self.n_outputs}
        s = self.structure()
        if s is not None:
            d["structure"] = s
        return d


# --- shared helpers -----------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over frames of ``x (B, T, ...)`` counting only ``mask (B, T)`` frames -> ``(B, ...)``; zeros when absent."""
    w = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))  # (B, T, 1...)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def present(mask: torch.Tensor) -> torch.Tensor:
    """Which samples have the modality: ``mask (B, T)`` -> ``(B,)`` bool."""
    return mask.any(1)


def fill_absent(h: torch.Tensor, mask: torch.Tensor, placeholder: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Put ``placeholder (d,)`` at frame 0 of every sample without frames: ``h (B, T, d)``, ``mask (B, T)`` ->
    the same shapes, with no all-False mask row left (so attention over the frames is never empty)."""
    empty = ~present(mask)                                          # (B,)
    first = torch.zeros_like(mask)
    first[:, 0] = True
    put = first & empty[:, None]                                    # (B, T)
    h = torch.where(put[..., None], placeholder.to(h.dtype), h)    # (B, T, d)
    return h, mask | put


def last_frame(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The last True frame of each sample: ``h (B, T, d)`` -> ``(B, d)`` (frame 0 where none is True)."""
    T = mask.shape[1]
    idx = (torch.arange(1, T + 1, device=mask.device) * mask).argmax(1)  # (B,) last True position
    return h[torch.arange(h.shape[0], device=h.device), idx]


def drop_modality(batch: dict[str, tuple[torch.Tensor, torch.Tensor]], modality: str,
                  rows: torch.Tensor | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A copy of ``batch`` where ``modality`` is absent for ``rows`` (bool ``(B,)`` or indices; all when None):
    their frames are zeroed and masked out; ``T`` is kept (at least 1)."""
    x, mask = batch[modality]
    drop = torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)
    if rows is not None:
        drop = torch.zeros_like(drop)
        drop[rows] = True
    if x.shape[1] == 0:
        x, mask = x.new_zeros(x.shape[0], 1, *x.shape[2:]), mask.new_zeros(mask.shape[0], 1)
    keep = ~drop                                                    # (B,)
    out = dict(batch)
    out[modality] = (x * keep.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1))), mask & keep[:, None])
    return out


def absent_input(batch_size: int, spec: InputSpec, device: torch.device | str = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A modality absent for every sample: ``x`` zeros ``(B, 1, L, D)`` and ``mask`` all False ``(B, 1)``."""
    return (torch.zeros(batch_size, 1, spec.n_layers, spec.dim, device=device),
            torch.zeros(batch_size, 1, dtype=torch.bool, device=device))


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sine/cosine position codes ``(length, dim)``; any length works."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


@functools.lru_cache(maxsize=512)
def cached_positions(length: int, dim: int, device: str = "cpu") -> torch.Tensor:
    """``sinusoidal_positions`` computed once per (length, dim, device); do not modify the result in place."""
    return sinusoidal_positions(length, dim, torch.device(device))


# --- stacked runs: K runs of one architecture, every parameter and input with a leading run dimension ------------


def dropout_seed(config: HeadConfig, training: bool, generator: torch.Generator | None = None) -> int | None:
    """The seed of one forward pass's dropout masks, drawn from torch's global generator (or ``generator``, a
    stacked run's own), so a run's seed, its resume and its stacking keep it; None when no dropout applies
    (evaluation, or every rate 0)."""
    if not training or not any(getattr(config, f.name) for f in dataclasses.fields(config)
                               if f.name.endswith("dropout")):
        return None
    return int(torch.randint(0, 2**62, (), generator=generator).item())


@dataclass
class Stack:
    """What a ``stacked_forward`` needs to know about its ``K`` runs.

    Run ``k``'s real samples are rows ``:rows[k]`` of the batch and its real frames of modality ``m`` the first
    ``frames[m][k]`` (the rest is padding shared by all runs, so runs of different batch sizes and lengths fit
    one tensor). ``seeds[k]`` seeds run ``k``'s dropout masks for this pass (None: no dropout for that run;
    ``seeds`` None: evaluation). Masks are drawn over each run's real extent only, from its own generator, so
    a run draws the same masks stacked as alone.
    """

    configs: list[HeadConfig]
    rows: list[int]
    frames: dict[str, list[int]]
    seeds: list[int | None] | None = None

    def __post_init__(self):
        self._bits = [None if s is None else np.random.SFC64(s) for s in (self.seeds or [])]

    @classmethod
    def single(cls, config: HeadConfig, batch: dict[str, tuple[torch.Tensor, torch.Tensor]],
               seed: int | None) -> "Stack":
        """One run (``K = 1``) over an unstacked ``batch``."""
        rows = next(iter(batch.values()))[1].shape[0]
        return cls([config], [rows], {m: [mask.shape[1]] for m, (_, mask) in batch.items()},
                   None if seed is None else [seed])

    @property
    def size(self) -> int:
        return len(self.configs)

    def dropout(self, x: torch.Tensor, option: str, frames: list[int] | None = None) -> torch.Tensor:
        """Dropout on ``x (K, B, [T,] ...)`` at each run's rate (its config field ``option``); ``frames``: each
        run's real length of the T dimension (None when ``x`` has none)."""
        ps = [getattr(c, option) for c in self.configs]
        if self.seeds is None or not any(p for p, s in zip(ps, self.seeds) if s is not None):
            return x
        if not SPEEDUPS.fast_dropout:
            return torch.stack([nn.functional.dropout(x[k], p, s is not None) for k, (p, s) in
                                enumerate(zip(ps, self.seeds))])
        lead = 2 if frames is None else 3
        whole = self.size == 1 and self.rows[0] == x.shape[1] and (frames is None or frames[0] == x.shape[2])
        mask = None if whole else x.new_zeros(x.shape)
        for k, p in enumerate(ps):
            shape = (self.rows[k], *(() if frames is None else (frames[k],)), *x.shape[lead:])
            if self._bits[k] is None or p == 0:
                if not whole:
                    mask[(k, *(slice(e) for e in shape[:lead - 1]))] = 1.0
                continue
            n = math.prod(shape)
            cut = round(p * 65536)                               # drop when 16 random bits fall below p * 2^16
            bits = self._bits[k].random_raw(-(-n // 4)).view(np.int16)[:n]
            m = (torch.from_numpy(bits).view(shape) >= cut - 32768).to(x.dtype).mul_(65536 / (65536 - cut))
            if whole:
                mask = m.unsqueeze(0)
            else:
                mask[(k, *(slice(e) for e in shape[:lead - 1]))] = m
        return x if mask is None else x * mask


def stacked_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``nn.Linear`` per run: ``x (K, ..., in)``, ``weight (K, out, in)``, ``bias (K, out)`` -> ``(K, ..., out)``."""
    if weight.shape[0] == 1:
        return nn.functional.linear(x, weight[0], None if bias is None else bias[0])
    K, shape = weight.shape[0], x.shape
    flat = x.reshape(K, -1, shape[-1])                               # (K, N, in)
    y = (torch.bmm(flat, weight.transpose(1, 2)) if bias is None
         else torch.baddbmm(bias.unsqueeze(1), flat, weight.transpose(1, 2)))  # (K, N, out)
    return y.reshape(*shape[:-1], weight.shape[1])


def stacked_layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``nn.LayerNorm`` over the last dimension per run: ``x (K, ..., d)``, ``weight``/``bias`` ``(K, d)``."""
    d = x.shape[-1]
    if weight.shape[0] == 1:
        return nn.functional.layer_norm(x, (d,), weight[0], bias[0], eps)
    shape = (weight.shape[0], *([1] * (x.dim() - 2)), d)
    return torch.addcmul(bias.reshape(shape), nn.functional.layer_norm(x, (d,), None, None, eps), weight.reshape(shape))
