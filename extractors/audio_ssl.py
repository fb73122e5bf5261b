"""``hf-audio``: any speech SSL model ``transformers`` loads (wav2vec2, HuBERT, WavLM, data2vec-audio)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imo_pipeline.errors import ConfigError

from . import register_extractor
from .audio_common import AudioInput
from .base import Extractor, ExtractorConfig, by_equal_length
from .hf import load_pretrained


def other_family(src: str) -> None:
    """Refuse, in one line naming the right ``--encoder``, a source that another family reads."""
    from transformers import AutoConfig

    from . import EXTRACTORS

    local = Path(src).expanduser()
    family = None
    if local.is_file():
        family = "fairseq"                       # one checkpoint file (fairseq's model.pt, wav2vec_large.pt)
    elif (local / "model.bin").is_file():
        family = "faster-whisper"                # CTranslate2 layout
    elif (local / "config.yaml").is_file() and (local / "model.pt").is_file():
        family = "emotion2vec"                   # FunASR layout
    elif (local / "config.json").is_file() or not local.exists():
        try:
            model_type = getattr(AutoConfig.from_pretrained(str(local) if local.exists() else src), "model_type", None)
        except (OSError, ValueError, KeyError):
            model_type = None
        guess = None if model_type else next((f for f in ("whisper", "emotion2vec") if f in src.lower()), None)
        family = "whisper" if model_type == "whisper" else guess
    if family in EXTRACTORS or f"{family}-audio" in EXTRACTORS:     # fairseq:PATH is fairseq-audio for audio
        what = {"fairseq": "a single checkpoint file, not a transformers folder",
                "faster-whisper": "a CTranslate2 (faster-whisper) model",
                "emotion2vec": "an emotion2vec (FunASR) checkpoint", "whisper": "a Whisper checkpoint"}[family]
        raise ConfigError(f"encoder {src!r} is {what}, which hf-audio does not read; use --encoder {family}:{src}")


@dataclass
class HFAudioConfig(ExtractorConfig):
    normalize: bool | None = None   # zero-mean unit-variance per utterance; None: the checkpoint's choice


@register_extractor("hf-audio")
class HFAudioExtractor(AudioInput, Extractor):
    """Hidden states of every transformer layer (index 0: the CNN features after projection).

    Models whose convolutional front end uses layer norm take padded batches
    with an attention mask. Models with group norm (wav2vec2-base, HuBERT-base)
    normalise over time, so padding would change the result: they are batched
    only with utterances of exactly the same length.
    """

    Config = HFAudioConfig

    def _load(self) -> None:
        from transformers import AutoFeatureExtractor, AutoModel

        src = self.config.source
        if not src:
            raise ConfigError("hf-audio needs a source: a hub id such as facebook/wav2vec2-base or a local folder")
        other_family(src)
        fe = load_pretrained(AutoFeatureExtractor, src)
        self.model = load_pretrained(AutoModel, src).eval().to(self.device)
        self.sample_rate = int(getattr(fe, "sampling_rate", 16000))
        self.normalize = fe.do_normalize if self.config.normalize is None else self.config.normalize
        if self.config.normalize is None:
            self.config.normalize = bool(self.normalize)
        norm = getattr(self.model.config, "feat_extract_norm", "layer")
        self.batching = "mask" if norm == "layer" else "equal"

    def _forward(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        if self.batching == "equal" and len({len(w) for w in batch}) > 1:
            return by_equal_length(batch, self._forward)
        lengths = torch.tensor([len(w) for w in batch])
        x = torch.zeros(len(batch), int(lengths.max()))                       # (B, S)
        for i, w in enumerate(batch):
            w = torch.from_numpy(w)
            if self.normalize:
                w = (w - w.mean()) / torch.sqrt(w.var(unbiased=False) + 1e-7)
            x[i, : len(w)] = w
        mask = None
        if len(batch) > 1 and self.batching == "mask":
            mask = (torch.arange(x.shape[1])[None] < lengths[:, None]).long().to(self.device)
        out = self.model(x.to(self.device), attention_mask=mask, output_hidden_states=True)
        hidden = torch.stack(out.hidden_states, dim=2)                      # (B, T, n_hidden, D)
        frames = self.model._get_feat_extract_output_lengths(lengths)
        return [hidden[i, : int(frames[i])] for i in range(len(batch))]
