"""The extractor base class: config, device, layer selection and shape probing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from imo_pipeline.errors import ConfigError
from imo_pipeline.manifest import Manifest, Utterance
from imo_pipeline.options import check_fields

PRECISIONS = ("auto", "fp32", "fp16", "bf16")


@dataclass
class ExtractorConfig:
    """Options every extractor takes; families subclass it with their own fields."""

    source: str | None = None     # hub id, local folder or checkpoint file
    layers: str = "last"          # "last", "all" or a comma list of hidden-state indices ("6,12")
    device: str = "auto"          # auto, cpu, cuda, cuda:1, mps
    precision: str = "auto"       # auto (fp16 autocast on GPU, fp32 on CPU), fp32, fp16, bf16

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExtractorConfig":
        """The config from a dict (a store's ``encoder`` attrs, or options); unknown keys and values of the
        wrong type are refused with ConfigError listing the family's options."""
        values = check_fields(cls, {k: v for k, v in d.items() if k != "type"}, f"{d.get('type')} extractor")
        return cls(**values)

    @classmethod
    def family_options(cls) -> list[str]:
        """The options a family adds to the shared ones (what ``--encoder-opt KEY=VALUE`` may set)."""
        shared = {f.name for f in dataclasses.fields(ExtractorConfig)}
        return [f.name for f in dataclasses.fields(cls) if f.name not in shared]

    def to_dict(self, family: str) -> dict[str, Any]:
        """Serialisable config with its type tag (written into the store)."""
        d = {"type": family, **dataclasses.asdict(self)}
        d.pop("device", None)  # where it ran does not change what it computes
        return d


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA GPU is visible; use --device cpu or auto")
    return dev


def parse_layers(spec: str, n_hidden: int, names: tuple[str, ...] = ()) -> list[int]:
    """Hidden-state indices kept: ``last`` -> [n-1], ``all`` -> 0..n-1, ``6,12`` -> [6, 12].

    A family with named layers (``layer_names``, e.g. wav2vec's ``z``, ``c``)
    also takes those names, alone or mixed with indices: ``c`` -> [1], ``z,c`` -> [0, 1].
    """
    spec = str(spec).strip()
    if spec == "last":
        return [n_hidden - 1]
    if spec == "all":
        return list(range(n_hidden))
    parts = [x.strip() for x in spec.split(",") if x.strip()]
    try:
        idx = [names.index(x) if x in names else int(x) for x in parts]
    except ValueError:
        idx = []
    if not idx or any(not 0 <= i < n_hidden for i in idx) or len(set(idx)) != len(idx):
        named = f", or the names {', '.join(names)}" if names else ""
        raise ConfigError(f"--layers {spec!r}: use last, all, or distinct indices in 0..{n_hidden - 1}{named} "
                          f"(0 is the input embedding, {n_hidden - 1} the last layer)")
    return idx


def by_equal_length(batch: list[Any], run: Callable[[list[Any]], list[torch.Tensor]]) -> list[torch.Tensor]:
    """``run`` on groups of equal-length items (for models that see padding), results back in batch order."""
    out: dict[int, torch.Tensor] = {}
    for n in sorted({len(w) for w in batch}):
        idx = [i for i, w in enumerate(batch) if len(w) == n]
        for i, h in zip(idx, run([batch[i] for i in idx])):
            out[i] = h
    return [out[i] for i in range(len(batch))]


class Extractor(ABC):
    """Turns decoded media into per-utterance arrays ``[T, L, D]``.

    Subclasses set ``modality``, ``Config`` and ``unit`` (what ``measure``
    counts: seconds, tokens, frames), and implement ``_load``, ``dummy``,
    ``measure``, ``load`` and ``_forward``. ``batching`` says how the driver
    may group utterances: ``mask`` (padded batches with an attention mask),
    ``equal`` (only equal lengths together) or ``single``.
    """

    modality: ClassVar[str]
    Config: ClassVar[type[ExtractorConfig]] = ExtractorConfig
    unit: ClassVar[str] = "s"
    default_budget: ClassVar[float] = 16.0   # per batch, in ``unit`` (CPU); GPUs get 4x
    batching: str = "single"
    registered_name: ClassVar[str]
    layer_names: tuple[str, ...] = ()   # names ``--layers`` accepts beside indices, in hidden-state order

    def __init__(self, config: ExtractorConfig):
        if config.precision not in PRECISIONS:
            raise ConfigError(f"--precision {config.precision!r}: use one of {', '.join(PRECISIONS)}")
        self.config = config
        self.device = resolve_device(config.device)
        self._load()
        self._probe()

    # --- to implement ----------------------------------------------------------
    @abstractmethod
    def _load(self) -> None:
        """Load weights/tokenizers onto ``self.device``."""

    @abstractmethod
    def dummy(self, size: float) -> Any:
        """A synthetic input of ``size`` units (used to probe shapes and frame rate)."""

    @abstractmethod
    def measure(self, utt: Utterance, manifest: Manifest) -> float:
        """The utterance's length in ``unit``, cheaply (no full decode). Raises MediaError."""

    @abstractmethod
    def load(self, utt: Utterance, manifest: Manifest) -> Any:
        """Decode the utterance's media. Raises MediaError naming the file and reason."""

    @abstractmethod
    def _forward(self, batch: list[Any]) -> list[torch.Tensor]:
        """All hidden states of each item, ``[T_i, n_hidden, D]`` (any float dtype)."""

    def media_path(self, utt: Utterance) -> str | None:
        """The file an error report should name."""
        return None

    # --- shared machinery ------------------------------------------------------
    def _probe(self) -> None:
        """Shapes and frame rate from two dummy inputs; also checks that padding is harmless.

        A family that claims ``mask`` batching but whose padded output differs
        from a single run (in fp32, beyond 1e-3) falls back to ``equal``.
        """
        short, long = self.dummy(1.0), self.dummy(2.0)
        with torch.inference_mode():
            a, b = self._forward([short, long])
            if self.batching == "mask" and not torch.allclose(a.float(), self._forward([short])[0].float(),
                                                             atol=1e-3, rtol=1e-3):
                self.batching = "equal"
        self.n_hidden, self.dim = a.shape[1], a.shape[2]
        self.layers = parse_layers(self.config.layers, self.n_hidden, tuple(self.layer_names))
        self.frame_rate = float(b.shape[0] - a.shape[0]) if self.unit == "s" else None

    def _autocast(self):
        p = self.config.precision
        if p == "auto":
            p = "fp16" if self.device.type == "cuda" else "fp32"
        if p == "fp32":
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=torch.float16 if p == "fp16" else torch.bfloat16)

    def _run_all(self, batch: list[Any]) -> list[torch.Tensor]:
        with torch.inference_mode(), self._autocast():
            return self._forward(batch)

    def embed(self, batch: list[Any]) -> list[np.ndarray]:
        """Frozen forward pass: float32 ``[T_i, L, D]`` per item, for the kept layers."""
        return [h[:, self.layers].float().cpu().numpy() for h in self._run_all(batch)]

    @property
    def family(self) -> str:
        return type(self).registered_name

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict(self.family)

    def weights(self) -> dict[str, torch.Tensor]:
        """Tensors that define the encoder (for the fingerprint); none for weight-free baselines."""
        model = getattr(self, "model", None)
        return model.state_dict() if model is not None else {}

    def fingerprint(self) -> str:
        """Hash of the config and every weight tensor: two stores agree only if this does."""
        h = hashlib.sha256(json.dumps(self.config_dict(), sort_keys=True).encode())
        for name, t in sorted(self.weights().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]
