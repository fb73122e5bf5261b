"""Frozen encoders that turn decoded media into per-utterance ``[T, L, D]`` embeddings.

One module per encoder family, registered by name with ``@register_extractor``.
An encoder is named on the command line as a registered family (``fbank``),
``family:source`` (``fabnet:ckpt.pth``), or a hub id / local folder, which goes
to the modality's ``transformers`` family (``hf-audio``, ``hf-text``, ``hf-vision``).
"""

from __future__ import annotations

from typing import Any

from imo_pipeline.errors import ConfigError
from imo_pipeline.registry import Registry

EXTRACTORS: Registry = Registry("extractor")
register_extractor = EXTRACTORS.register
DEFAULT_FAMILY = {"audio": "hf-audio", "text": "hf-text", "video": "hf-vision"}

from .base import Extractor, ExtractorConfig  # noqa: E402
from . import audio_ssl, emotion2vec, fabnet, fairseq, fbank, pixels, text_hf, vision_hf, whisper, whisper_ct2  # noqa: E402,F401  (registration)


def parse_encoder(text: str, modality: str) -> tuple[str, str | None]:
    """``fbank`` -> (fbank, None); ``fabnet:ck.pth`` -> (fabnet, ck.pth); ``facebook/wav2vec2-base`` -> (hf-audio, ...)."""
    if text in EXTRACTORS:
        return text, None
    family, sep, source = text.partition(":")
    if sep and family in EXTRACTORS:
        return family, source
    if sep and f"{family}-{modality}" in EXTRACTORS:   # one spelling, one family per modality (fairseq:PATH)
        return f"{family}-{modality}", source
    if sep and any(n.startswith(f"{family}-") for n in EXTRACTORS.names()):
        raise ConfigError(f"--encoder {text}: {family} checkpoints have no {modality} family; "
                          f"{family} families: {', '.join(n for n in EXTRACTORS.names() if n.startswith(family + '-'))}")
    if modality not in DEFAULT_FAMILY:
        raise ConfigError(f"unknown modality {modality!r}")
    return DEFAULT_FAMILY[modality], text


def extractor_class(family: str, modality: str | None = None) -> type[Extractor]:
    """The registered class of ``family``; ConfigError if unknown or not a ``modality`` encoder."""
    cls = EXTRACTORS.get(family)
    if modality is not None and cls.modality != modality:
        raise ConfigError(f"encoder {family!r} is a {cls.modality} encoder, not {modality}; "
                          f"{modality} encoders: {', '.join(n for n in EXTRACTORS.names() if EXTRACTORS.get(n).modality == modality)}")
    return cls


def build_extractor(config: dict[str, Any] | str, modality: str | None = None, **options: Any) -> Extractor:
    """An extractor from a stored config dict (with ``type``) or an encoder name plus options."""
    if isinstance(config, str):
        if modality is None:
            raise ConfigError("an encoder name needs its modality")
        family, source = parse_encoder(config, modality)
        config = {"type": family, "source": source, **{k: v for k, v in options.items() if v is not None}}
    else:
        config = {**config, **{k: v for k, v in options.items() if v is not None}}
    cls = extractor_class(config["type"], modality)
    return cls(cls.Config.from_dict(config))


__all__ = ["EXTRACTORS", "register_extractor", "Extractor", "ExtractorConfig", "build_extractor", "extractor_class",
           "parse_encoder"]
