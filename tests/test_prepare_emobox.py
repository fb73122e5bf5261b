"""`imo prepare emobox`: EmoBox metadata and folds, on fixtures written in its published format.

The fixtures follow emo-box/EmoBox's ``data/`` folder as published: ``<name>/<name>.jsonl``,
``<name>/label_map.json``, ``<name>/fold_<k>/<name>_{train,valid,test}_fold_<k>.jsonl``, one
record per line with the same keys in the same order, e.g. (data/cafe/fold_1/cafe_test_fold_1.jsonl)::

    {"key": "cafe-08-P-2-1", "dataset": "cafe", "wav": "downloads/cafe/CaFE_48k/Peur/Fort/08-P-2-1.wav",
     "type": "raw", "sample_rate": 48000, "num_frame": 168833.0, "task": "category",
     "length": 3.517354166666667, "emo": "p", "channel": 1}

plus the older ``{"key", "dataset", "audio", ..., "label"}`` records of emodb's ``*_fold1.jsonl``
copies, pavoque's ``start_time``/``end_time`` and MELD's mp4 clips with an official valid list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from imo_pipeline.cli import app
from imo_pipeline.errors import ConfigError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import prepare
from imo_pipeline.prepare.emobox import valid_by_hash

runner = CliRunner()
CAFE_MAP = {"c": "Angry", "d": "Disgust", "j": "Happy", "n": "Neutral", "p": "Fear", "s": "Surprise", "t": "Sad"}
CAFE_DIRS = {"c": "Col\u0160re", "d": "D\u201ago\u2013t", "j": "Joie", "n": "Neutre", "p": "Peur", "s": "Surprise",
             "t": "Tristesse"}


def record(ds: str, key: str, wav: str, emo: str, sr: int = 48000, length: float = 3.5, legacy: bool = False,
           **extra) -> dict:
    if legacy:
        return {"key": key, "dataset": ds, "audio": wav, "type": "raw", "sample_rate": sr,
                "num_frame": float(round(sr * length)), "task": "category", "label": emo}
    rec = {"key": key, "dataset": ds, "wav": wav, "type": "raw", "sample_rate": sr,
           "num_frame": float(round(sr * length)), "task": "category", "length": length, "emo": emo, "channel": 1}
    rec.update(extra)
    return rec


def write_jsonl(path: Path, recs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def cafe(data: Path) -> dict[str, dict]:
    """CaFE as EmoBox publishes it: 6 speakers x 7 emotions, 3 speaker-independent folds, no valid lists."""
    recs = {}
    for spk in range(1, 7):
        for emo in CAFE_MAP:
            key = f"cafe-{spk:02d}-{emo.upper()}-1-{spk % 3 + 1}"
            wav = f"downloads/cafe/CaFE_48k/{CAFE_DIRS[emo]}/{'' if emo == 'n' else 'Faible/'}{key[5:]}.wav"
            recs[key] = record("cafe", key, wav, emo, length=3.0 + spk / 10)
    write_jsonl(data / "cafe" / "cafe.jsonl", list(recs.values()))
    (data / "cafe" / "label_map.json").write_text(json.dumps(CAFE_MAP, indent=4))
    for k in (1, 2, 3):
        test_spk = {2 * k - 1, 2 * k}
        test = [r for key, r in recs.items() if int(key[5:7]) in test_spk]
        train = [r for key, r in recs.items() if int(key[5:7]) not in test_spk]
        write_jsonl(data / "cafe" / f"fold_{k}" / f"cafe_test_fold_{k}.jsonl", test)
        write_jsonl(data / "cafe" / f"fold_{k}" / f"cafe_train_fold_{k}.jsonl", train)
    return recs


def test_cafe_folds_splits_and_labels(tmp_path):
    recs = cafe(tmp_path / "data")
    utts, report = prepare("emobox", tmp_path / "data", tmp_path / "m.jsonl", name="cafe")
    by_id = {u.id: u for u in utts}
    assert sorted(by_id) == sorted(recs) and len(utts) == 42
    u = by_id["cafe-03-P-1-1"]
    assert (u.label, u.fold, u.extra["emobox_emo"]) == ("Fear", "2", "p")
    assert u.audio.path == "downloads/cafe/CaFE_48k/Peur/Faible/03-P-1-1.wav" and u.audio.start == 0.0
    assert u.video is None
    assert {u.fold for u in utts} == {"1", "2", "3"}
    assert all(u.fold == str((int(u.id[5:7]) + 1) // 2) for u in utts)            # the fold whose test list holds it
    # split from fold 1: speakers 1-2 test; the training part split by the key-hash rule
    assert all((u.split == "test") == (u.fold == "1") for u in utts)
    train_part = [u for u in utts if u.fold != "1"]
    assert all(u.split == ("valid" if valid_by_hash(u.id, 0.2) else "train") for u in train_part)
    assert 0 < sum(u.split == "valid" for u in train_part) < len(train_part) / 2
    assert any("sha256(key) < 0.2" in n for n in report.notes) and not report.issues
    m = load_manifest(tmp_path / "m.jsonl")
    assert [x.id for x in m] == [u.id for u in utts]

    utts2, _ = prepare("emobox", tmp_path / "data" / "cafe", None, fold=2, labels="raw")
    by2 = {u.id: u for u in utts2}
    assert by2["cafe-03-P-1-1"].split == "test" and by2["cafe-03-P-1-1"].label == "p"
    for u in train_part:                   # the same key is valid in every fold whose training part holds it
        if by2[u.id].split != "test":
            assert by2[u.id].split == u.split
    with pytest.raises(ConfigError, match=r"--fold 9: EmoBox's cafe has folds 1, 2, 3"):
        prepare("emobox", tmp_path / "data", None, name="cafe", fold=9)


def test_inputs_media_check_and_unknown_labels(tmp_path):
    data = tmp_path / "EmoBox" / "data"
    recs = cafe(data)
    bad = record("cafe", "cafe-07-X-1-1", "downloads/cafe/CaFE_48k/X/07-X-1-1.wav", "x")
    write_jsonl(data / "cafe" / "cafe.jsonl", list(recs.values()) + [bad])
    with pytest.raises(ConfigError, match="pick one with --dataset NAME"):
        prepare("emobox", data, None)
    for root, opts in ((data / "cafe" / "cafe.jsonl", {}), (data / "cafe", {}), (data, {"name": "cafe"})):
        utts, report = prepare("emobox", root, None, **opts)
        assert len(utts) == 42
        assert [(i.kind, i.reason.split(":")[0]) for i in report.issues] == [("unknown_label", "cafe-07-X-1-1")]
    # one fold file alone: its part is the split, no folds
    utts, _ = prepare("emobox", data / "cafe" / "fold_2" / "cafe_test_fold_2.jsonl", None)
    assert len(utts) == 14 and {u.split for u in utts} == {"test"} and {u.fold for u in utts} == {None}
    # --data-root checks the audio files: one missing is reported and left out
    root = tmp_path / "EmoBox"
    for r in list(recs.values())[1:]:
        (root / r["wav"]).parent.mkdir(parents=True, exist_ok=True)
        (root / r["wav"]).write_bytes(b"RIFF")
    out = tmp_path / "m.jsonl"
    res = runner.invoke(app, ["prepare", "emobox", str(data), "--dataset", "cafe", "--data-root", str(root),
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "missing: 1" in res.output and "unknown_label: 1" in res.output and f"--data-root {root}" in res.output
    assert len(load_manifest(out, root)) == 41
    report = json.loads(out.with_name("m.report.json").read_text())
    assert report["problems"]["missing"] == 1 and report["utterances"] == 41


def test_official_valid_lists_video_clips_old_format_and_time_cuts(tmp_path):
    data = tmp_path / "data"
    meld = {p: [record("meld", f"meld-dia{d}_utt{u}-{tag}", f"downloads/meld/{sub}/dia{d}_utt{u}.mp4", emo, length=2.0)
                for d in range(2) for u, emo in enumerate(("neutral", "joy", "anger"))]
            for p, tag, sub in (("train", "train", "train/train_splits"), ("valid", "dev", "dev_splits_complete"),
                                ("test", "test", "output_repeated_splits_test"))}
    write_jsonl(data / "meld" / "meld.jsonl", [r for p in meld.values() for r in p])
    (data / "meld" / "label_map.json").write_text(json.dumps({"neutral": "Neutral", "joy": "Happy", "anger": "Angry"}))
    for p, recs in meld.items():
        write_jsonl(data / "meld" / "fold_1" / f"meld_{p}_fold_1.jsonl", recs)
    utts, report = prepare("emobox", data, None, name="meld")
    by = {u.id: u for u in utts}
    assert by["meld-dia1_utt2-dev"].split == "valid" and by["meld-dia0_utt1-test"].split == "test"
    assert sum(u.split == "valid" for u in utts) == 6 and {u.fold for u in utts} == {None}
    u = by["meld-dia0_utt1-train"]
    assert u.label == "Happy" and u.video == u.audio and u.audio.path.endswith("train_splits/dia0_utt1.mp4")
    assert not any("sha256" in n for n in report.notes)

    # emodb: the older *_fold1.jsonl copies (audio/label records) sit beside *_fold_1.jsonl; the latter win
    emo = [record("emodb", f"emodb-0{s}a0{i}Wa", f"downloads/emodb/wav/0{s}a0{i}Wa.wav", e, sr=16000)
           for s in (3, 8) for i, e in enumerate(("anger", "sad", "happy"))]
    write_jsonl(data / "emodb" / "emodb.jsonl", emo)
    (data / "emodb" / "label_map.json").write_text(json.dumps({"anger": "Angry", "sad": "Sad", "Happy": "Happy"}))
    for k, spk in ((1, "3"), (2, "8")):
        test = [r for r in emo if r["key"][7] == spk]
        train = [r for r in emo if r["key"][7] != spk]
        write_jsonl(data / "emodb" / f"fold_{k}" / f"emodb_test_fold_{k}.jsonl", test)
        write_jsonl(data / "emodb" / f"fold_{k}" / f"emodb_train_fold_{k}.jsonl", train)
        legacy = lambda rs: [record("emodb", r["key"], r["wav"], r["emo"], sr=16000, legacy=True) for r in rs]  # noqa: E731
        write_jsonl(data / "emodb" / f"fold_{k}" / f"emodb_test_fold{k}.jsonl", legacy(train))   # would swap roles
        write_jsonl(data / "emodb" / f"fold_{k}" / f"emodb_train_fold{k}.jsonl", legacy(test))
    utts, report = prepare("emobox", data / "emodb", None)
    assert {u.id: u.fold for u in utts} == {r["key"]: ("1" if r["key"][7] == "3" else "2") for r in emo}
    assert sorted({u.label for u in utts}) == ["Angry", "Happy", "Sad"] and not report.issues   # "happy" -> "Happy"
    assert any("2 emotion code(s) matched a label_map.json key only when case is ignored" in n for n in report.notes)
    # a dataset published only in the older record format still reads
    only_old = data / "old" / "old"
    write_jsonl(only_old / "fold_1" / "old_test_fold1.jsonl",
                [record("old", "old-a", "downloads/old/a.wav", "anger", legacy=True)])
    write_jsonl(only_old / "fold_1" / "old_train_fold1.jsonl",
                [record("old", "old-b", "downloads/old/b.wav", "sad", legacy=True)])
    utts, _ = prepare("emobox", only_old, None)
    assert sorted((u.id, u.label, u.split, u.audio.path) for u in utts) == [
        ("old-a", "anger", "test", "downloads/old/a.wav"), ("old-b", "sad", "train", "downloads/old/b.wav")]

    # pavoque: utterances cut from long recordings by start_time/end_time
    pav = [record("pavoque", "pavoque-m0372-poker", "downloads/pavoque/pavoque-poker.flac", "poker", sr=44100,
                  length=7.92, start_time=1917.34, end_time=1925.26)]
    write_jsonl(data / "pavoque" / "pavoque.jsonl", pav)
    write_jsonl(data / "pavoque" / "fold_1" / "pavoque_test_fold_1.jsonl", pav)
    (data / "pavoque" / "label_map.json").write_text(json.dumps({"poker": "Poker"}))
    (u,), _ = prepare("emobox", data, None, name="pavoque")
    assert (u.audio.start, u.audio.end, u.label, u.split) == (1917.34, 1925.26, "Poker", "test")
