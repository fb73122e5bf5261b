"""CMU-MultimodalSDK .csd import into a real Zarr store, HDF5/.csd export, and training a head on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from imo_pipeline.csd import CsdFile, import_csd
from imo_pipeline.errors import StoreError
from imo_pipeline.export import export_store
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from release_utils import text

D = 5
VIDS = ["vidA", "vidB", "vidC", "vidD"]


def sdk_csd(path: Path, root: str, entries: dict, metadata: dict) -> Path:
    """Write a computational sequence exactly as the SDK's file_ops.write_CSD does, with plain h5py."""
    with h5py.File(path, "w") as h5:
        g = h5.create_group(root)
        data = g.create_group("data")
        for vid, (feats, ints) in entries.items():
            e = data.create_group(vid)
            e.create_dataset("features", data=feats)
            e.create_dataset("intervals", data=ints)
        meta = g.create_group("metadata")
        for k, v in metadata.items():
            meta.create_dataset(k, (1,), dtype=h5py.special_dtype(vlen=str))
            meta[k][0] = json.dumps(v)
    return path


def frames(vid_index: int, n: int, rate: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows whose first column encodes the time and whose second encodes the video (checkable)."""
    t = np.arange(n) / rate
    feats = np.zeros((n, D), np.float32)
    feats[:, 0], feats[:, 1] = t, vid_index
    feats[:, 2:] = np.random.default_rng(vid_index).standard_normal((n, D - 2))
    return feats, np.stack([t, t + 1 / rate], axis=1)


@pytest.fixture
def mosi_like(tmp_path):
    """A manifest of 4 videos x 3 segments (as `imo prepare mosi` writes: video_id + interval) and a COVAREP-like
    unaligned .csd keyed by video id (10 frames/s, with -inf values), missing video vidD."""
    lines = []
    rng = np.random.default_rng(0)
    for i, vid in enumerate(VIDS):
        for k, (s, e) in enumerate([(0.0, 2.0), (2.0, 3.5), (4.0, 6.0)], 1):
            split = ["train", "train", "valid", "test"][(i + k) % 4]
            label = float(np.round(rng.uniform(-3, 3), 2))
            lines.append({"id": f"{vid}_{k}", "label": label, "split": split, "speaker": vid,
                          "audio": {"path": f"Audio/{vid}_{k}.wav"}, "video_id": vid, "interval": [s, e]})
    man = tmp_path / "mosi.jsonl"
    text(man, "".join(json.dumps(x) + "\n" for x in lines))
    entries = {vid: frames(i, 60) for i, vid in enumerate(VIDS[:3])}
    entries["vidB"][0][5, 3] = -np.inf
    entries["vidB"][0][6, 4] = np.nan
    csd = sdk_csd(tmp_path / "CMU_MOSI_COVAREP.csd", "COVAREP", entries,
                  {"root name": "COVAREP", "computational sequence description": "COVAREP acoustic features",
                   "dimension names": [f"f{j}" for j in range(D)], "alignment compatible": True})
    return man, csd


def test_reads_the_sdk_layout(mosi_like):
    _, csd_path = mosi_like
    with CsdFile(csd_path) as csd:
        assert csd.root_name == "COVAREP" and sorted(csd.keys()) == ["vidA", "vidB", "vidC"]
        assert csd.metadata["dimension names"] == ["f0", "f1", "f2", "f3", "f4"]
        feats, ints = csd.entry("vidA")
        assert feats.shape == (60, D) and ints.shape == (60, 2)


def test_unaligned_import_slices_rows_by_interval(mosi_like, tmp_path):
    man_path, csd_path = mosi_like
    man = load_manifest(man_path)
    out = tmp_path / "covarep.zarr"
    res = import_csd(csd_path, man, out, "audio", progress=False)
    assert res.imported == 9 and res.unused_entries == 0
    assert set(res.failed) == {"vidD_1", "vidD_2", "vidD_3"} and "no entry" in res.failed["vidD_1"]
    assert res.nonfinite == {"vidB_1": 2}
    st = open_store(out)
    assert st.ids == [u.id for u in man if not u.id.startswith("vidD")]   # same order as the manifest
    assert st.failed == res.failed
    assert (st.meta.modality, st.meta.dim, st.meta.layers, st.meta.frame_rate) == ("audio", D, [0], 10.0)
    assert st.meta.manifest_fingerprint == man.fingerprint and st.meta.encoder["root_name"] == "COVAREP"
    v = st.get("vidC_2").astype(np.float32)                             # (T, 1, D), interval [2.0, 3.5] s
    assert v.shape == (15, 1, D)                                     # frames 2.0 .. 3.4 s
    assert np.all(v[:, 0, 1] == 2) and v[0, 0, 0] >= 1.9 and v[-1, 0, 0] <= 3.5
    b = st.get("vidB_1").astype(np.float32)
    assert np.isfinite(b).all() and b[5, 0, 3] == 0 and b[6, 0, 4] == 0
    again = import_csd(csd_path, man, out, "audio", progress=False)   # re-run: nothing twice
    assert again.imported == 0 and again.skipped_existing == 9 and len(open_store(out)) == 9


def test_aligned_keys_and_exact_ids(tmp_path):
    man = tmp_path / "m.jsonl"
    text(man, "".join(json.dumps(x) + "\n" for x in [
        {"id": "v1_1", "label": 1.0, "video_id": "v1", "interval": [0.0, 2.0]},
        {"id": "v1_2", "label": -1.0, "video_id": "v1", "interval": [2.5, 4.0]},
        {"id": "utt9", "label": 0.5},
        {"id": "v2_1", "label": 0.5, "video_id": "v2", "interval": [0.0, 1.0]}]))
    f = lambda n, x: (np.full((n, 3), x, np.float32), np.stack([np.arange(n) * 0.1, np.arange(n) * 0.1 + 0.1], 1))
    ints = lambda s, n: np.stack([s + np.arange(n) * 0.1, s + np.arange(n) * 0.1 + 0.1], 1)
    entries = {"v1[0]": (np.full((20, 3), 1, np.float32), ints(0.0, 20)),   # SDK-aligned to label segment 0
               "v1[1]": (np.full((15, 3), 2, np.float32), ints(2.5, 15)),
               "utt9": f(4, 9), "v2[0]": (np.full((5, 3), 7, np.float32), ints(5.0, 5)), "other": f(2, 0)}
    csd = sdk_csd(tmp_path / "glove.csd", "glove_vectors", entries, {"root name": "glove_vectors"})
    res = import_csd(csd, load_manifest(man), tmp_path / "t.zarr", "text", progress=False)
    st = open_store(tmp_path / "t.zarr")
    assert st.get("v1_1").shape == (20, 1, 3) and float(st.get("v1_1")[0, 0, 0]) == 1
    assert st.get("v1_2").shape == (15, 1, 3) and float(st.get("v1_2")[0, 0, 0]) == 2
    assert float(st.get("utt9")[0, 0, 0]) == 9
    assert "covers half" in res.failed["v2_1"] and res.unused_entries == 2


def test_non_numeric_sequence_is_refused(tmp_path):
    man = text(tmp_path / "m.jsonl", json.dumps({"id": "a", "label": 1.0}) + "\n")
    with h5py.File(tmp_path / "words.csd", "w") as h5:
        e = h5.create_group("words").create_group("data").create_group("a")
        e.create_dataset("features", data=np.array([[b"hello"], [b"world"]]))
        e.create_dataset("intervals", data=np.array([[0, 1], [1, 2]], float))
    with pytest.raises(StoreError, match="not numbers"):
        import_csd(tmp_path / "words.csd", load_manifest(man), tmp_path / "w.zarr", "text", progress=False)
    bad = tmp_path / "x.csd"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(StoreError, match="not an HDF5 computational sequence"):
        import_csd(bad, load_manifest(man), tmp_path / "x.zarr", "text", progress=False)


def test_export_hdf5_and_csd_round_trip(mosi_like, tmp_path):
    man_path, csd_path = mosi_like
    import_csd(csd_path, load_manifest(man_path), tmp_path / "s.zarr", "audio", progress=False)
    st = open_store(tmp_path / "s.zarr")
    out = export_store(tmp_path / "s.zarr", tmp_path / "s.h5", "hdf5", progress=False)
    with h5py.File(out, "r") as h5:
        ids = [x.decode() if isinstance(x, bytes) else x for x in h5["ids"][()]]
        assert ids == st.ids and h5.attrs["modality"] == "audio" and json.loads(h5.attrs["layers"]) == [0]
        off = h5["offsets"][()]
        for i, uid in enumerate(ids):
            np.testing.assert_array_equal(h5["values"][off[i]:off[i + 1]], st.get(uid))
        np.testing.assert_allclose(h5["pooled"][()], st.pooled())
    back = export_store(tmp_path / "s.zarr", tmp_path / "back.csd", "csd", progress=False)
    with CsdFile(back) as csd:
        np.testing.assert_allclose(csd.entry("vidA_1")[0], st.get("vidA_1")[:, 0, :].astype(np.float32))


def test_imported_store_trains_a_head(mosi_like, tmp_path):
    from imo_pipeline.training.trainer import TrainConfig, train

    man_path, csd_path = mosi_like
    import_csd(csd_path, load_manifest(man_path), tmp_path / "covarep.zarr", "audio", progress=False)
    cfg = TrainConfig(modalities=["audio"], stores={"audio": str(tmp_path / "covarep.zarr")}, manifest=str(man_path),
                      head="concat", task="regression", epochs=2, batch_size=4, downsample={"audio": 1})
    summary = train(cfg, tmp_path / "run", progress=False, log=lambda *a: None)
    assert np.isfinite(summary["test"]["mae"])
    assert (tmp_path / "run" / "summary.json").is_file()


def test_cli_import_and_export(mosi_like, tmp_path):
    man_path, csd_path = mosi_like
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", "import-csd", str(csd_path), "--manifest", str(man_path),
                        "--modality", "a", "--out", str(tmp_path / "c.zarr"), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "9 utterances imported" in r.stdout and "vidD_1: no entry" in r.stderr
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", "export", str(tmp_path / "c.zarr"), "--format", "hdf5",
                        "--out", str(tmp_path / "c.h5"), "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0 and (tmp_path / "c.h5").is_file()
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", "export", str(tmp_path / "c.zarr"), "--format", "npz",
                        "--out", str(tmp_path / "c.npz")], capture_output=True, text=True)
    assert r.returncode == 2 and "hdf5, csd" in r.stderr


# --- hostile entries (issue 12) ---------------------------------------------------------------------------------
def _one_per_id(tmp_path, entries: dict, ids=None):
    """A manifest of ``ids`` (default: the entry keys) and an SDK file keyed by id."""
    ids = list(entries) if ids is None else ids
    man = text(tmp_path / "m.jsonl", "".join(json.dumps({"id": i, "label": 1.0}) + "\n" for i in ids))
    t = lambda n: np.stack([np.arange(n) * 0.1, np.arange(n) * 0.1 + 0.1], 1)
    csd = sdk_csd(tmp_path / "f.csd", "feats", {k: (v, t(len(v))) for k, v in entries.items()}, {"root name": "feats"})
    return load_manifest(man), csd


def test_zero_row_entry_fails_only_that_entry(tmp_path):
    rng = np.random.default_rng(0)
    entries = {"a": rng.standard_normal((6, 3)).astype(np.float32), "empty": np.zeros((0, 3), np.float32),
               "b": rng.standard_normal((4, 3)).astype(np.float32)}
    man, csd = _one_per_id(tmp_path, entries)
    res = import_csd(csd, man, tmp_path / "s.zarr", "audio", progress=False)
    assert res.imported == 2 and res.failed == {"empty": "id: the entry has 0 feature rows"}
    st = open_store(tmp_path / "s.zarr").check()
    assert st.ids == ["a", "b"] and st.failed == res.failed
    np.testing.assert_array_equal(st.get("b")[:, 0], entries["b"].astype(np.float16))


@pytest.mark.parametrize("layout", ["empty", "no_data_group", "data_is_a_dataset"])
def test_hdf5_without_a_data_group_is_one_line(tmp_path, layout):
    path = tmp_path / "odd.csd"
    with h5py.File(path, "w") as h5:
        if layout == "no_data_group":
            h5.create_dataset("x", data=np.zeros(3))
            h5.create_group("COVAREP").create_dataset("features", data=np.zeros((2, 2)))
        elif layout == "data_is_a_dataset":
            h5.create_group("COVAREP").create_dataset("data", data=np.zeros(3))
    man = text(tmp_path / "m.jsonl", json.dumps({"id": "a", "label": 1.0}) + "\n")
    with pytest.raises(StoreError, match="expected one top-level group holding a 'data' group") as e:
        import_csd(path, load_manifest(man), tmp_path / "x.zarr", "audio", progress=False)
    assert "\n" not in str(e.value) and str(path) in str(e.value)
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", "import-csd", str(path), "--manifest", str(man),
                        "--modality", "a", "--out", str(tmp_path / "x.zarr"), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1


def test_values_beyond_float16_fail_the_entry_unless_float32(tmp_path):
    rng = np.random.default_rng(1)
    entries = {"ok": rng.standard_normal((5, 3)).astype(np.float32),
               "big": np.full((5, 3), 1e6, np.float32),
               "beyond32": np.full((5, 3), 1e39, np.float64),
               "covarep": np.array([[1, -np.inf, np.nan]] * 4, np.float32)}
    man, csd = _one_per_id(tmp_path, entries)
    res = import_csd(csd, man, tmp_path / "h.zarr", "audio", progress=False)
    assert set(res.failed) == {"big", "beyond32"}
    assert "overflow the store's float16 range" in res.failed["big"] and "--dtype float32" in res.failed["big"]
    assert "exceed float16's range" in res.failed["beyond32"]           # not silently imputed as "inf"
    assert res.nonfinite == {"covarep": 8}                               # the documented imputation, counted
    st = open_store(tmp_path / "h.zarr").check()
    assert st.ids == ["ok", "covarep"] and np.array_equal(st.get("covarep")[:, 0, 0], [1, 1, 1, 1])
    assert np.isfinite(st.load_all()[0].astype(np.float32)).all()

    res32 = import_csd(csd, man, tmp_path / "f.zarr", "audio", progress=False, dtype="float32")
    assert set(res32.failed) == {"beyond32"} and "exceed float32's range" in res32.failed["beyond32"]
    st32 = open_store(tmp_path / "f.zarr").check()
    assert st32.meta.dtype == "float32" and np.array_equal(st32.get("big")[:, 0], entries["big"])


def test_export_csd_escapes_ids_so_they_reimport(tmp_path):
    from imo_pipeline.manifest import ShardSpec
    from imo_pipeline.store import PartWriter, StoreMeta

    ids = ["Ses01/F_001", "a/b/c", "50%", "x%2Fy", ".", "..", "plain"]
    rng = np.random.default_rng(2)
    data = {i: rng.standard_normal((int(rng.integers(2, 9)), 1, 4)).astype(np.float32) for i in ids}
    man_path = text(tmp_path / "m.jsonl", "".join(json.dumps({"id": i, "label": 0.0}) + "\n" for i in ids))
    man = load_manifest(man_path)
    meta = StoreMeta("text", {"type": "synthetic"}, "enc", [0], 4, 10.0, man.fingerprint)
    with PartWriter(tmp_path / "s.zarr", ShardSpec(), meta, ids) as w:
        for i in ids:
            w.add(i, data[i])
        w.finish({})
    out = export_store(tmp_path / "s.zarr", tmp_path / "s.csd", "csd", progress=False)
    with h5py.File(out, "r") as h5:                   # one flat entry per id: no nested groups
        names = list(h5["s"]["data"].keys())
        assert len(names) == len(ids) and all("/" not in n for n in names)
    with CsdFile(out) as csd:
        assert sorted(csd.keys()) == sorted(ids)
    res = import_csd(out, man, tmp_path / "back.zarr", "text", progress=False)
    assert res.imported == len(ids) and not res.failed
    back = open_store(tmp_path / "back.zarr").check()
    assert back.ids == ids
    for i in ids:
        np.testing.assert_array_equal(back.get(i), data[i].astype(np.float16))


def test_damaged_imported_store_names_the_reimport_and_it_rebuilds(mosi_like, tmp_path):
    man_path, csd_path = mosi_like
    out = tmp_path / "c.zarr"
    import_csd(csd_path, load_manifest(man_path), out, "audio", progress=False)
    good = {u: v for u, v in open_store(out)}
    next((out / "part-00000-of-00001" / "values").rglob("c/*/0/0")).unlink()
    with pytest.raises(StoreError) as e:
        open_store(out).check()
    assert (f"imo import-csd {csd_path.resolve()} --manifest {man_path} --modality audio --out {out}"
            in str(e.value))
    res = import_csd(csd_path, load_manifest(man_path), out, "audio", progress=False)   # the named command
    assert res.imported == 9 and res.skipped_existing == 0
    again = open_store(out).check()
    assert all(np.array_equal(again.get(u), v) for u, v in good.items()) and again.ids == list(good)
