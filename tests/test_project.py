"""imo.toml: keys declared once (TopLevel + SECTIONS), unknown keys and wrong types refused listing the
valid keys, files that are not UTF-8 or not TOML refused in one line."""

import dataclasses
from pathlib import Path

import pytest

from imo_pipeline import project as project_mod
from imo_pipeline.errors import ConfigError
from imo_pipeline.project import load_project


def _toml(tmp_path, text: str | bytes) -> Path:
    p = tmp_path / "imo.toml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return tmp_path


def test_reads_paths_relative_to_the_file_and_encoders(tmp_path):
    p = load_project(_toml(tmp_path, 'manifest = "m.jsonl"\ndata_root = "/data/x"\ncache = "~/c"\n'
                                     '[encoders]\naudio = "fbank"\nvideo = "pixels"\n'))
    assert p.manifest == tmp_path.resolve() / "m.jsonl" and p.data_root == Path("/data/x")
    assert p.cache == Path("~/c").expanduser() and p.encoders == {"audio": "fbank", "video": "pixels"}
    assert p.section("encoders").text is None and p.encoder("audio") == "fbank"
    assert load_project(tmp_path / "empty").manifest is None   # no imo.toml: an empty project


@pytest.mark.parametrize("text, message", [
    ('manifest = "m.jsonl"\nmanifets = "x"\n', "unknown key 'manifets'; valid keys: manifest, data_root, cache "
                                               "and the sections [encoders]"),
    ('[encoder]\naudio = "fbank"\n', "unknown key 'encoder'; valid keys"),
    ('[encoders]\nspeech = "fbank"\n', "[encoders] has no option 'speech'; valid: audio, text, video"),
    ('manifest = 3\n', "option manifest: 3 is not a path (or none)"),
    ('cache = ""\n', "option cache: '' is not a path (or none)"),
    ('[encoders]\naudio = ["fbank"]\n', "[encoders] option audio: ['fbank'] is not text (or none)"),
    ('encoders = "fbank"\n', "[encoders] must be a table of keys (audio, text, video), got 'fbank'"),
    ('[manifest]\nx = 1\n', "manifest is a key, not a section"),
    ('manifest = "m.jsonl\n', "not valid TOML"),
    ('x = ' + '[' * 5000 + ']' * 5000 + '\n', "imo.toml"),
])
def test_bad_keys_and_values_are_refused_listing_the_valid_ones(tmp_path, text, message):
    with pytest.raises(ConfigError) as e:
        load_project(_toml(tmp_path, text))
    assert message in str(e.value) and str(tmp_path / "imo.toml") in str(e.value) and "\n" not in str(e.value)


def test_latin1_file_is_refused_naming_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"imo.toml:3: not UTF-8 \(byte 0xe9\); TOML files are UTF-8"):
        load_project(_toml(tmp_path, 'cache = "c"\n\nmanifest = "caf\u00e9.jsonl"\n'.encode("latin-1")))


def test_a_new_section_is_one_dataclass(tmp_path, monkeypatch):
    @dataclasses.dataclass
    class TrainSection:
        epochs: int = 30
        lr: float = 1e-3
        modalities: list[str] | None = None

    monkeypatch.setitem(project_mod.SECTIONS, "train", TrainSection)
    p = load_project(_toml(tmp_path, '[train]\nepochs = 5\nlr = 1\nmodalities = ["audio", "text"]\n'))
    assert p.section("train") == TrainSection(5, 1.0, ["audio", "text"])
    assert load_project(_toml(tmp_path, 'cache = "c"\n')).section("train") == TrainSection()
    with pytest.raises(ConfigError, match=r"\[train\] option epochs: 2.5 is not an integer"):
        load_project(_toml(tmp_path, "[train]\nepochs = 2.5\n"))
    with pytest.raises(ConfigError, match=r"\[train\] option lr: nan is not a finite number"):
        load_project(_toml(tmp_path, "[train]\nlr = nan\n"))
    with pytest.raises(ConfigError, match=r"\[train\] has no option 'epoch'; valid: epochs, lr, modalities"):
        load_project(_toml(tmp_path, "[train]\nepoch = 2\n"))


def test_cli_refuses_a_bad_imo_toml_in_one_line(imo, tmp_path):
    _toml(tmp_path, 'manifest = "m.jsonl"\ncache = "cache"\n[encoders]\naudio = "fbank"\nvideo_fps = 5\n')
    r = imo("extract", "-m", "audio", "--no-progress", cwd=tmp_path)
    assert r.code == 2 and r.stderr.count("\n") == 1
    assert "[encoders] has no option 'video_fps'; valid: audio, text, video" in r.error
    _toml(tmp_path, 'manifest = "caf\u00e9.jsonl"\n'.encode("latin-1"))
    r = imo("extract", "-m", "audio", "--no-progress", cwd=tmp_path)
    assert r.code == 2 and "imo.toml:1: not UTF-8" in r.error and not (tmp_path / "cache").exists()
