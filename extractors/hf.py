"""Loading ``transformers`` objects from a hub id or a local folder, offline-friendly."""

from __future__ import annotations

from pathlib import Path

import torch

from imo_pipeline.errors import ConfigError


#: Weights a frozen encoder's hidden states never pass through; a checkpoint may lack them (e.g. a model saved
#: without its pooler), and transformers then initialises them at random on every load.
UNUSED_WEIGHTS = ("pooler.", "masked_spec_embed")


def load_pretrained(cls, source: str, **kwargs):
    """``cls.from_pretrained(source)`` with remote code off and an error that says what to do.

    For a model class, weights the checkpoint lacks would be random at every load: a lacking pooler is
    dropped (hidden states never use it; it must not enter the fingerprint), anything else is refused.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar reports progress; theirs is per-weight noise
    local = Path(source).expanduser()
    is_model = getattr(cls, "__name__", "").startswith("AutoModel")
    try:
        # Models load in float32 whatever dtype the checkpoint was saved in (transformers 5 keeps the stored
        # dtype by default: an fp16 checkpoint would run in fp16 on CPU); GPUs use autocast on top.
        extra = {"output_loading_info": True, "dtype": torch.float32} if is_model else {}
        obj = cls.from_pretrained(str(local) if local.exists() else source, trust_remote_code=False,
                                  **extra, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        hint = ("the folder exists but is not a transformers checkpoint (config.json + weights)" if local.exists()
                else "no such local folder, and the hub id could not be loaded (offline? typo?); "
                     "download it once with `huggingface-cli download ID` or pass a local folder")
        raise ConfigError(f"encoder {source!r} could not be loaded: {hint} ({type(e).__name__}: {str(e)[:200]})") from None
    return _without_random_weights(*obj, source) if is_model else obj


def _without_random_weights(model, info: dict, source: str):
    missing = sorted(info.get("missing_keys") or ())
    used = [k for k in missing if not k.startswith(UNUSED_WEIGHTS)]
    if used:
        raise ConfigError(f"encoder {source!r}: its checkpoint lacks {len(used)} weight(s) the encoder uses "
                          f"({', '.join(used[:4])}{' ...' if len(used) > 4 else ''}); they would be random, and so "
                          f"would every embedding: pass a complete checkpoint")
    for key in missing:   # never used, but part of the fingerprint: made deterministic
        if key.startswith("pooler.") and getattr(model, "pooler", None) is not None:
            model.pooler = None
        elif not key.startswith("pooler."):
            model.get_parameter(key).data.zero_()
    return model
