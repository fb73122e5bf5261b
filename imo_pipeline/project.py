"""The project config ``imo.toml`` in the working folder.

```toml
manifest = "data_manifests/iemocap.jsonl"
data_root = "/data/IEMOCAP_full_release"   # optional, default: the manifest's folder
cache = "cache"                             # stores go to <cache>/<modality>.zarr

[encoders]
audio = "facebook/wav2vec2-base"
text = "roberta-base"
video = "fabnet:checkpoints/fabnet.pth"
```
Relative paths resolve against the folder holding ``imo.toml``. Command-line
options override the file.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ConfigError

FILENAME = "imo.toml"
MODALITIES = ("audio", "text", "video")
SHORT = {"a": "audio", "t": "text", "v": "video"}


def parse_modality(name: str) -> str:
    """``a``/``audio`` -> ``audio``; raises ConfigError naming the valid ones."""
    m = SHORT.get(name.strip(), name.strip())
    if m not in MODALITIES:
        raise ConfigError(f"unknown modality {name!r}; use audio, text or video (or a, t, v)")
    return m


@dataclass
class Project:
    root: Path
    manifest: Path | None = None
    data_root: Path | None = None
    cache: Path | None = None
    encoders: dict[str, str] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)

    def store_path(self, modality: str) -> Path:
        if self.cache is None:
            raise ConfigError(f"no store given: pass --out/--store, or set cache = \"...\" in {self.root / FILENAME}")
        return self.cache / f"{modality}.zarr"

    def require_manifest(self) -> Path:
        if self.manifest is None:
            raise ConfigError(f"no manifest given: pass --manifest, or set manifest = \"...\" in {self.root / FILENAME}")
        return self.manifest

    def encoder(self, modality: str) -> str:
        if modality not in self.encoders:
            raise ConfigError(
                f"no encoder for {modality}: pass --encoder, or add {modality} = \"...\" under [encoders] in {self.root / FILENAME}"
            )
        return self.encoders[modality]


def load_project(folder: str | Path | None = None) -> Project:
    """Read ``imo.toml`` from ``folder`` (default: the working folder); empty Project if absent."""
    root = Path(folder or Path.cwd()).resolve()
    path = root / FILENAME
    if not path.is_file():
        return Project(root)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None

    def _path(key: str) -> Path | None:
        v = raw.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            raise ConfigError(f"{path}: {key} must be a path string, got {v!r}")
        p = Path(v).expanduser()
        return p if p.is_absolute() else root / p

    encoders = raw.get("encoders", {})
    if not isinstance(encoders, dict):
        raise ConfigError(f"{path}: [encoders] must be a table of modality = \"encoder\"")
    for key in encoders:
        parse_modality(key)
    return Project(root, _path("manifest"), _path("data_root"), _path("cache"),
                   {parse_modality(k): str(v) for k, v in encoders.items()}, raw)
