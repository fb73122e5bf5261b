"""The project config ``imo.toml`` in the working folder.

```toml
manifest = "data_manifests/iemocap.jsonl"
data_root = "/data/IEMOCAP_full_release"   # optional, default: the manifest's folder
cache = "cache"                             # stores go to <cache>/<modality>.zarr

[encoders]
audio = "facebook/wav2vec2-base"
text = "roberta-base"
video = "fabnet:checkpoints/fabnet.pth"

[train]                                     # any `imo train` option (training.config)
modalities = ["a", "t", "v"]
epochs = 30
head_options = {d_model = 128}
```
Relative paths resolve against the folder holding ``imo.toml``. Command-line
options override the file. ``imo train --config FILE.toml`` reads a file of the
same form (e.g. a recipe) and takes its ``[train]`` section instead of imo.toml's.

Every key the file may hold is declared once, here: the top-level keys by
``TopLevel`` and each ``[section]`` by a dataclass in ``SECTIONS``, whose field
types say what a value must be (see ``imo_pipeline.options``). An unknown key
or a value of the wrong type is refused with the valid keys listed. To add a
section (e.g. ``[train]``), declare a dataclass and add it to ``SECTIONS``;
``Project.section(name)`` returns its checked instance.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .options import check_fields, field_types
from .training.config import TrainSection

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
class TopLevel:
    """Keys outside any section. ``Path`` values resolve against the folder of ``imo.toml``."""

    manifest: Path | None = None     # the manifest commands read by default
    data_root: Path | None = None    # where media paths resolve (default: the manifest's folder)
    cache: Path | None = None        # stores go to <cache>/<modality>.zarr


@dataclass
class EncodersSection:
    """``[encoders]``: the encoder each modality is extracted with (as for ``imo extract --encoder``)."""

    audio: str | None = None
    text: str | None = None
    video: str | None = None


#: Every ``[section]`` of imo.toml and the dataclass that declares its keys. ``[train]`` is derived from
#: ``TrainConfig`` and ``ExperimentOptions`` (training/config.py), where the `imo train` options are declared.
SECTIONS: dict[str, type] = {"encoders": EncodersSection, "train": TrainSection}


@dataclass
class Project:
    root: Path
    manifest: Path | None = None
    data_root: Path | None = None
    cache: Path | None = None
    encoders: dict[str, str] = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    sections: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / FILENAME

    def section(self, name: str) -> Any:
        """The checked ``[name]`` section (its dataclass with defaults when the file has none)."""
        if name not in SECTIONS:
            raise ConfigError(f"imo.toml has no section [{name}]; sections: {', '.join(SECTIONS)}")
        return self.sections.get(name) or SECTIONS[name]()

    def store_path(self, modality: str) -> Path:
        if self.cache is None:
            raise ConfigError(f"no store given: pass --out/--store, or set cache = \"...\" in {self.path}")
        return self.cache / f"{modality}.zarr"

    def require_manifest(self) -> Path:
        if self.manifest is None:
            raise ConfigError(f"no manifest given: pass --manifest, or set manifest = \"...\" in {self.path}")
        return self.manifest

    def encoder(self, modality: str) -> str:
        if modality not in self.encoders:
            raise ConfigError(
                f"no encoder for {modality}: pass --encoder, or add {modality} = \"...\" under [encoders] in {self.path}"
            )
        return self.encoders[modality]


def _read_toml(path: Path) -> dict:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 (byte {data[e.start]:#04x}); TOML files are UTF-8: "
                          f"convert it, e.g. iconv -f latin1 -t utf-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a project config; see `imo --help` for its keys") from None


def _resolve_paths(obj: Any, root: Path) -> Any:
    """Relative ``Path`` fields of a section made absolute against ``root`` (the folder of imo.toml), and the
    values of a table field marked as paths (``metadata={"path": True}``, e.g. ``[train] stores``; URLs kept)."""
    from .paths import is_url

    def absolute(v: Path) -> Path:
        v = v.expanduser()
        return v if v.is_absolute() else root / v

    changes = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Path):
            changes[f.name] = absolute(v)
        elif isinstance(v, dict) and f.metadata.get("path"):
            changes[f.name] = {k: x if is_url(str(x)) else str(absolute(Path(x))) for k, x in v.items()}
    return dataclasses.replace(obj, **changes)


def _build(cls: type, values: Any, what: str, root: Path) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{what} must be a table of keys ({', '.join(field_types(cls))}), got {values!r}")
    return _resolve_paths(cls(**check_fields(cls, values, what)), root)


def load_project(folder: str | Path | None = None) -> Project:
    """Read ``imo.toml`` from ``folder`` (default: the working folder); empty Project if absent.

    Raises ConfigError (one line, naming the file) for a file that is not UTF-8 or not TOML, an unknown
    key or section (the valid ones are listed) and a value of the wrong type.
    """
    root = Path(folder or Path.cwd()).resolve()
    path = root / FILENAME
    if not path.is_file():
        return Project(root)
    return read_config_file(path)


def read_config_file(path: str | Path) -> Project:
    """A TOML file of imo.toml's form (e.g. ``imo train --config recipe.toml``), checked like imo.toml; its
    relative paths resolve against its own folder."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist{' (it is a folder)' if path.is_dir() else ''}; "
                          f"pass a TOML file, e.g. recipes/sse-ft-iemocap.toml")
    root = path.parent
    raw = _read_toml(path)
    top_keys = list(field_types(TopLevel))
    unknown = sorted(k for k in raw if k not in top_keys and k not in SECTIONS)
    if unknown:
        raise ConfigError(f"{path}: unknown key {', '.join(map(repr, unknown))}; valid keys: "
                          f"{', '.join(top_keys)} and the sections {', '.join(f'[{s}]' for s in SECTIONS)}")
    for name in top_keys:
        if isinstance(raw.get(name), dict):
            raise ConfigError(f"{path}: {name} is a key, not a section; write {name} = \"...\" above the first [section]")
    top = _build(TopLevel, {k: v for k, v in raw.items() if k in top_keys}, str(path), root)
    sections = {name: _build(cls, raw[name], f"{path} [{name}]", root) for name, cls in SECTIONS.items() if name in raw}
    enc = sections.get("encoders") or EncodersSection()
    encoders = {m: getattr(enc, m) for m in MODALITIES if getattr(enc, m) is not None}
    return Project(root, top.manifest, top.data_root, top.cache, encoders, raw, sections)
