"""Names, attributes and chunk geometry shared by the store writer and reader."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import __version__

FORMAT_VERSION = 1
PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})$")
VALUE_DTYPE = "float16"
#: Fields that must agree between the parts of one store.
PART_IDENTITY = ("modality", "encoder_fingerprint", "layers", "dim", "manifest_fingerprint", "n_parts")
#: Fields that must agree between a store and the encoder a run or a prediction expects.
ENCODER_IDENTITY = ("encoder_fingerprint", "layers", "dim")


@dataclass
class StoreMeta:
    """What a store says about itself (root attrs). Training needs nothing else to know shapes."""

    modality: str
    encoder: dict[str, Any]          # the extractor's full config, with its type tag
    encoder_fingerprint: str         # hash of config + weights
    layers: list[int]                # hidden-state indices kept (0 = input embeddings)
    dim: int
    frame_rate: float | None         # frames per second (None for text tokens)
    manifest_fingerprint: str
    n_parts: int = 1
    format_version: int = FORMAT_VERSION
    dtype: str = VALUE_DTYPE
    package_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def to_attrs(self) -> dict[str, Any]:
        return {"imo": asdict(self) | {"n_layers": self.n_layers}}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "StoreMeta":
        d = dict(attrs["imo"])
        d.pop("n_layers", None)
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The fields that must agree between parts of one store."""
        return {k: getattr(self, k) for k in PART_IDENTITY}

    def compatible(self, want: "StoreMeta", keys: tuple[str, ...] = PART_IDENTITY) -> tuple[str, Any, Any] | None:
        """The first of ``keys`` on which this store's meta differs from ``want``: ``(key, have, wanted)``;
        None when they agree. The one comparison behind every store check (writer, training, evaluate, predict)."""
        for key in keys:
            have, wanted = getattr(self, key), getattr(want, key)
            if have != wanted:
                return key, have, wanted
        return None


def geometry(n_layers: int, dim: int, chunk_mb: float, shard_mb: float) -> tuple[int, int]:
    """(chunk_rows, shard_rows) of ``values`` for chunks of ~chunk_mb inside shards of ~shard_mb."""
    row = n_layers * dim * 2
    chunk_mb = min(chunk_mb, shard_mb)  # a chunk never exceeds its shard (small --shard-mb = small commit blocks)
    chunk = max(1, int(chunk_mb * 2**20) // row)
    per_shard = max(1, int(shard_mb * 2**20) // (chunk * row))
    return chunk, chunk * per_shard
