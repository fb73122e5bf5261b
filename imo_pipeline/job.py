"""An extraction job: the one value `imo extract` builds and hands to the local or the cluster path.

``ExtractJob`` holds everything that decides what a store part contains (the
manifest, the encoder and its options, layers, precision, dtype) and how it is
written (batch budget, streams, shard size). It checks every field when it is
made, so a bad option is refused in one line before anything is loaded or
written, and it is plain data, so it pickles to dask workers unchanged.

Devices are resolved once, on the client (``ExtractJob.resolved``), and a
worker's device comes from ``ExtractJob.worker_device`` alone: ``auto`` becomes
``cuda`` when CUDA is visible (for a remote cluster: when its workers offer the
dask resource ``GPU``), else ``mps``, else ``cpu``. On a local cluster a job on
``cuda`` spreads its worker processes over the visible GPUs (worker ``k`` on
``cuda:k mod n``); an explicit ``cuda:N`` keeps every worker on GPU ``N``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError
from .manifest import Manifest, ShardSpec, load_manifest
from .paths import is_url

DTYPES = ("float16", "float32")
DEFAULT_DTYPE = "float16"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::\d+)?")
_LAYER = re.compile(r"\d+|[A-Za-z_][A-Za-z0-9_]*")


def check_positive(option: str, value: Any, integer: bool = False, minimum: float | None = None) -> None:
    """ConfigError naming ``option`` unless ``value`` is a finite number > 0 (an integer >= ``minimum`` or 1
    with ``integer``; a number >= ``minimum`` when given)."""
    if integer:
        low = 1 if minimum is None else int(minimum)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{option} {value!r}: give a whole number >= {low}")
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value < minimum if minimum is not None else value <= 0):
        want = f">= {minimum:g}" if minimum is not None else "> 0"
        raise ConfigError(f"{option} {value!r}: give a finite number {want}")


def check_layers(spec: str) -> str:
    """``last``, ``all``, or distinct hidden-state indices (``6,12``) or layer names a family declares (``c``),
    comma-separated; the range and the names are checked once the encoder is loaded."""
    text = str(spec).strip()
    if text in ("last", "all"):
        return text
    parts = [p.strip() for p in text.split(",")]
    if not all(_LAYER.fullmatch(p) for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"--layers {spec!r}: use last, all, or distinct indices (or layer names) separated by "
                          f"commas, e.g. 6,12 (0 is the input embedding)")
    return ",".join(parts)


def check_device(text: str) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (syntax only; ``resolve_device`` checks it is there)."""
    t = str(text).strip()
    if not _DEVICE.fullmatch(t):
        raise ConfigError(f"--device {text!r}: use auto, cpu, cuda, cuda:N or mps")
    return t


def resolve_device(text: str) -> str:
    """``auto`` -> ``cuda`` if a CUDA GPU is visible here, else ``mps`` if available, else ``cpu``; an explicit
    device is checked against this machine (ConfigError if it has no such device)."""
    import torch

    t = check_device(text)
    if t == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if t.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {t}: no CUDA GPU is visible; use --device cpu or auto")
        n = torch.cuda.device_count()
        if ":" in t and int(t.split(":")[1]) >= n:
            raise ConfigError(f"--device {t}: this machine sees {n} GPU(s), cuda:0..cuda:{n - 1}")
    if t == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError("--device mps: no Apple GPU (MPS) is available; use --device cpu or auto")
    return t


@dataclass(frozen=True)
class ExtractJob:
    """Everything a process needs to extract one part (``shard``) of a store; see the module docstring.

    ``options`` are the encoder family's own options (``--encoder-opt``, ``--fps`` ...), already cast to
    the family's config types; they become part of the extractor config, so the store records them.
    """

    manifest: str                    # path visible from the workers (shared file system)
    encoder: str                     # name / folder / family:source, as for `imo extract --encoder`
    modality: str
    out: str                         # store path or URL, visible from the workers
    data_root: str | None = None
    layers: str = "last"
    device: str = "auto"             # auto until ``resolved``; then cpu, mps, cuda or cuda:N
    precision: str = "auto"
    dtype: str = DEFAULT_DTYPE       # what the store keeps: float16, or float32 for values beyond float16
    budget: float | None = None      # batch size in the extractor's unit (seconds / tokens / frames)
    shard_mb: float = 128
    streams: int | None = None
    options: tuple[tuple[str, Any], ...] = ()
    shard: ShardSpec = field(default_factory=ShardSpec)
    spread_gpus: bool = False        # a local cluster on `cuda`: worker k runs on cuda:k mod n

    def __post_init__(self) -> None:
        from extractors.base import PRECISIONS

        object.__setattr__(self, "layers", check_layers(self.layers))
        object.__setattr__(self, "device", check_device(self.device))
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype {self.dtype!r}: use one of {', '.join(DTYPES)}")
        if self.budget is not None:
            check_positive("--batch-seconds", self.budget)
        check_positive("--shard-mb", self.shard_mb)
        if self.streams is not None:
            check_positive("--streams", self.streams, integer=True)
        if not is_url(self.out) and Path(self.out).exists() and not Path(self.out).is_dir():
            raise ConfigError(f"--out {self.out} is a file; a store is a folder: give a new path or an existing store")
        object.__setattr__(self, "options", tuple(sorted((k, v) for k, v in dict(self.options).items()
                                                         if v is not None)))

    # --- where it runs -------------------------------------------------------------------
    @property
    def wants_gpu(self) -> bool:
        return self.device.startswith("cuda")

    def resolved(self, gpu_workers: bool | None = None) -> "ExtractJob":
        """The job with its device decided, once, on the client: here (``gpu_workers`` None) by what this
        machine sees; for a remote cluster, ``auto`` by whether its workers offer a GPU (an explicit device
        is the workers' to check)."""
        if gpu_workers is None:
            return dataclasses.replace(self, device=resolve_device(self.device))
        if self.device == "auto":
            return dataclasses.replace(self, device="cuda" if gpu_workers else "cpu")
        return self

    def worker_device(self, worker_name: Any = None) -> str:
        """The device one worker process runs the job on: with ``spread_gpus``, local worker ``k`` gets
        ``cuda:k mod n`` (n: the GPUs it sees); every other case keeps the job's device."""
        if not (self.spread_gpus and self.device == "cuda") or not str(worker_name).isdigit():
            return self.device
        import torch

        n = torch.cuda.device_count()
        return f"cuda:{int(worker_name) % n}" if n > 1 else self.device

    def for_workers(self) -> "ExtractJob":
        """The job with absolute local paths (workers may run in another folder), the encoder's local
        source included (``fabnet:ck.pth`` -> ``fabnet:/abs/ck.pth``); URLs and hub ids unchanged."""
        from extractors import parse_encoder

        enc = self.encoder
        _, source = parse_encoder(enc, self.modality)
        if source and not is_url(source) and Path(source).expanduser().exists():
            enc = enc[: len(enc) - len(source)] + _absolute(source)
        return dataclasses.replace(self, manifest=_absolute(self.manifest), data_root=_absolute(self.data_root),
                                   out=_absolute(self.out), encoder=enc)

    def encoder_key(self, device: str) -> str:
        """Jobs with equal keys can share one built extractor."""
        return json.dumps([self.encoder, self.modality, self.layers, device, self.precision, self.options],
                          default=str)

    # --- what it runs --------------------------------------------------------------------
    def load_manifest(self) -> Manifest:
        return load_manifest(self.manifest, self.data_root)

    def build_extractor(self, device: str | None = None):
        """The job's extractor on ``device`` (default: the job's)."""
        from extractors import build_extractor

        return build_extractor(self.encoder, self.modality, layers=self.layers, device=device or self.device,
                               precision=self.precision, **dict(self.options))

    def run(self, extractor, manifest: Manifest | None = None, progress: bool = True,
            on_batch: Callable[[int, float], None] | None = None, log: Callable[[str], None] | None = None):
        """Extract the job's part with ``extractor`` (from ``build_extractor``); returns the ExtractResult."""
        from .extract import extract

        extra = {"dtype": self.dtype} if self.dtype != DEFAULT_DTYPE else {}
        return extract(manifest if manifest is not None else self.load_manifest(), extractor, self.out, self.shard,
                       budget=self.budget, progress=progress, shard_mb=self.shard_mb, streams=self.streams,
                       on_batch=on_batch, log=log, **extra)


def encoder_options(encoder: str, modality: str, pairs: dict[str, str] | None = None,
                    sugar: dict[str, tuple[str, Any]] | None = None) -> dict[str, Any]:
    """The family options of ``encoder``: ``pairs`` from ``--encoder-opt KEY=VALUE`` cast to the family's
    config types, plus ``sugar`` (``{"fps": ("--fps", 10.0)}``, None values ignored). ConfigError naming
    the option for a key the family does not have (listing the ones it has) or a value that does not fit."""
    from extractors import extractor_class, parse_encoder

    from .options import cast_text, check_value, field_types

    family, _ = parse_encoder(encoder, modality)
    cls = extractor_class(family, modality)
    valid = cls.Config.family_options()
    types = field_types(cls.Config)
    listed = f"{family} options: {', '.join(valid)}" if valid else f"{family} has no options of its own"

    def key_ok(key: str, flag: str) -> None:
        if key in valid:
            return
        own = {"layers": "--layers", "precision": "--precision", "device": "--device", "source": "--encoder"}
        hint = f" (set it with {own[key]})" if key in own else ""
        raise ConfigError(f"{flag}: {family} (a {cls.modality} encoder) has no option {key!r}{hint}; {listed}")

    out: dict[str, Any] = {}
    for key, text in (pairs or {}).items():
        key_ok(key, f"--encoder-opt {key}")
        out[key] = cast_text(text, types[key], f"--encoder-opt {key}")
    for key, (flag, value) in (sugar or {}).items():
        if value is None:
            continue
        key_ok(key, flag)
        value = check_value(value, types[key], flag)
        if key in out and out[key] != value:
            raise ConfigError(f"{flag} {value!r} and --encoder-opt {key}={out[key]!r} disagree; give one of them")
        out[key] = value
    return out


def _absolute(path: str | Path | None) -> str | None:
    if path is None or is_url(path):
        return None if path is None else str(path)
    return str(Path(path).expanduser().resolve())
