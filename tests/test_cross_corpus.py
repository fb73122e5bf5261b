"""`imo evaluate RUN --manifest OTHER.jsonl --store ... --label-map ...`: a run trained on one generated corpus
evaluated on another (different label names, different ids, stores made by the same encoders)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from audio_utils import write_manifest_lines
from imo_pipeline.errors import ConfigError, StoreError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from imo_pipeline.training.evaluate import evaluate_run, parse_label_map
from imo_pipeline.training.runs import RunDir, load_run
from imo_pipeline.training.trainer import TrainConfig, train
from store_utils import BITS, QUIET, SHAPES, one_thread, synth_sequence, write_store  # noqa: F401

MODS = ("audio", "text", "video")
RUN_LABELS = ["ang", "hap", "neu", "sad"]
OTHER_LABELS = ["anger", "joy", "neutral", "sadness"]     # the same four classes, named otherwise
MAP = "anger=ang,joy=hap,neutral=neu,sadness=sad"


def make_corpus(root: Path, names: list[str], prefix: str, per_class: int, seed: int, extra: dict[str, int] = (),
                encoder: str = "synthetic", splits: bool = True) -> tuple[Path, dict[str, Path]]:
    """A corpus of the store_utils signal (one class bit per modality) with the same directions in every corpus
    (the same "encoder"), class ``c`` labelled ``names[c]``; ``extra``: label -> count of utterances of a class
    the run does not know (their frames carry a class-0 pattern)."""
    directions = {}
    drng = np.random.default_rng(1234)
    for m in MODS:
        L, D, _, _ = SHAPES[m]
        d = drng.standard_normal((L, D)).astype(np.float32)
        directions[m] = d / np.linalg.norm(d, axis=-1, keepdims=True)
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines, classes = [], []
    for c, name in enumerate(names):
        for i in range(per_class):
            line = {"id": f"{prefix}{c}-{i:03d}", "label": name}
            if splits:
                line["split"] = "train" if i < 0.6 * per_class else "valid" if i < 0.8 * per_class else "test"
            lines.append(line)
            classes.append(c)
    for name, n in dict(extra).items():
        for i in range(n):
            lines.append({"id": f"{prefix}x-{name}-{i}", "label": name, **({"split": "test"} if splits else {})})
            classes.append(0)
    order = rng.permutation(len(lines))
    lines, classes = [lines[k] for k in order], [classes[k] for k in order]
    manifest = write_manifest_lines(root / "manifest.jsonl", lines)
    fp = load_manifest(manifest).fingerprint
    stores = {}
    for m in MODS:
        items = {ln["id"]: synth_sequence(rng, m, BITS[m](c), directions[m]) for ln, c in zip(lines, classes)}
        stores[m] = write_store(root / f"{m}.zarr", m, items, fp, encoder=encoder, frame_rate=SHAPES[m][2])
    return manifest, stores


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A run trained on corpus A; corpus B (other label names and ids, some labels A lacks) with its stores."""
    root = tmp_path_factory.mktemp("xcorpus")
    a_manifest, a_stores = make_corpus(root / "a", RUN_LABELS, "a", per_class=30, seed=0)
    b_dir = root / "b"
    b_manifest, b_stores = make_corpus(b_dir, OTHER_LABELS, "utt-b", per_class=12, seed=7,
                                       extra={"surprise": 5, "disgust": 3})
    b_named = b_manifest.rename(b_dir / "CREMA-D v2.jsonl")      # a name that must be made safe
    cfg = TrainConfig(modalities=list(MODS), stores={m: str(p) for m, p in a_stores.items()},
                      manifest=str(a_manifest), head="concat", head_options={"hidden": 32}, epochs=12,
                      batch_size=16, lr=5e-3, seed=0)
    summary = train(cfg, root / "run", **QUIET)
    return {"root": root, "run": root / "run", "summary": summary, "a": (a_manifest, a_stores),
            "b": (b_named, b_stores)}


def store_args(stores: dict[str, Path]) -> list[str]:
    return [x for m, p in stores.items() for x in ("--store", f"{m[0]}={p}")]


def test_evaluate_on_another_corpus_with_a_label_map(world, imo):
    run = shutil.copytree(world["run"], world["root"] / "run-cli")
    b_manifest, b_stores = world["b"]
    r = imo("evaluate", run, "--manifest", b_manifest, *store_args(b_stores), "--label-map", MAP)
    assert r.code == 0, r.stderr
    assert "left out 8 of the 56 utterances" in r.stderr and "disgust: 3, surprise: 5" in r.stderr
    assert "(48 utterances, 8 left out (labels not mapped)" in r.stdout
    json_name, png_name = RunDir.eval_names(None, "CREMA-D v2")
    assert json_name.startswith("eval-CREMA-Dv2-") and json_name.endswith(".json")      # made safe, hashed
    res = json.loads((run / json_name).read_text())
    assert (run / png_name).read_bytes()[:4] == b"\x89PNG"
    assert res["other_corpus"] and res["n"] == 48 and res["split"] is None
    assert res["left_out"] == {"n": 8, "labels": {"disgust": 3, "surprise": 5}}
    assert res["manifest_fingerprint"] == load_manifest(b_manifest).fingerprint
    # every mapped utterance of B is scored, none of A's: ids, and the outputs equal the run on B's stored arrays
    b_ids = [u.id for u in load_manifest(b_manifest) if u.label in OTHER_LABELS]
    assert sorted(res["ids"]) == sorted(b_ids)
    loaded = load_run(run)
    st = {m: open_store(p) for m, p in b_stores.items()}
    probs = loaded.predict([{m: s.get(uid) for m, s in st.items()} for uid in res["ids"]])
    np.testing.assert_allclose(probs, np.array(res["outputs"]), atol=1e-5)
    truth = {u.id: RUN_LABELS[OTHER_LABELS.index(u.label)] for u in load_manifest(b_manifest) if u.label in OTHER_LABELS}
    acc = np.mean([RUN_LABELS[int(p.argmax())] == truth[uid] for p, uid in zip(probs, res["ids"])])
    assert res["metrics"]["wa"] == pytest.approx(acc)
    assert acc >= 0.8, acc        # the same signal made by the same encoder: the run transfers
    # the run's own evaluation is still its own file
    assert not (run / "eval-test.json").exists()


def test_label_map_file_and_split_give_the_same_scores(world, tmp_path):
    b_manifest, b_stores = world["b"]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps(dict(p.split("=") for p in MAP.split(","))))
    run = load_run(world["run"])
    every = evaluate_run(run, None, str(b_manifest), {m: str(p) for m, p in b_stores.items()}, tmp_path / "e1",
                         label_map=parse_label_map(MAP), log=lambda *a: None)
    test = evaluate_run(run, "test", str(b_manifest), {m: str(p) for m, p in b_stores.items()}, tmp_path / "e2",
                        label_map=parse_label_map(str(mapping)), log=lambda *a: None)
    assert Path(test["json"]).name == RunDir.eval_names("test", "CREMA-D v2")[0]
    b_test = {u.id for u in load_manifest(b_manifest) if u.split == "test" and u.label in OTHER_LABELS}
    assert set(test["ids"]) == b_test and test["left_out"]["n"] == 8     # the unknown labels are all split=test
    # with video dropped, OTHER's video store is not needed
    no_video = evaluate_run(run, None, str(b_manifest), {m: str(b_stores[m]) for m in ("audio", "text")},
                            tmp_path / "e3", label_map=parse_label_map(MAP), drop=["video"], log=lambda *a: None)
    assert Path(no_video["json"]).name == RunDir.eval_names(None, "CREMA-D v2", ["video"])[0]
    assert Path(no_video["json"]).name.endswith("-without-video.json") and no_video["ids"] == every["ids"]
    where = {uid: k for k, uid in enumerate(every["ids"])}
    np.testing.assert_allclose(np.array(test["outputs"]), np.array(every["outputs"])[[where[i] for i in test["ids"]]],
                               atol=1e-6)


def test_a_corpus_without_a_label_map_keeps_the_labels_it_shares(world, tmp_path):
    """Labels already named as the run's are kept as they are; the others are counted."""
    lines = [json.loads(x) for x in world["b"][0].read_text().splitlines()]
    for x in lines:
        x["label"] = {"anger": "ang", "sadness": "sad"}.get(x["label"], x["label"])
    man = write_manifest_lines(tmp_path / "partly.jsonl", lines)
    stores = {m: shutil.copytree(p, tmp_path / f"{m}.zarr") for m, p in world["b"][1].items()}
    from test_runs import restamp
    restamp(man, stores)
    res = evaluate_run(load_run(world["run"]), None, str(man), {m: str(p) for m, p in stores.items()},
                       tmp_path / "ev", log=lambda *a: None)
    assert res["n"] == 24 and res["left_out"]["labels"] == {"disgust": 3, "joy": 12, "neutral": 12, "surprise": 5}


def test_cross_corpus_refusals(world, imo, tmp_path):
    from test_runs import refused

    run, (b_manifest, b_stores), (_, a_stores) = world["run"], world["b"], world["a"]
    args = ["evaluate", run, "--manifest", b_manifest, "--out", tmp_path / "ev"]
    # the stores must be given, belong to OTHER's manifest and come from the run's encoders
    refused(imo(*args, "--label-map", MAP), "is another corpus than run", "--store a=PATH")
    wrong = {**b_stores, "text": a_stores["text"]}
    refused(imo(*args, *store_args(wrong), "--label-map", MAP), f"store {a_stores['text']} was extracted from a "
            f"different manifest")
    other_dir = tmp_path / "enc"
    _, foreign = make_corpus(other_dir, OTHER_LABELS, "utt-b", per_class=12, seed=7,
                             extra={"surprise": 5, "disgust": 3}, encoder="another-encoder")
    shutil.copy(other_dir / "manifest.jsonl", tmp_path / "same-content.jsonl")
    r = imo("evaluate", run, "--manifest", tmp_path / "same-content.jsonl", *store_args(foreign), "--label-map", MAP,
            "--out", tmp_path / "ev")
    refused(r, "has encoder_fingerprint='fp-another-encoder-2x16'", f"run {run}", "same encoder")
    # label maps: to a label the run lacks, malformed, a missing file, nothing shared
    refused(imo(*args, *store_args(b_stores), "--label-map", "joy=happy"), "--label-map joy=happy: 'happy' is not "
            "a label of the run (ang, hap, neu, sad)")
    refused(imo(*args, *store_args(b_stores), "--label-map", "joy"), "'joy' is not OTHER=RUN")
    refused(imo(*args, *store_args(b_stores), "--label-map", str(tmp_path / "nope.json")), "no such file")
    refused(imo(*args, *store_args(b_stores)), "none of the 56 utterances", "--label-map", "anger=ang")
    assert not (tmp_path / "ev").exists() or not any((tmp_path / "ev").glob("eval-*"))


def test_a_manifest_named_like_a_split_does_not_replace_the_runs_own_result(world, tmp_path):
    b_manifest, b_stores = world["b"]
    named = shutil.copy(b_manifest, tmp_path / "test.jsonl")
    run = shutil.copytree(world["run"], tmp_path / "run")
    own = evaluate_run(load_run(run), "test", log=lambda *a: None)
    other = evaluate_run(load_run(run), None, str(named), {m: str(p) for m, p in b_stores.items()},
                         label_map=parse_label_map(MAP), log=lambda *a: None)
    assert Path(own["json"]).name == "eval-test.json" and Path(other["json"]).name == "eval-corpus-test.json"
    assert json.loads((run / "eval-test.json").read_text())["ids"] == own["ids"]
    assert not json.loads((run / "eval-test.json").read_text())["other_corpus"]
    with pytest.raises(ConfigError, match="--split 'dev': use train, valid or test"):
        RunDir.eval_names("dev", "x")
    with pytest.raises(StoreError, match="another corpus"):
        evaluate_run(load_run(run), None, str(named), {}, log=lambda *a: None)
