"""``fabnet``: the FAb-Net face encoder (Wiles et al., BMVC 2018) from a released checkpoint.

The encoder is ``generate_encoder_layers`` of the public FAb-Net code
(``models_multiview.py``): eight 4x4 stride-2 convolutions with widths
``w, 2w, 4w, 8w, 8w, 8w, 8w -> out``, batch norm after convolutions 2-7,
LeakyReLU(0.2) after convolutions 1-7, so a 256x256 RGB face crop becomes an
``out``-d vector (the 1x1 map of the last convolution). The released models
(``affectnet_4views.pth``, ``aflw_4views.pth``, ``300w_4views.pt``,
``nv2_curriculum.pth``) are ``FrontaliseModelMasks_wider(3, inner_nc=256,
num_additional_ids=32)``: widths 32, 64, 128, 256, 256, 256, 256 -> 256.
The widths are read from the checkpoint's shapes, so the 16-wide encoder of
the code's other classes (``FrontaliseModelMasks``: 16 ... 128 -> 256) loads
too. Layers keep the checkpoint's ``nn.Sequential`` indices, so its state
dict loads unchanged. Inputs are RGB in [0, 1], as the original code and its
users feed them (``ToTensor()`` with no normalisation).

Where the encoder is found: the released files hold the whole model
(``encoder.*``, ``decoder.*``, ``mask.*``) under ``state_dict_model`` and
AffectNet's 8-way expression classifier (``BatchNorm1d(256)`` +
``Linear(256, 8, bias=False)``) under ``state_dict``; the training script's
own checkpoints keep the model under ``state_dict`` beside the optimizer
state and its options (an ``argparse.Namespace``). Whichever entry holds
``encoder.*`` is used; bare encoder state dicts (``0.weight`` ...) load too,
``module.`` prefixes are dropped. Only the encoder is kept: decoders, mask
and classifier are ignored, and the store's config says so
(``encoder_widths``, ``ignored``).

Loading is ``torch.load(weights_only=True)`` through the safe loader, with
one extra class allowed: ``argparse.Namespace`` (the training script pickles
its options as one). A file that needs anything else is refused, naming the class.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imo_pipeline.errors import ConfigError
from imo_pipeline.safe_load import load_checkpoint

from . import register_extractor
from .base import Extractor
from .frames_common import FramesConfig, FramesInput

RELEASED = (32, 64, 128, 256, 256, 256, 256, 256)   # FrontaliseModelMasks_wider(3, inner_nc=256, num_additional_ids=32)
NARROW = (16, 32, 64, 128, 128, 128, 128, 256)      # FrontaliseModelMasks(3, inner_nc=256): the code's 16-wide encoder
CONV_INDEX = (0, 2, 5, 8, 11, 14, 17, 20)           # the convolutions' positions in the original nn.Sequential
ALLOW = (argparse.Namespace,)
_MODEL_KEYS = ("state_dict_model", "state_dict", "model", "model_state_dict", "state")


def fabnet_encoder(channels: tuple[int, ...] = RELEASED) -> nn.Sequential:
    """The FAb-Net encoder as the released checkpoints lay it out (``nn.Sequential`` indices 0..20)."""
    if len(channels) != 8:
        raise ValueError(f"the FAb-Net encoder has 8 convolutions, got widths {channels}")
    layers: list[nn.Module] = []
    c_in = 3
    for i, c_out in enumerate(channels):
        layers.append(nn.Conv2d(c_in, c_out, 4, 2, 1))
        if 0 < i < len(channels) - 1:
            layers.append(nn.BatchNorm2d(c_out))
        if i < len(channels) - 1:
            layers.append(nn.LeakyReLU(0.2))
        c_in = c_out
    return nn.Sequential(*layers)


class FabNetEncoder(nn.Module):
    """``(N, 3, 256, 256)`` RGB in [0, 1] -> ``(N, out)`` embedding (``out`` = 256 for the released models)."""

    def __init__(self, channels: tuple[int, ...] = RELEASED):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.encoder = fabnet_encoder(self.channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)                                     # (N, out, 1, 1) -> (N, out)


def _strip(sd: dict[str, Any]) -> dict[str, Any]:
    return {re.sub(r"^(?:module\.)+", "", k): v for k, v in sd.items()}


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _is_bare_encoder(sd: dict[str, Any]) -> bool:
    w = sd.get("0.weight")
    return isinstance(w, torch.Tensor) and w.dim() == 4 and w.shape[1] == 3


def find_encoder(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """The encoder's tensors keyed ``encoder.<i>.<name>``, where they were found, and what was left out."""
    candidates: list[tuple[str, dict]] = []
    if _is_tensor_dict(obj):
        candidates.append(("the top level", obj))
    elif isinstance(obj, dict):
        candidates += [(f"'{k}'", obj[k]) for k in _MODEL_KEYS if _is_tensor_dict(obj.get(k))]
    for where, sd in candidates:
        sd = _strip(sd)
        enc = {k: v for k, v in sd.items() if k.startswith("encoder.")}
        if not enc and _is_bare_encoder(sd):
            enc = {f"encoder.{k}": v for k, v in sd.items()}
        if not enc:
            continue
        beside = sorted({k.split(".")[0] for k in sd if not k.startswith("encoder.")}) if "encoder.0.weight" in sd else []
        notes = [f"{name} (beside the encoder under {where})" for name in beside]
        for other, osd in candidates:
            if other != where:
                notes.append(_describe_other(_strip(osd), other))
        return enc, where, notes
    keys = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise ConfigError(f"FabNet checkpoint {path} holds no FAb-Net encoder (no 'encoder.*' weights under "
                      f"{', '.join(_MODEL_KEYS)} or at the top level; found {keys}); pass a released FAb-Net "
                      f"model file such as release/affectnet_4views.pth")


def _describe_other(sd: dict[str, torch.Tensor], where: str) -> str:
    w0, w1 = sd.get("0.weight"), sd.get("1.weight")
    if (w0 is not None and w0.dim() == 1 and "0.running_mean" in sd and w1 is not None and w1.dim() == 2
            and "1.bias" not in sd):
        return (f"classifier under {where} (BatchNorm1d({w0.shape[0]}) + "
                f"Linear({w1.shape[1]}, {w1.shape[0]}, bias=False))")
    return f"the tensors under {where}"


def encoder_widths(enc: dict[str, torch.Tensor], path: Path) -> tuple[int, ...]:
    """Output widths of the eight convolutions, read from their weights' shapes."""
    shapes = []
    for i in CONV_INDEX:
        w = enc.get(f"encoder.{i}.weight")
        if w is None or w.dim() != 4 or tuple(w.shape[2:]) != (4, 4):
            raise ConfigError(f"FabNet checkpoint {path}: 'encoder.{i}.weight' is "
                              f"{'missing' if w is None else tuple(w.shape)}, not the 4x4 convolution of the "
                              f"FAb-Net encoder; is it a FAb-Net model checkpoint?")
        shapes.append(tuple(w.shape))
    c_in = 3
    for i, s in zip(CONV_INDEX, shapes):
        if s[1] != c_in:
            raise ConfigError(f"FabNet checkpoint {path}: 'encoder.{i}.weight' takes {s[1]} channels where the "
                              f"layer before gives {c_in}; the file is not a FAb-Net encoder")
        c_in = s[0]
    return tuple(s[0] for s in shapes)


def load_fabnet(path: str | Path) -> FabNetEncoder:
    """A FabNet encoder with the weights of checkpoint ``path`` (``torch.load(weights_only=True)``).

    The returned module carries ``source_key`` (where the encoder was found)
    and ``ignored`` (what else the file held and imo does not use).
    """
    path = Path(path).expanduser()
    obj = load_checkpoint(path, "FabNet checkpoint", allow=ALLOW,
                          fix="pass the released .pth file (download it from the FAb-Net project page) as "
                              "--encoder fabnet:PATH, or one saved with torch.save(model.state_dict(), ...)")
    enc, where, ignored = find_encoder(obj, path)
    model = FabNetEncoder(encoder_widths(enc, path))
    expected = model.state_dict()
    # files saved before torch 0.4.1 have no num_batches_tracked (unused in eval; load_state_dict fills it)
    missing = sorted(k for k in set(expected) - set(enc) if not k.endswith(".num_batches_tracked"))
    unexpected = sorted(set(enc) - set(expected))
    if missing or unexpected:
        raise ConfigError(f"FabNet checkpoint {path} does not fit the FAb-Net encoder: missing "
                          f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; unexpected {unexpected[:8]}"
                          f"{' ...' if len(unexpected) > 8 else ''}; is it a FAb-Net model checkpoint?")
    bad = [k for k, v in enc.items() if v.shape != expected[k].shape]
    if bad:
        raise ConfigError(f"FabNet checkpoint {path}: shapes differ from the FAb-Net encoder for {bad[:4]}")
    model.load_state_dict(enc, strict=True)
    model.source_key = where
    model.ignored = ignored
    return model


@dataclass
class FabNetConfig(FramesConfig):
    crop_size: int = 256                                      # FAb-Net takes 256x256 crops
    encoder_widths: list[int] | None = None                   # read from the checkpoint (recorded in the store)
    ignored: list[str] = field(default_factory=list)          # what the checkpoint held beside the encoder (unused)


@register_extractor("fabnet")
class FabNetExtractor(FramesInput, Extractor):
    """FAb-Net embeddings: one vector per face frame, ``[T_frames, 1, 256]`` for the released models."""

    Config = FabNetConfig

    def _load(self) -> None:
        if not self.config.source:
            raise ConfigError("fabnet needs a checkpoint: --encoder fabnet:PATH/TO/affectnet_4views.pth")
        if self.config.crop_size != 256:
            raise ConfigError(f"fabnet crop_size={self.config.crop_size}: FAb-Net takes 256x256 crops; leave it at 256")
        self._setup_frames()
        model = load_fabnet(self.config.source)
        widths = list(model.channels)
        if self.config.encoder_widths is not None and list(self.config.encoder_widths) != widths:
            raise ConfigError(f"fabnet checkpoint {self.config.source} has encoder widths {widths}, not the "
                              f"{list(self.config.encoder_widths)} recorded in the config; it is a different model")
        self.config.encoder_widths = widths
        self.config.ignored = list(model.ignored)
        self.model = model.eval().to(self.device)

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 255.0   # (N, 3, 256, 256)
        return self.model(x).unsqueeze(1)                                                  # (N, 1, 256)
