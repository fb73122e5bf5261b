"""``pixels``: the weight-free face baseline, a small grey crop flattened to a vector per frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imo_pipeline.errors import ConfigError

from . import register_extractor
from .base import Extractor
from .frames_common import FramesConfig, FramesInput


@dataclass
class PixelsConfig(FramesConfig):
    crop_size: int = 96       # the face crop before downsizing
    size: int = 32            # side of the grey image; dim = size * size


@register_extractor("pixels")
class PixelsExtractor(FramesInput, Extractor):
    """Face crop -> grey -> ``size x size`` (area interpolation) -> values in [0, 1]; one layer, ``dim = size**2``."""

    Config = PixelsConfig

    def _load(self) -> None:
        if self.config.size < 2:
            raise ConfigError(f"pixels size={self.config.size}: use 2 or more")
        self._setup_frames()

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        import cv2

        s = self.config.size
        grey = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (s, s), interpolation=cv2.INTER_AREA) for c in crops]
        x = torch.from_numpy(np.stack(grey).astype(np.float32) / 255.0)          # (N, s, s)
        return x.reshape(len(crops), 1, s * s)                                   # (N, 1, s*s)
