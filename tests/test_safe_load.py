"""The safe checkpoint loader: tensors and allowed classes load; anything else is refused by name."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from imo_pipeline.errors import ConfigError
from imo_pipeline.safe_load import load_checkpoint


class Boom:
    """Unpickling this would run code (writes a marker file)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_tensors_and_allowed_classes_load(tmp_path):
    torch.save({"w": torch.arange(3.0), "args": argparse.Namespace(arch="wav2vec")}, tmp_path / "ck.pt")
    obj = load_checkpoint(tmp_path / "ck.pt", "fairseq checkpoint", allow=[argparse.Namespace])
    assert torch.equal(obj["w"], torch.arange(3.0)) and obj["args"].arch == "wav2vec"


def test_disallowed_class_is_named_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"w": torch.zeros(1), "x": Boom(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ConfigError) as e:
        load_checkpoint(tmp_path / "evil.pt", "run state", fix="delete it")
    msg = str(e.value)
    assert "holds the class" in msg and "system" in msg and "delete it" in msg
    assert "weights_only=False" not in msg and "\n" not in msg
    assert not marker.exists()
    torch.save({"args": argparse.Namespace(a=1)}, tmp_path / "ns.pt")   # allowed only where a format asks for it
    with pytest.raises(ConfigError, match="argparse.Namespace"):
        load_checkpoint(tmp_path / "ns.pt", "FabNet checkpoint")


def test_missing_truncated_and_foreign_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", "run state")
    torch.save({"w": torch.zeros(100)}, tmp_path / "ok.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:300])
    (tmp_path / "text.pt").write_text("hello\n")
    for name in ("cut.pt", "text.pt"):
        with pytest.raises(ConfigError, match="truncated or not a torch checkpoint"):
            load_checkpoint(tmp_path / name, "run state")
