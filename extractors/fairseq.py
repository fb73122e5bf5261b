"""``--encoder fairseq:PATH``: fairseq checkpoints read without fairseq (families ``fairseq-audio``, ``fairseq-text``).

The model kind comes from the checkpoint's stored options (``args.arch`` or
``cfg.model._name``), the weights are loaded weights-only (``fairseq_ckpt``):

- ``wav2vec`` (v1, e.g. ``wav2vec_large.pt``, the original work's audio
  encoder): imo's port of fairseq's ``Wav2VecModel`` (``fairseq_models``).
  Two layers, named for ``--layers``: ``z`` (0, the feature extractor) and
  ``c`` (1, the context network, the usual feature and ``last``); 100
  frames/s. Its group norm spans all time steps, so only equal-length
  utterances share a batch.
- ``wav2vec2`` / ``hubert`` (pretrained, or fine-tuned ``wav2vec_ctc`` /
  ``hubert_ctc`` without their CTC head): the ``transformers`` Wav2Vec2Model /
  HubertModel built from the stored options with the conversion scripts' key
  mapping, then run exactly like ``hf-audio`` (every hidden state, 50 frames/s,
  padded batches with a mask for layer-norm front ends, equal lengths for group norm).
- ``roberta*`` (``model.pt`` + ``dict.txt`` + GPT-2 ``encoder.json`` /
  ``vocab.bpe``): ``transformers``' RobertaModel with the conversion script's
  mapping, token ids as fairseq's ``roberta.encode`` gives them; token-level
  states of every layer like ``hf-text``.

``PATH`` is the checkpoint file or a folder holding ``model.pt`` (or one ``.pt``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imo_pipeline.errors import ConfigError, MediaError
from imo_pipeline.manifest import Manifest, Utterance

from . import register_extractor
from .audio_ssl import HFAudioConfig, HFAudioExtractor
from .base import by_equal_length
from .fairseq_ckpt import FairseqCheckpoint, literal_layers, read_fairseq_checkpoint
from .fairseq_models import FairseqRobertaTokenizer, build_roberta, build_w2v2, build_wav2vec
from .text_hf import HFTextConfig, HFTextExtractor

AUDIO_KINDS = ("wav2vec", "wav2vec2", "hubert")


def checkpoint_file(source: str | None, family: str) -> Path:
    """The checkpoint a ``fairseq:`` source names: the file itself, or ``model.pt`` / the only ``.pt`` of a folder."""
    if not source:
        raise ConfigError(f"{family} needs a checkpoint: --encoder fairseq:PATH/TO/model.pt")
    path = Path(source).expanduser()
    if path.is_dir():
        for name in ("model.pt", "checkpoint_best.pt"):
            if (path / name).is_file():
                return path / name
        pts = sorted(path.glob("*.pt"))
        if len(pts) != 1:
            raise ConfigError(f"fairseq folder {path} holds {len(pts)} .pt files and no model.pt; name the "
                              f"checkpoint file: --encoder fairseq:{path}/FILE.pt")
        return pts[0]
    return path


def model_kind(ck: FairseqCheckpoint) -> str:
    """``wav2vec``, ``wav2vec2``, ``hubert`` or ``roberta`` from the stored architecture name."""
    arch = ck.arch.lower()
    if arch in ("wav2vec", "audio_cpc"):
        return "wav2vec"
    for kind in ("wav2vec2", "hubert", "roberta"):
        if arch.startswith(kind):
            return kind
    raise ConfigError(f"fairseq checkpoint {ck.path}: architecture {ck.arch!r} is not one imo reads; supported: "
                      f"wav2vec (v1), wav2vec2, hubert (pretrained or fine-tuned *_ctc), roberta")


def _recorded(config, kind: str, path: Path) -> None:
    if config.kind is not None and config.kind != kind:
        raise ConfigError(f"fairseq checkpoint {path} is a {kind} model, not the {config.kind} recorded in the "
                          f"config; it is a different checkpoint")
    config.kind = kind


@dataclass
class FairseqAudioConfig(HFAudioConfig):
    kind: str | None = None                                  # wav2vec, wav2vec2 or hubert (read from the checkpoint)
    left_out: list[str] = field(default_factory=list)        # weight groups of the file not used (training heads)


@register_extractor("fairseq-audio")
class FairseqAudioExtractor(HFAudioExtractor):
    """wav2vec (v1) ``[T, 2, C]`` (z, c) at 100 frames/s, or wav2vec 2.0 / HuBERT hidden states at 50 frames/s."""

    Config = FairseqAudioConfig

    def _load(self) -> None:
        path = checkpoint_file(self.config.source, self.family)
        ck = read_fairseq_checkpoint(path)
        kind = model_kind(ck)
        if kind == "roberta":
            raise ConfigError(f"fairseq checkpoint {path} is a RoBERTa text model; extract it with --modality text")
        _recorded(self.config, kind, path)
        self.kind = kind
        self.sample_rate = int(ck.task_args.get("sample_rate") or 16000)
        stored_norm = bool(ck.task_args.get("normalize") or False)
        if kind == "wav2vec":
            model, left_out = build_wav2vec(ck)
            feat = literal_layers(model.opts["conv_feature_layers"], "wav2vec conv_feature_layers")
            agg = literal_layers(model.opts["conv_aggregator_layers"], "wav2vec conv_aggregator_layers")
            if feat[-1][0] != agg[-1][0]:
                raise ConfigError(f"fairseq checkpoint {path}: z ({feat[-1][0]}-d) and c ({agg[-1][0]}-d) differ in "
                                  f"width; imo stores layers of one width")
            self.layer_names = ("z", "c")
            self.batching = "equal"
            self.min_samples = 1 + sum((k - 1) * int(np.prod([s for _, _, s in feat[:i]])) for i, (_, k, _) in
                                       enumerate(feat))
        else:
            model, left_out = build_w2v2(ck)
            self.batching = "mask" if model.config.feat_extract_norm == "layer" else "equal"
            conv = list(zip(model.config.conv_kernel, model.config.conv_stride))
            self.min_samples = 1 + sum((k - 1) * int(np.prod([s for _, s in conv[:i]])) for i, (k, _) in
                                       enumerate(conv))
        self.normalize = stored_norm if self.config.normalize is None else bool(self.config.normalize)
        self.config.normalize = self.normalize
        self.config.left_out = left_out + [f"{g} (fine-tuned {ck.finetuned_from} head)" for g in ck.left_out]
        self.model = model.eval().to(self.device)

    def load(self, utt: Utterance, manifest: Manifest) -> np.ndarray:
        wav = super().load(utt, manifest)
        if len(wav) < self.min_samples:
            raise MediaError(f"audio {self.media_path(utt)}: {len(wav)} samples, fewer than the {self.min_samples} "
                             f"the {self.kind} encoder needs for one frame; leave it out or fix its start/end")
        return wav

    def _forward(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        if self.kind != "wav2vec":
            return super()._forward(batch)
        return by_equal_length(batch, self._wav2vec)

    def _wav2vec(self, batch: list[np.ndarray]) -> list[torch.Tensor]:
        x = torch.from_numpy(np.stack(batch)).to(self.device).float()          # (B, S), equal lengths
        if self.normalize:                                                       # fairseq's task normalize
            x = F.layer_norm(x, x.shape[1:])
        z, c = self.model(x)                                                     # (B, T, C) each
        return list(torch.stack([z, c], dim=2))                                  # B x (T, 2, C)


@dataclass
class FairseqTextConfig(HFTextConfig):
    dictionary: str | None = None     # the model's dict.txt (default: beside the checkpoint)
    bpe_dir: str | None = None        # folder with GPT-2's encoder.json and vocab.bpe (default: beside the checkpoint)
    kind: str | None = None           # roberta (read from the checkpoint)


@register_extractor("fairseq-text")
class FairseqTextExtractor(HFTextExtractor):
    """RoBERTa hidden states ``[T_tokens, n_layers + 1, D]``, token ids as fairseq's ``roberta.encode``."""

    Config = FairseqTextConfig

    def _load(self) -> None:
        path = checkpoint_file(self.config.source, self.family)
        ck = read_fairseq_checkpoint(path)
        kind = model_kind(ck)
        if kind != "roberta":
            raise ConfigError(f"fairseq checkpoint {path} is a {kind} audio model; extract it with --modality audio")
        _recorded(self.config, kind, path)
        self.model = build_roberta(ck).eval().to(self.device)
        bpe = Path(self.config.bpe_dir).expanduser() if self.config.bpe_dir else path.parent
        dictionary = Path(self.config.dictionary).expanduser() if self.config.dictionary else path.parent / "dict.txt"
        self.config.bpe_dir, self.config.dictionary = str(bpe), str(dictionary)
        self.tokenizer = FairseqRobertaTokenizer(bpe / "encoder.json", bpe / "vocab.bpe", dictionary)
        vocab = self.model.config.vocab_size
        if vocab not in (len(self.tokenizer), len(self.tokenizer) + 1):   # + <mask>, added by the masked_lm task
            raise ConfigError(f"{dictionary} gives {len(self.tokenizer)} symbols but the checkpoint embeds {vocab} "
                              f"tokens; it is not this model's dict.txt")
        self.tokenizer_files = [bpe / "encoder.json", bpe / "vocab.bpe", dictionary]
        limit = self.model.config.max_position_embeddings - (self.tokenizer.pad + 1)
        if self.config.max_tokens is not None:
            if self.config.max_tokens < 3:
                raise ConfigError(f"{self.family} max_tokens={self.config.max_tokens}: need at least 3 "
                                  f"(start, one token, end)")
            limit = min(limit, self.config.max_tokens)
        self.max_tokens = limit
        self.pad_id = self.tokenizer.pad
        self.notes: dict[str, str] = {}

    def _ids(self, text: str) -> tuple[list[int], int]:
        full = self.tokenizer.encode(text)
        if len(full) <= self.max_tokens:
            return full, len(full)
        return full[: self.max_tokens - 1] + [self.tokenizer.eos], len(full)

    def weights(self) -> dict[str, Any]:
        """The model's tensors plus a digest of the tokenizer files (a different dict.txt changes every id)."""
        h = hashlib.sha256()
        for p in self.tokenizer_files:
            h.update(p.read_bytes())
        return {**self.model.state_dict(), "tokenizer.sha256": torch.frombuffer(bytearray(h.digest()), dtype=torch.uint8)}
