"""Paths: store URLs vs local paths, and folder names made from data values.

A value that comes from data (a fold name, an id, a dataset name) never becomes
a path outside the folder the user named: ``safe_name`` maps it onto one
path component, and two different values never share a name.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import ConfigError

_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]")


def is_url(path: str | Path) -> bool:
    """True for an fsspec URL (``s3://``, ``memory://`` ...), False for a local path."""
    return "://" in str(path)


def safe_name(value: object) -> str:
    """One path component for a data value: kept as is when it is plain (letters, digits, ``._+=-``, not
    starting with a dot), else its plain characters plus a short hash of the value, so distinct values
    never collide (``../x`` -> ``x-3f2a9c1d``) and nothing escapes the parent folder."""
    text = str(value)
    plain = _UNSAFE.sub("", text).lstrip(".")[:64]
    if plain == text and plain:
        return plain
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{plain}-{digest}" if plain else digest


def child(parent: str | Path, name: str) -> Path:
    """``parent / name`` for a name that must stay directly inside ``parent``; ConfigError otherwise."""
    parent = Path(parent)
    path = parent / name
    if name in ("", ".", "..") or Path(name).name != name or path.resolve().parent != parent.resolve():
        raise ConfigError(f"{name!r} would be written outside {parent}; it must be a plain file or folder name")
    return path
