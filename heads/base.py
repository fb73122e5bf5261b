"""The head base class: a config dataclass, the inputs it sees, and shared helpers."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from imo_pipeline.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    """What one modality feeds the head: ``n_layers`` stored layers of width ``dim`` per frame."""

    n_layers: int
    dim: int


@dataclass
class HeadConfig:
    """Options every head takes; heads subclass it with their own fields."""

    dropout: float = 0.1

    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "head") -> "HeadConfig":
        """Build from a dict; unknown keys raise ConfigError listing the valid ones."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields) - {"type"}
        if unknown:
            raise ConfigError(f"head {name!r} has no option(s) {sorted(unknown)}; valid: {sorted(fields)}")
        out = {}
        for k, v in d.items():
            if k == "type":
                continue
            kind = type(getattr(cls(), k))
            try:
                out[k] = kind(v) if kind in (int, float) else v
            except (TypeError, ValueError):
                raise ConfigError(f"head option {k}={v!r}: expected {kind.__name__}") from None
        return cls(**out)

    def to_dict(self, name: str) -> dict[str, Any]:
        return {"type": name, **dataclasses.asdict(self)}


class Head(nn.Module):
    """Maps a batch ``{modality: (x (B, T, L, D) float32, mask (B, T) bool, True = frame)}`` to logits ``(B, C)``.

    ``layers`` says which stored layers the head wants: ``"last"`` (one) or ``"all"``.
    """

    Config: ClassVar[type[HeadConfig]] = HeadConfig
    layers: ClassVar[str] = "last"
    max_modalities: ClassVar[int | None] = None
    registered_name: ClassVar[str]

    def __init__(self, config: HeadConfig, inputs: dict[str, InputSpec], n_outputs: int):
        super().__init__()
        if not inputs:
            raise ConfigError("a head needs at least one modality")
        if self.max_modalities is not None and len(inputs) > self.max_modalities:
            raise ConfigError(f"head {self.registered_name!r} takes {self.max_modalities} modality, got "
                              f"{', '.join(inputs)}; pass one with --modalities or use --head cross_attention")
        self.config = config
        self.inputs = dict(inputs)
        self.modalities = list(inputs)
        self.n_outputs = n_outputs

    def describe(self) -> dict[str, Any]:
        """Everything needed to rebuild this head (written to the run folder)."""
        return {"name": self.registered_name, "config": self.config.to_dict(self.registered_name),
                "inputs": {m: dataclasses.asdict(s) for m, s in self.inputs.items()}, "n_outputs": self.n_outputs}


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over frames of ``x (B, T, ...)`` counting only ``mask (B, T)`` frames -> ``(B, ...)``."""
    w = mask.to(x.dtype).reshape(*mask.shape, *([1] * (x.dim() - 2)))  # (B, T, 1...)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed sine/cosine position codes ``(length, dim)``; any length works."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe
