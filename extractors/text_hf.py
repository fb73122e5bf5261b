"""``hf-text``: any ``transformers`` text encoder with its tokenizer (RoBERTa, BERT, MiniLM, ...).

Token-level hidden states of every layer, special tokens kept: row 0 of an
utterance is the start token (``<s>`` / ``[CLS]``), which is what the fusion
head pools. Long texts are **truncated** to the model's limit (its
tokenizer's ``model_max_length``, or ``max_tokens`` if smaller), keeping the
start and end tokens; every truncated utterance gets a note in the run's
notes file, so nothing is cut silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from imo_pipeline.errors import ConfigError, MediaError
from imo_pipeline.manifest import Manifest, Utterance

from . import register_extractor
from .base import Extractor, ExtractorConfig
from .hf import load_pretrained

_NO_LIMIT = 100_000  # tokenizers without a limit report a huge model_max_length


@dataclass
class HFTextConfig(ExtractorConfig):
    max_tokens: int | None = None   # cap on tokens per utterance (incl. special tokens); None: the model's limit
    lowercase: bool = False         # lower-case the text first (for cased models fed ASR-style transcripts)


@register_extractor("hf-text")
class HFTextExtractor(Extractor):
    """Hidden states ``[T_tokens, n_layers + 1, D]`` (index 0: the embedding layer).

    Utterances are batched by token count with an attention mask; padded
    positions are masked out, so a batched embedding equals a single run.
    """

    modality = "text"
    unit = "tokens"
    default_budget = 2048.0
    batching = "mask"
    Config = HFTextConfig

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer

        src = self.config.source
        if not src:
            raise ConfigError("hf-text needs a source: a hub id such as roberta-base or a local folder")
        self.tokenizer = load_pretrained(AutoTokenizer, src)
        self.model = load_pretrained(AutoModel, src).eval().to(self.device)
        limit = int(getattr(self.tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions:  # RoBERTa reserves pad_token_id + 1 positions before the first token
            offset = (self.model.config.pad_token_id + 1) if self.model.config.model_type in (
                "roberta", "xlm-roberta", "camembert") else 0
            limit = min(limit, int(positions) - offset)
        if self.config.max_tokens is not None:
            if self.config.max_tokens < 3:
                raise ConfigError(f"hf-text max_tokens={self.config.max_tokens}: need at least 3 (start, one token, end)")
            limit = min(limit, self.config.max_tokens)
        self.max_tokens = limit
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.notes: dict[str, str] = {}

    # --- input -------------------------------------------------------------------
    def _text(self, utt: Utterance) -> str:
        text = (utt.text or "").strip()
        if not text:
            why = "has no 'text' field" if utt.text is None else "has an empty 'text'"
            raise MediaError(f"utterance {utt.id!r} {why} in the manifest; add its transcript or leave it out "
                             f"of the text manifest")
        return text.lower() if self.config.lowercase else text

    def _ids(self, text: str) -> tuple[list[int], int]:
        """Token ids with special tokens, truncated to ``max_tokens``; also the untruncated count."""
        full = self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"]
        if len(full) <= self.max_tokens:
            return list(full), len(full)
        ids = self.tokenizer(text, add_special_tokens=True, truncation=True, max_length=self.max_tokens)["input_ids"]
        return list(ids), len(full)

    def media_path(self, utt: Utterance) -> str | None:
        return None

    def measure(self, utt: Utterance, manifest: Manifest) -> float:
        return float(len(self._ids(self._text(utt))[0]))

    def load(self, utt: Utterance, manifest: Manifest) -> list[int]:
        ids, n_full = self._ids(self._text(utt))
        if n_full > len(ids):
            self.notes[utt.id] = f"text truncated from {n_full} to {len(ids)} tokens (the model's limit)"
        return ids

    def dummy(self, size: float) -> list[int]:
        return self._ids(" ".join(["hello world"] * max(1, int(4 * size))))[0]

    # --- model -------------------------------------------------------------------
    def _forward(self, batch: list[list[int]]) -> list[torch.Tensor]:
        lengths = [len(ids) for ids in batch]
        ids = torch.full((len(batch), max(lengths)), self.pad_id, dtype=torch.long)   # (B, T)
        mask = torch.zeros_like(ids)                                                  # (B, T)
        for i, seq in enumerate(batch):
            ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         output_hidden_states=True)
        hidden = torch.stack(out.hidden_states, dim=2)                                # (B, T, n_hidden, D)
        return [hidden[i, :n] for i, n in enumerate(lengths)]
