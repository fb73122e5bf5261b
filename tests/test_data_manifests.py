from pathlib import Path

from imo_pipeline.manifest import load_manifest

ROOT = Path(__file__).resolve().parents[1] / "data_manifests"


def test_example_manifest_follows_the_schema():
    m = load_manifest(ROOT / "example.jsonl")
    assert [u.label for u in m] == ["neu", "neu", "sad"]
    assert m.utterances[2].audio.duration == 24.5 - 20.46
