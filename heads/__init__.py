"""Fusion heads trained on cached embeddings, one module per head, registered by name.

A head is an ``nn.Module`` subclass of ``heads.base.Head`` with a config
dataclass; register it with ``@register_head("name")`` and import its module
below. ``imo train --head NAME`` then builds it from the registry, and the
contract tests in tests/test_heads.py cover it (they fail until it has small
test options there). ``heads.base`` states the batch contract, including how an
absent modality arrives; ``head_config`` checks ``--head-opt`` values up front.

Registered: ``cross_attention`` (imo's default), ``sse_ft`` (the original
work's forward), ``mult``, ``tfn``, ``lmf``, ``late``, ``gated``, ``concat``
and ``probe``.
"""

from __future__ import annotations

from typing import Any

from imo_pipeline.registry import Registry

HEADS: Registry = Registry("head")
register_head = HEADS.register

from .base import Head, HeadConfig, InputSpec, absent_input, drop_modality  # noqa: E402
from . import concat, cross_attention, gated, late, lmf, mult, probe, sse_ft, tfn  # noqa: E402,F401  (registration)


def head_config(name: str, options: dict[str, Any] | None = None) -> HeadConfig:
    """The checked config of head ``name`` from ``options`` (``--head-opt`` values); one-line ConfigError
    naming the option when a key is unknown or a value has the wrong type or is out of range."""
    return HEADS.get(name).Config.from_dict(options or {}, name)


def build_head(name: str, inputs: dict[str, InputSpec], n_outputs: int,
               options: dict[str, Any] | None = None) -> Head:
    """Head ``name`` over ``inputs`` (modality -> InputSpec) with ``n_outputs`` logits; ``options`` set config fields."""
    return HEADS.get(name)(head_config(name, options), inputs, n_outputs)


def rebuild_head(description: dict[str, Any]) -> Head:
    """The head a ``Head.describe()`` dict describes (fresh weights; load a state_dict into it). The config keeps
    its type tag, so that a config class can tell a saved description from ``--head-opt`` values."""
    return build_head(description["name"], {m: InputSpec(**s) for m, s in description["inputs"].items()},
                      description["n_outputs"], dict(description["config"]))


__all__ = ["HEADS", "register_head", "build_head", "head_config", "rebuild_head", "drop_modality", "absent_input",
           "Head", "HeadConfig", "InputSpec"]
