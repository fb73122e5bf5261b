"""``fabnet``: the FAb-Net face encoder (Wiles et al., BMVC 2018) from a released checkpoint.

The encoder is the one of the public FAb-Net code: eight 4x4 stride-2
convolutions, 16 -> 32 -> 64 -> 128 -> 128 -> 128 -> 128 -> 256 channels,
batch norm after convolutions 2-7, LeakyReLU(0.2) after convolutions 1-7,
so a 256x256 RGB face crop becomes a 256-d vector (the 1x1 map of the last
convolution). Layers are kept in the checkpoint's ``nn.Sequential`` order
so its state dict loads unchanged. Inputs are RGB in [0, 1], as the
original code fed them (``ToTensor()`` with no normalisation).

Checkpoints are loaded with ``torch.load(weights_only=True)``: a state dict,
or a dict holding one under ``state_dict``/``model``; keys may carry a
``module.`` (DataParallel) prefix and the whole model's keys (``encoder.*``
beside the decoders) are accepted: only the encoder is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from imo_pipeline.errors import ConfigError
from imo_pipeline.safe_load import load_checkpoint

from . import register_extractor
from .base import Extractor
from .frames_common import FramesConfig, FramesInput

CHANNELS = (16, 32, 64, 128, 128, 128, 128, 256)


def fabnet_encoder(channels: tuple[int, ...] = CHANNELS) -> nn.Sequential:
    """The FAb-Net encoder as the released checkpoints lay it out (``nn.Sequential`` indices 0..20)."""
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
    """``(N, 3, 256, 256)`` RGB in [0, 1] -> ``(N, 256)`` embedding."""

    def __init__(self):
        super().__init__()
        self.encoder = fabnet_encoder()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).flatten(1)                                     # (N, 256, 1, 1) -> (N, 256)


def _unwrap(obj, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict", "model", "model_state_dict", "state"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"FabNet checkpoint {path} holds no state dict of tensors; pass the released .pth "
                          f"file (or one saved with torch.save(model.state_dict(), ...))")
    return obj


def encoder_state(sd: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors keyed ``encoder.<i>.<name>``, whatever prefix the checkpoint used."""
    expected = set(FabNetEncoder().state_dict())
    out: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in sd.items():
        m = re.fullmatch(r"(?:.*\.)?encoder\.(\d+\..+)", key) or re.fullmatch(r"(?:module\.)*(\d+\..+)", key)
        k = f"encoder.{m.group(1)}" if m else key
        if k in expected:
            out[k] = value
        else:
            unexpected.append(key)
    missing = sorted(expected - set(out))
    if missing:
        raise ConfigError(f"FabNet checkpoint {path} does not fit the FAb-Net encoder: missing "
                          f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; unexpected {unexpected[:8]}"
                          f"{' ...' if len(unexpected) > 8 else ''}; is it a FAb-Net model checkpoint?")
    return out


def load_fabnet(path: str | Path) -> FabNetEncoder:
    """A FabNet encoder with the weights of checkpoint ``path`` (``torch.load(weights_only=True)``)."""
    path = Path(path).expanduser()
    obj = load_checkpoint(path, "FabNet checkpoint",
                          fix="pass the released .pth file (download it from the FAb-Net project page) as "
                              "--encoder fabnet:PATH, or one saved with torch.save(model.state_dict(), ...)")
    model = FabNetEncoder()
    shapes = model.state_dict()
    sd = encoder_state(_unwrap(obj, path), path)
    bad = [k for k, v in sd.items() if v.shape != shapes[k].shape]
    if bad:
        raise ConfigError(f"FabNet checkpoint {path}: shapes differ from the FAb-Net encoder for {bad[:4]}")
    model.load_state_dict(sd, strict=True)
    return model


@dataclass
class FabNetConfig(FramesConfig):
    crop_size: int = 256     # FAb-Net takes 256x256 crops


@register_extractor("fabnet")
class FabNetExtractor(FramesInput, Extractor):
    """FAb-Net embeddings: one 256-d vector per face frame, ``[T_frames, 1, 256]``."""

    Config = FabNetConfig

    def _load(self) -> None:
        if not self.config.source:
            raise ConfigError("fabnet needs a checkpoint: --encoder fabnet:PATH/TO/fabnet.pth")
        if self.config.crop_size != 256:
            raise ConfigError(f"fabnet crop_size={self.config.crop_size}: FAb-Net takes 256x256 crops; leave it at 256")
        self._setup_frames()
        self.model = load_fabnet(self.config.source).eval().to(self.device)

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(crops).to(self.device).permute(0, 3, 1, 2).float() / 255.0   # (N, 3, 256, 256)
        return self.model(x).unsqueeze(1)                                                  # (N, 1, 256)
