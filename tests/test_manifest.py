import json

import pytest

from imo_pipeline.errors import ConfigError, ManifestError
from imo_pipeline.manifest import ShardSpec, load_manifest, write_manifest


def _write(tmp_path, text: str):
    p = tmp_path / "m.jsonl"
    p.write_text(text)
    return p


def test_loads_fields_and_resolves_paths(tmp_path):
    p = _write(tmp_path, json.dumps({"id": "a", "label": "hap", "split": "train", "fold": 1, "speaker": "F000",
                                     "audio": {"path": "x.wav", "start": 1, "end": 2.5}, "text": "hi",
                                     "targets": {"valence": 3.5}, "improvised": True}) + "\n\n")
    m = load_manifest(p)
    u = m.utterances[0]
    assert (u.id, u.label, u.split, u.fold, u.speaker, u.text) == ("a", "hap", "train", "1", "F000", "hi")
    assert u.audio.duration == 1.5 and u.targets == {"valence": 3.5} and u.extra == {"improvised": True}
    assert m.resolve("x.wav") == tmp_path.resolve() / "x.wav"
    assert load_manifest(p, data_root=tmp_path / "data").resolve("x.wav") == (tmp_path / "data").resolve() / "x.wav"


@pytest.mark.parametrize("line, message", [
    ('{"id": "a", "label": "hap"', "m.jsonl:2: not valid JSON"),
    ('{"label": "hap"}', "m.jsonl:2: missing required field 'id'"),
    ('{"id": "b", "label": ""}', "m.jsonl:2: 'label' must be a class name or a number, got ''"),
    ('{"id": "a", "label": "sad"}', "m.jsonl:2: duplicate id 'a' (first on line 1)"),
    ('{"id": "b", "label": "sad", "audio": {"path": "x.wav", "start": 2, "end": 1}}', "audio.end (1) must be greater than start"),
    ('{"id": "b", "label": "sad", "audio": {"path": "x.wav", "start": -1}}', "audio.start is negative"),
    ('{"id": "b", "label": "sad", "audio": {"start": 0}}', "field 'audio' must be"),
    ('{"id": "b", "label": "sad", "split": "dev"}', "'split' is 'dev'; use one of train, valid, test"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_lines_name_the_line(tmp_path, line, message):
    p = _write(tmp_path, '{"id": "a", "label": "hap"}\n' + line + "\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    assert message in str(e.value)


def test_missing_and_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nope.jsonl")
    with pytest.raises(ManifestError, match="no utterances"):
        load_manifest(_write(tmp_path, "\n"))


def test_fingerprint_ignores_formatting_but_not_content(tmp_path):
    a = _write(tmp_path, '{"id": "a", "label": "hap"}\n{"id":"b","label":"sad"}\n')
    fa = load_manifest(a).fingerprint
    b = tmp_path / "b.jsonl"
    b.write_text('{"label": "hap", "id": "a"}\n\n{"label":"sad", "id":"b"}\n')
    assert load_manifest(b).fingerprint == fa
    b.write_text('{"label": "hap", "id": "a"}\n{"label":"ang", "id":"b"}\n')
    assert load_manifest(b).fingerprint != fa


@pytest.mark.parametrize("n_utts, n_shards", [(10, 3), (7, 7), (3, 5), (100, 8)])
def test_shards_partition_exactly(tmp_path, n_utts, n_shards):
    m = load_manifest(write_manifest([{"id": f"u{i}", "label": "x"} for i in range(n_utts)], tmp_path / "m.jsonl"))
    parts = [m.shard(ShardSpec(i, n_shards)) for i in range(n_shards)]
    ids = [u.id for p in parts for u in p]
    assert ids == [u.id for u in m.utterances]
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["3", "3/3", "-1/2", "a/b", "1/0"])
def test_bad_shard_spec(text):
    with pytest.raises(ConfigError, match="--shard"):
        ShardSpec.parse(text)


def test_shard_spec_parse():
    assert ShardSpec.parse(" 2 / 8 ") == ShardSpec(2, 8) and str(ShardSpec(2, 8)) == "2/8"
