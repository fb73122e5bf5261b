"""Loading ``transformers`` objects from a hub id or a local folder, offline-friendly."""

from __future__ import annotations

from pathlib import Path

from imo_pipeline.errors import ConfigError


def load_pretrained(cls, source: str, **kwargs):
    """``cls.from_pretrained(source)`` with remote code off and an error that says what to do."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own bar reports progress; theirs is per-weight noise
    local = Path(source).expanduser()
    try:
        return cls.from_pretrained(str(local) if local.exists() else source, trust_remote_code=False, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        hint = ("the folder exists but is not a transformers checkpoint (config.json + weights)" if local.exists()
                else "no such local folder, and the hub id could not be loaded (offline? typo?); "
                     "download it once with `huggingface-cli download ID` or pass a local folder")
        raise ConfigError(f"encoder {source!r} could not be loaded: {hint} ({type(e).__name__}: {str(e)[:200]})") from None
