"""Names, attributes and chunk geometry shared by the store writer and reader."""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..errors import ConfigError, StoreError

#: 2: parts record a CRC-32 and size per file (``checksums`` attrs), keep ``values`` at whole-shard
#: capacity and write all-zero chunks (so every file the committed counts imply exists). 1: neither.
FORMAT_VERSION = 2
PART_RE = re.compile(r"^part-(\d{5})-of-(\d{5})$")
VALUE_DTYPE = "float16"
#: Value dtypes a store may hold: float16 (default, half the disk) or float32 (features beyond +-65504).
DTYPES = ("float16", "float32")
#: Fields that must agree between the parts of one store.
PART_IDENTITY = ("modality", "encoder_fingerprint", "layers", "dim", "manifest_fingerprint", "n_parts", "dtype")
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


class NonFiniteError(StoreError):
    """An utterance whose embedding is not finite once cast to the store's dtype; the batch job records it as
    that utterance's failure (errors file) and goes on."""


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one of DTYPES; ConfigError naming ``--dtype`` otherwise."""
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)} (float32 for features beyond "
                          f"float16's range of +-65504)")
    return dtype


def check_sizes(chunk_mb: float, shard_mb: float) -> None:
    """Refuse chunk/shard sizes that are not finite numbers of MB above 0 (ConfigError naming the option)."""
    for name, value in (("--shard-mb", shard_mb), ("chunk_mb", chunk_mb)):
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{name} {value!r}: must be a finite size in MB above 0 (e.g. --shard-mb 128)")


def nonfinite_reason(uid: str, values, dtype: str) -> str:
    """Why ``values`` (finite or not in their own dtype) cannot be stored as ``dtype``; one line with the fix."""
    src = np.asarray(values)
    bad = int(np.size(src) - np.count_nonzero(np.isfinite(src)))
    if bad:
        return (f"utterance {uid!r}: the embedding has {bad} non-finite value(s) (NaN/inf); check its media "
                f"(e.g. samples far outside [-1, 1]) or the encoder")
    big = float(np.max(np.abs(src.astype(np.float64))))
    if dtype == "float16" and big <= float(np.finfo(np.float32).max):
        return (f"utterance {uid!r}: embedding values up to {big:.3g} overflow the store's float16 range "
                f"(+-65504); write the store with --dtype float32")
    return f"utterance {uid!r}: embedding values up to {big:.3g} exceed {dtype}'s range; check its media or the encoder"


def rebuild_command(store: str, meta: "StoreMeta", index: int) -> str:
    """The command that rebuilds part ``index`` of ``store`` (the re-import for a store made by `imo import-csd`)."""
    q = shlex.quote
    dtype = f" --dtype {meta.dtype}" if meta.dtype != VALUE_DTYPE else ""
    if meta.extra.get("imported_from") == "csd":
        csd = meta.extra.get("csd") or meta.encoder.get("source") or "FILE.csd"
        man = meta.extra.get("manifest") or "MANIFEST.jsonl"
        return f"imo import-csd {q(str(csd))} --manifest {q(str(man))} --modality {meta.modality} --out {q(store)}{dtype}"
    return f"imo extract --modality {meta.modality} --shard {index}/{meta.n_parts} --out {q(store)}{dtype}"


def geometry(n_layers: int, dim: int, chunk_mb: float, shard_mb: float, dtype: str = VALUE_DTYPE) -> tuple[int, int]:
    """(chunk_rows, shard_rows) of ``values`` for chunks of ~chunk_mb inside shards of ~shard_mb."""
    check_sizes(chunk_mb, shard_mb)
    row = n_layers * dim * np.dtype(check_dtype(dtype)).itemsize
    chunk_mb = min(chunk_mb, shard_mb)  # a chunk never exceeds its shard (small --shard-mb = small commit blocks)
    chunk = max(1, int(chunk_mb * 2**20) // row)
    per_shard = max(1, int(shard_mb * 2**20) // (chunk * row))
    return chunk, chunk * per_shard


def format_size(n: float) -> str:
    """Bytes for people: ``512 B``, ``4.1 MB``, ``2.3 GB``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return ""
