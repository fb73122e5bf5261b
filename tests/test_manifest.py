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


@pytest.mark.parametrize("line, message", [
    ('{"id": "b", "label": NaN}', "m.jsonl:2: field 'label' is nan; numbers must be finite"),
    ('{"id": "b", "label": Infinity}', "m.jsonl:2: field 'label' is inf"),
    ('{"id": "b", "label": -Infinity}', "m.jsonl:2: field 'label' is -inf"),
    ('{"id": "b", "label": 1e400}', "m.jsonl:2: field 'label' is inf"),
    ('{"id": "b", "label": "x", "targets": {"valence": NaN}}', "m.jsonl:2: field 'targets.valence' is nan"),
    ('{"id": "b", "label": "x", "interval": [0.0, Infinity]}', "m.jsonl:2: field 'interval[1]' is inf"),
    ('{"id": "b", "label": "x", "audio": {"path": "a.wav", "end": NaN}}', "m.jsonl:2: field 'audio.end' is nan"),
    ('{"id": "\\udc80", "label": "x"}', "m.jsonl:2: field 'id' holds '\\udc80' at position 0, which is not valid Unicode"),
    ('{"id": "b", "label": "a\\ud800"}', "m.jsonl:2: field 'label' holds '\\ud800' at position 1"),
    ('{"id": "b", "label": "x", "text": "hi \\udfff"}', "field 'text' holds"),
    ('{"id": "b", "label": "x", "audio": {"path": "\\udc80.wav"}}', "field 'audio.path' holds"),
    ('{"id": "b", "label": "x", "speaker": "\\udc80"}', "field 'speaker' holds"),
    ('{"id": "b", "label": "x", "fold": "\\udc80"}', "field 'fold' holds"),
    ('{"id": "b", "label": "x", "frames": "\\udc80"}', "field 'frames' holds"),
    ('{"id": "b", "label": "x", "split": "\\udc80"}', "field 'split' holds"),
    ('{"id": "b", "label": "x", "\\udc80": 1}', "field '\\udc80 (the key)' holds"),
    ('{"id": "b", "label": "x", "fold": {"a": 1}}', "'fold' must be a non-empty string or an integer"),
    ('{"id": "b", "label": "x", "frames": 3}', "'frames' must be the path of a folder of images"),
    ('{"id": "b", "label": true}', "'label' must be a class name or a number, got True"),
    ('[' * 100_000 + ']' * 100_000, "m.jsonl:2: JSON nested too deeply"),
])
def test_non_finite_numbers_bad_strings_and_deep_nesting_name_the_line(tmp_path, line, message):
    p = _write(tmp_path, '{"id": "a", "label": "hap"}\n' + line + "\n")
    with pytest.raises(ManifestError) as e:
        load_manifest(p)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_latin1_manifest_names_the_line_and_byte(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_bytes('{"id": "a", "label": "hap"}\n{"id": "b", "label": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not UTF-8 \(byte 0xe9 at column 26\); manifests are UTF-8"):
        load_manifest(p)
    p.write_bytes(b"\xef\xbb\xbf" + '{"id": "a", "label": "caf\u00e9"}\n'.encode())   # a BOM is fine
    assert load_manifest(p).utterances[0].label == "caf\u00e9"


def test_label_is_optional_and_unlabeled_lines_round_trip(tmp_path):
    p = _write(tmp_path, '{"id": "a"}\n{"id": "b", "label": null, "text": "hi"}\n{"id": "c", "label": 0}\n')
    m = load_manifest(p)
    assert [u.label for u in m] == [None, None, 0]
    assert m.utterances[0].to_json() == {"id": "a"} and m.utterances[2].to_json() == {"id": "c", "label": 0}
    again = load_manifest(write_manifest(m.utterances, tmp_path / "w.jsonl"))
    assert again.fingerprint == m.fingerprint and [u.label for u in again] == [None, None, 0]


def test_write_manifest_is_atomic_and_refuses_nan(tmp_path):
    p = write_manifest([{"id": "a", "label": "x"}], tmp_path / "sub" / "m.jsonl")
    with pytest.raises(ManifestError, match="utterance 'b' holds a NaN or infinite number"):
        write_manifest([{"id": "a", "label": "x"}, {"id": "b", "label": float("nan")}], p)
    assert p.read_text() == '{"id": "a", "label": "x"}\n' and [f.name for f in p.parent.iterdir()] == ["m.jsonl"]
