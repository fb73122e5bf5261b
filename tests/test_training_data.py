"""Training data: preprocessing, in-memory vs lazy tables, batching and masks, and the refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from imo_pipeline.errors import ManifestError, StoreError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.training.data import Preprocess, bucket_batches, collate, open_corpus, prefetch
from imo_pipeline.training.trainer import TrainConfig, train
from store_utils import QUIET, one_thread, make_partial_info_set, write_store  # noqa: F401  (one_thread: autouse fixture)



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_partial_info_set(tmp_path_factory.mktemp("d"), per_class=10, seed=3)


def test_downsample_and_layer_selection_by_hand():
    x = np.arange(2 * 7 * 3, dtype=np.float32).reshape(7, 2, 3)  # (T=7, L=2, D=3)
    out = Preprocess(layers=[1], downsample=3).apply(x.astype(np.float16))
    assert out.dtype == np.float16 and out.shape == (3, 1, 3)
    np.testing.assert_allclose(out[0, 0], x[0:3, 1].mean(0))
    np.testing.assert_allclose(out[2, 0], x[6, 1])            # the last, partial window averages its own frame
    assert Preprocess([0, 1], 1).apply(x).shape == (7, 2, 3)
    assert Preprocess([0], 3).out_length(7) == 3


def test_in_memory_and_lazy_tables_hold_the_same_values(data):
    manifest, stores = data
    man = load_manifest(manifest)
    mem = open_corpus(man, stores, in_memory="yes", **QUIET)
    lazy = open_corpus(man, stores, in_memory="no", **QUIET)
    assert mem.tables["audio"].values is not None and lazy.tables["audio"].values is None
    assert mem.tables["audio"].prep.downsample == 4 and mem.tables["text"].prep.downsample == 1  # 50 fps -> 12.5
    assert [u.id for u in mem.utterances] == [u.id for u in man]
    for k in (0, 7, len(mem) - 1):
        for m in stores:
            assert mem.item(k)[m].dtype == np.float16
            np.testing.assert_array_equal(mem.item(k)[m], lazy.item(k)[m])


def test_collate_pads_and_masks():
    items = [{"audio": np.ones((3, 1, 2), np.float16)}, {"audio": 2 * np.ones((5, 1, 2), np.float16)}]
    x, mask = collate(items)["audio"]
    assert x.dtype == torch.float32 and x.shape == (2, 5, 1, 2)
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert x[0, 3:].abs().sum() == 0 and x[1].eq(2).all()


def test_bucketed_batches_cover_every_index_once_with_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 1000, 500)
    idx = np.arange(500)
    got = bucket_batches(idx, lengths, 16, np.random.default_rng(1), pool=50)
    assert sorted(np.concatenate(got).tolist()) == idx.tolist()
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in got])
    shuffled = np.mean([lengths[b].max() - lengths[b].min() for b in np.array_split(rng.permutation(500), 32)])
    assert spread < shuffled / 5
    again = bucket_batches(idx, lengths, 16, np.random.default_rng(1), pool=50)
    assert all((a == b).all() for a, b in zip(got, again))


def test_prefetch_keeps_order_and_raises_errors():
    assert list(prefetch(iter(range(50)), depth=3)) == list(range(50))

    def bad():
        yield 1
        raise StoreError("boom")

    with pytest.raises(StoreError, match="boom"):
        list(prefetch(bad()))


# --- refusals ---------------------------------------------------------------------------------------------------


def test_refuses_a_store_from_another_manifest(data, tmp_path):
    manifest, stores = data
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    lines[0]["label"] = "hap" if lines[0]["label"] != "hap" else "sad"
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(StoreError, match=r"audio.zarr was extracted from a different manifest .*other.jsonl"):
        open_corpus(load_manifest(other), stores, **QUIET)


def test_refuses_a_store_whose_ids_do_not_match(data, tmp_path):
    manifest, stores = data
    man = load_manifest(manifest)
    items = {u.id: np.zeros((3, 1, 12), np.float32) for u in man}
    items["stranger"] = np.zeros((3, 1, 12), np.float32)
    bad = write_store(tmp_path / "text.zarr", "text", items, man.fingerprint)
    with pytest.raises(StoreError, match=r"holds 1 id\(s\) not in .*manifest.jsonl \(e.g. 'stranger'\)"):
        open_corpus(man, {"audio": stores["audio"], "text": bad}, **QUIET)
    del items["stranger"], items[man.utterances[5].id]
    short = write_store(tmp_path / "short.zarr", "text", items, man.fingerprint)
    with pytest.raises(StoreError, match=rf"utterance '{man.utterances[5].id}' is missing from text store"):
        open_corpus(man, {"text": short}, **QUIET)


def test_refuses_a_missing_modality_store(data, tmp_path):
    manifest, stores = data
    with pytest.raises(StoreError, match=r"no video store at .*nowhere.zarr: run `imo extract --modality video`"):
        open_corpus(load_manifest(manifest), {"audio": stores["audio"], "video": tmp_path / "nowhere.zarr"}, **QUIET)


def test_refuses_a_store_given_for_the_wrong_modality(data):
    manifest, stores = data
    with pytest.raises(StoreError, match="holds text embeddings but was given for audio"):
        open_corpus(load_manifest(manifest), {"audio": stores["text"]}, **QUIET)


def test_refuses_parts_made_by_different_encoders(data, tmp_path):
    manifest, _ = data
    man = load_manifest(manifest)
    ids = [u.id for u in man]
    half = len(ids) // 2
    a = write_store(tmp_path / "a.zarr", "text", {i: np.ones((2, 1, 12), np.float32) for i in ids}, man.fingerprint,
                    n_parts=2)
    b = write_store(tmp_path / "b.zarr", "text", {i: np.ones((2, 1, 20), np.float32) for i in ids}, man.fingerprint,
                    encoder="other", n_parts=2)
    assert len(ids[half:]) > 0
    shutil.rmtree(a / "part-00001-of-00002")
    shutil.copytree(b / "part-00001-of-00002", a / "part-00001-of-00002")
    with pytest.raises(StoreError, match="parts were made by different encoders"):
        open_corpus(man, {"text": a}, **QUIET)


def test_refuses_an_unfinished_store(data, tmp_path):
    manifest, stores = data
    copy = shutil.copytree(stores["text"], tmp_path / "text.zarr")
    attrs = copy / "part-00000-of-00001" / "zarr.json"
    meta = json.loads(attrs.read_text())
    meta["attributes"]["status"] = "writing"
    attrs.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match=r"part 0 is writing .*imo extract --modality text --shard 0/1"):
        open_corpus(load_manifest(manifest), {"text": copy}, **QUIET)


def test_refuses_labels_that_appear_only_outside_train(tmp_path):
    manifest, stores = make_partial_info_set(tmp_path / "d", per_class=5, modalities=("text",))
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    victim = next(x for x in lines if x["split"] == "test")
    victim["label"] = "fru"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    fp = load_manifest(manifest).fingerprint
    for m in stores:  # stores re-stamped for the edited manifest (labels are part of its fingerprint)
        zj = stores[m] / "zarr.json"
        meta = json.loads(zj.read_text())
        meta["attributes"]["imo"]["manifest_fingerprint"] = fp
        zj.write_text(json.dumps(meta))
    cfg = TrainConfig(modalities=["text"], stores={"text": str(stores["text"])}, manifest=str(manifest), epochs=1)
    with pytest.raises(ManifestError, match=rf"label 'fru' appears in 1 utterance\(s\) outside train \(e.g. '{victim['id']}'\)"):
        train(cfg, tmp_path / "run", **QUIET)


def test_failed_utterances_are_excluded_and_reported(tmp_path):
    manifest, stores = make_partial_info_set(tmp_path / "d", per_class=6, modalities=("audio", "text"),
                                             drop={"audio": ["ang_001", "sad_002"]})
    logs = []
    cfg = TrainConfig(modalities=["audio", "text"], stores={m: str(p) for m, p in stores.items()},
                      manifest=str(manifest), epochs=1, head_options={"d_model": 16, "n_heads": 2})
    train(cfg, tmp_path / "run", progress=False, log=logs.append)
    assert any("excluded 2 utterance(s) whose extraction failed" in line for line in logs)
    excluded = json.loads((tmp_path / "run" / "excluded.json").read_text())
    assert excluded == {"ang_001": "audio: decode error: corrupt file", "sad_002": "audio: decode error: corrupt file"}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["splits"] == {"train": 14, "valid": 4, "test": 4}
