"""``emotion2vec``: emotion2vec / emotion2vec+ frame features from a FunASR model folder (config.yaml + model.pt).

``--encoder emotion2vec:FOLDER`` (or ``emotion2vec:FOLDER/model.pt``, or a
Hugging Face hub id such as ``emotion2vec:emotion2vec/emotion2vec_plus_large``,
fetched once into the hub cache). The model is imo's port of FunASR's code
(``extractors.emotion2vec_model``); FunASR itself is not needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from imo_pipeline.errors import ConfigError, MediaError

from . import register_extractor
from .audio_common import AudioInput
from .base import Extractor, ExtractorConfig, by_equal_length
from .emotion2vec_model import load_emotion2vec

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_folder(source: str) -> Path:
    """The local folder holding ``config.yaml`` and ``model.pt``: the folder itself, a model.pt's
    folder, or a hub id's snapshot in the Hugging Face cache (downloaded once when online)."""
    local = Path(source).expanduser()
    if local.is_file():
        local = local.parent
    elif not local.exists():
        if not _HUB_ID.match(source):
            raise ConfigError(f"emotion2vec: no such folder {source!r}; pass the folder of a FunASR emotion2vec model "
                              f"(config.yaml + model.pt) or a hub id such as emotion2vec/emotion2vec_plus_large")
        from huggingface_hub import snapshot_download

        try:
            local = Path(snapshot_download(source, allow_patterns=["config.yaml", "model.pt"]))
        except Exception as e:  # offline, unknown repo, network: all one message
            hint = (f"ModelScope ids are not fetched; the same models are on the Hugging Face hub as "
                    f"emotion2vec/{source.split('/', 1)[1]}" if source.startswith("iic/")
                    else "offline or a typo? download it once with `huggingface-cli download ID` or pass a folder")
            raise ConfigError(f"emotion2vec: {source!r} is no local folder, and as a hub id it could not be fetched: "
                              f"{hint} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None
    for name in ("config.yaml", "model.pt"):
        if not (local / name).is_file():
            raise ConfigError(f"emotion2vec: {local} has no {name}; a FunASR emotion2vec folder holds config.yaml "
                              f"and model.pt (as in emotion2vec/emotion2vec_plus_large)")
    return local


@dataclass
class Emotion2vecConfig(ExtractorConfig):
    normalize: bool | None = None   # layer-norm the whole waveform first; None: config.yaml's `normalize` (as FunASR)


@register_extractor("emotion2vec")
class Emotion2vecExtractor(AudioInput, Extractor):
    """emotion2vec frame features at 50 frames/s, ``[T, 1 + prenet_depth + depth, embed_dim]``.

    Index 0 is the input of the first prenet block (local features +
    convolutional positions, after the prenet's LayerNorm), 1..prenet_depth
    the prenet blocks, the rest the main blocks; the last index is exactly
    FunASR's ``generate(..., granularity="frame")`` output (extra tokens
    removed). The emotion2vec+ classification head (``proj``) and the
    pre-training decoder are not used. Padded batches are exact (see
    ``emotion2vec_model``); a checkpoint with a group-norm feature
    extractor (``extractor_mode: default``) is batched by equal length only.
    """

    Config = Emotion2vecConfig
    batching = "mask"

    def _load(self) -> None:
        if not self.config.source:
            raise ConfigError("emotion2vec needs a model: --encoder emotion2vec:FOLDER (config.yaml + model.pt) "
                              "or emotion2vec:emotion2vec/emotion2vec_plus_large")
        folder = resolve_folder(self.config.source)
        self.model = load_emotion2vec(folder).to(self.device)
        self.arch = self.model.arch
        self.sample_rate = 16000
        if self.config.normalize is None:
            if self.arch.normalize is None:
                raise ConfigError(f"emotion2vec: {folder / 'config.yaml'} does not say whether the model takes "
                                  f"layer-normalised audio (model_conf.normalize; FunASR stops here too); "
                                  f"set the option normalize=true or normalize=false")
            self.config.normalize = self.arch.normalize
        self.batching = "mask" if self.arch.extractor_mode == "layer_norm" else "equal"

    def _forward(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        if self.batching == "equal" and len({len(w) for w in batch}) > 1:
            return by_equal_length(batch, self._forward)
        need = self.arch.receptive_field
        short = [len(w) for w in batch if len(w) < need]
        if short:
            raise MediaError(f"audio of {min(short) / self.sample_rate:.4f} s is shorter than emotion2vec's first "
                             f"frame ({need / self.sample_rate:.4f} s, {need} samples)")
        lengths = torch.tensor([len(w) for w in batch])
        x = torch.zeros(len(batch), int(lengths.max()))                     # (B, S)
        for i, w in enumerate(batch):
            w = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))
            if self.config.normalize:
                w = F.layer_norm(w, w.shape)                                # FunASR: whole utterance, eps 1e-5
            x[i, : len(w)] = w
        hidden, frames = self.model(x.to(self.device), lengths)            # (B, T, n_hidden, D)
        return [hidden[i, : int(frames[i])] for i in range(len(batch))]
