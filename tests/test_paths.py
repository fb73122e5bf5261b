"""Folder names made from data never escape their parent and never collide."""

from __future__ import annotations

import pytest

from imo_pipeline.errors import ConfigError
from imo_pipeline.paths import child, is_url, safe_name


def test_plain_values_are_kept_and_others_are_confined_without_collisions(tmp_path):
    assert safe_name("Session1") == "Session1" and safe_name(3) == "3" and safe_name("a.b-c_d") == "a.b-c_d"
    hostile = ["../../escaped", "..", ".", "", "a/b", "a\\b", "/etc", "x y", "ä", "\udc80", ".hidden", "a" * 300]
    names = [safe_name(v) for v in hostile] + [safe_name("escaped"), safe_name("ab")]
    assert len(set(names)) == len(names)                 # distinct values, distinct folders
    for v, n in zip(hostile, names):
        assert n and n not in (".", "..") and "/" not in n and "\\" not in n and not n.startswith(".")
        assert child(tmp_path, n).resolve().parent == tmp_path.resolve(), v
        n.encode("utf-8")


def test_child_refuses_names_that_leave_the_folder(tmp_path):
    for bad in ("..", "../x", "a/b", "", "."):
        with pytest.raises(ConfigError, match="outside"):
            child(tmp_path, bad)
    assert child(tmp_path, "fold-1") == tmp_path / "fold-1"


def test_is_url():
    assert is_url("s3://bucket/a.zarr") and is_url("memory://x") and not is_url("/data/a.zarr") and not is_url("cache/a")
