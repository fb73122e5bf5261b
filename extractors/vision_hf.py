"""``hf-vision``: any ``transformers`` vision encoder (ViT, DeiT, BEiT, DINO/DINOv2, CLIP/SigLIP vision, ...).

Each face crop goes through the checkpoint's own image processor (resize,
rescale, normalise) and the model; a frame's vector per layer is the
``[CLS]`` token state (``pool="cls"``) or the mean over all tokens
(``pool="mean"``, for models without a class token).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from imo_pipeline.errors import ConfigError

from . import register_extractor
from .base import Extractor
from .frames_common import FramesConfig, FramesInput
from .hf import load_pretrained


@dataclass
class HFVisionConfig(FramesConfig):
    pool: str = "cls"       # per-frame vector: "cls" (the class token) or "mean" (mean over tokens)


@register_extractor("hf-vision")
class HFVisionExtractor(FramesInput, Extractor):
    """Hidden states ``[T_frames, n_layers + 1, D]`` (index 0: the patch embeddings)."""

    Config = HFVisionConfig

    def _load(self) -> None:
        from transformers import AutoImageProcessor, AutoModel

        src = self.config.source
        if not src:
            raise ConfigError("hf-vision needs a source: a hub id such as google/vit-base-patch16-224-in21k "
                              "or a local folder")
        if self.config.pool not in ("cls", "mean"):
            raise ConfigError(f"hf-vision pool={self.config.pool!r}: use cls or mean")
        self._setup_frames()
        self.processor = load_pretrained(AutoImageProcessor, src)
        model = load_pretrained(AutoModel, src)
        if hasattr(model, "vision_model"):   # CLIP/SigLIP: keep the image tower only
            model = model.vision_model
        self.model = model.eval().to(self.device)

    def _encode(self, crops: np.ndarray) -> torch.Tensor:
        pixels = self.processor(images=list(crops), return_tensors="pt")["pixel_values"]
        out = self.model(pixel_values=pixels.to(self.device), output_hidden_states=True)
        states = []
        for h in out.hidden_states:
            if h.dim() == 4:                                      # (N, C, H, W) feature maps
                states.append(h.mean(dim=(2, 3)))                 # (N, C)
            elif self.config.pool == "cls":
                states.append(h[:, 0])                            # (N, D)
            else:
                states.append(h.mean(dim=1))                      # (N, D)
        if len({s.shape[-1] for s in states}) > 1:
            raise ConfigError(f"hf-vision {self.config.source}: its layers have different widths "
                              f"({sorted({s.shape[-1] for s in states})}); use a transformer (ViT-like) encoder")
        return torch.stack(states, dim=1)                         # (N, n_hidden, D)
