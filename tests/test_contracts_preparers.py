"""The preparer contract, for EVERY registered dataset preparer (fixtures: tests/contracts.py, see its top).

On its generated release each preparer writes a manifest that loads, with unique UTF-8 ids, and a report;
a bad root is refused in one line; a bad ``imo prepare --out`` is refused before the release is read, and
nothing is half-written.
"""

import json

import pytest

from contracts import PREPARER_FIXTURES
from imo_pipeline.errors import ConfigError, ImoError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import PREPARERS, load_all, prepare
from imo_pipeline.prepare.base import report_path

load_all()
NAMES = PREPARERS.names()


def test_every_registered_preparer_has_a_fixture():
    missing = sorted(set(NAMES) - set(PREPARER_FIXTURES))
    assert not missing, (f"registered preparer(s) {missing} have no contract fixture: add a builder to "
                         f"PREPARER_FIXTURES in tests/contracts.py (see the top of that file)")
    assert not set(PREPARER_FIXTURES) - set(NAMES), "PREPARER_FIXTURES names a preparer that is not registered"


def _fixture(name, folder):
    if name not in PREPARER_FIXTURES:
        pytest.fail(f"preparer {name!r} is registered but has no fixture in tests/contracts.py PREPARER_FIXTURES")
    return PREPARER_FIXTURES[name](folder)


@pytest.mark.parametrize("name", NAMES)
def test_writes_a_valid_manifest_with_unique_utf8_ids_and_a_report(tmp_path, name):
    fx = _fixture(name, tmp_path / "release")
    out = tmp_path / "out" / f"{name}.jsonl"
    utts, report = prepare(name, fx.root, out, **fx.options)
    assert utts and report.total == len(utts)
    manifest = load_manifest(out, data_root=fx.root)       # the loader's checks: finite numbers, UTF-8, unique ids
    ids = [u.id for u in manifest]
    assert ids == [u.id for u in utts] and len(set(ids)) == len(ids)
    assert all(isinstance(i, str) and i and i.encode("utf-8") for i in ids)
    for u in manifest:
        for seg in (u.audio, u.video):
            if seg is not None:
                assert manifest.resolve(seg.path).is_relative_to((fx.base or fx.root).resolve()), seg.path
    saved = json.loads(report_path(out).read_text(encoding="utf-8"))
    assert saved["dataset"].startswith(name) and saved["utterances"] == len(utts)
    assert set(saved["problems"]) == {"skipped", "missing", "unknown_label", "mismatched_id"}
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, report_path(out).name])


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_root_is_refused(tmp_path, name):
    if getattr(PREPARERS.get(name), "takes_files", False):     # media, emobox, lhotse: ROOT may be a file
        (tmp_path / "empty").mkdir()
        for root in (tmp_path / "nowhere", tmp_path / "empty"):
            with pytest.raises(ImoError) as e:
                prepare(name, root, tmp_path / "m.jsonl")
            assert "\n" not in str(e.value) and str(root) in str(e.value)
        assert not (tmp_path / "m.jsonl").exists() and not report_path(tmp_path / "m.jsonl").exists()
        return
    with pytest.raises(ConfigError, match="is not a folder; pass the folder the release unpacks into"):
        prepare(name, tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is not a folder"):
        prepare(name, tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImoError, match="empty|no utterances|not found|could not|no "):
        prepare(name, tmp_path / "empty", tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists() and not report_path(tmp_path / "m.jsonl").exists()


def test_cli_refuses_an_unwritable_out_and_writes_nothing(imo, tmp_path):
    fx = _fixture("ravdess", tmp_path / "release")
    (tmp_path / "afile").write_text("keep")
    r = imo("prepare", "ravdess", fx.root, "--out", tmp_path / "afile" / "m.jsonl")
    assert r.code == 2 and r.stderr.count("\n") == 1
    assert r.error == f"error: --out {tmp_path / 'afile' / 'm.jsonl'}: {tmp_path / 'afile'} is a file, not a folder; " \
                      f"choose a path in a folder"
    (tmp_path / "adir.jsonl").mkdir()
    r = imo("prepare", "ravdess", fx.root, "--out", tmp_path / "adir.jsonl")
    assert r.code == 2 and f"--out {tmp_path / 'adir.jsonl'} is a folder; give the manifest file to write" in r.error
    assert (tmp_path / "afile").read_text() == "keep" and not any((tmp_path / "adir.jsonl").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir.jsonl", "afile", "release"]
    r = imo("prepare", "ravdess", fx.root, "--out", tmp_path / "new" / "m.jsonl")
    assert r.code == 0, r.stderr
    assert load_manifest(tmp_path / "new" / "m.jsonl", data_root=fx.root)


def test_a_failed_write_leaves_the_old_manifest_and_no_temp_files(tmp_path, monkeypatch):
    import os

    fx = _fixture("cremad", tmp_path / "release")
    out = tmp_path / "m.jsonl"
    out.write_text("old\n")
    real = os.replace

    def fail_on_manifest(src, dst):
        if str(dst) == str(out):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_manifest)
    with pytest.raises(ConfigError, match=r"--out .*m.jsonl: could not be written \(No space left on device\)"):
        prepare("cremad", fx.root, out)
    assert out.read_text() == "old\n" and not list(tmp_path.glob(".*tmp"))
