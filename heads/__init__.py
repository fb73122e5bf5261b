"""Fusion heads trained on cached embeddings, one module per head, registered by name.

A head is an ``nn.Module`` subclass of ``heads.base.Head`` with a config
dataclass; register it with ``@register_head("name")`` and import its module
below. ``imo train --head NAME`` then builds it from the registry.
"""

from __future__ import annotations

from typing import Any

from imo_pipeline.registry import Registry

HEADS: Registry = Registry("head")
register_head = HEADS.register

from .base import Head, HeadConfig, InputSpec  # noqa: E402
from . import concat, cross_attention, probe  # noqa: E402,F401  (registration)


def build_head(name: str, inputs: dict[str, InputSpec], n_outputs: int,
               options: dict[str, Any] | None = None) -> Head:
    """Head ``name`` over ``inputs`` (modality -> InputSpec) with ``n_outputs`` logits; ``options`` set config fields."""
    cls = HEADS.get(name)
    return cls(cls.Config.from_dict(options or {}, name), inputs, n_outputs)


__all__ = ["HEADS", "register_head", "build_head", "Head", "HeadConfig", "InputSpec"]
