import numpy as np
import pytest

from imo_pipeline.errors import LockError, StoreError
from imo_pipeline.manifest import ShardSpec
from imo_pipeline.store import PartWriter, StoreMeta, open_store

L, D = 2, 8
ROW_MB = L * D * 2 / 2**20  # one frame of float16 values, in MB


def meta(n_parts=1, **kw):
    return StoreMeta("audio", {"type": "synthetic"}, "enc", [3, 4], D, 50.0, "man", n_parts, **kw)


def utterances(n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"u{i:03d}": rng.standard_normal((int(rng.integers(1, 30)), L, D)).astype(np.float32) for i in range(n)}


def writer(path, shard=ShardSpec(), ids=(), **kw):
    # chunks of 5 frames inside shards of 20: many shards even for tiny data
    return PartWriter(path, shard, meta(shard.count), list(ids), chunk_mb=5 * ROW_MB, shard_mb=20 * ROW_MB, **kw)


def test_round_trip_all_access_paths(tmp_path):
    data = utterances(40)
    path = tmp_path / "s.zarr"
    with writer(path, ids=data) as w:
        for k, (uid, x) in enumerate(data.items()):
            w.add(uid, x)
            w.commit()
        w.finish({})
    st = open_store(path)
    assert st.ids == list(data) and st.complete and len(st) == 40
    assert st.meta.layers == [3, 4] and st.n_layers == 2 and st.dim == D
    for uid, x in data.items():
        got = st.get(uid)
        assert got.dtype == np.float16 and np.array_equal(got, x.astype(np.float16))
    assert [u for u, _ in st] == list(data)
    assert all(np.array_equal(v, data[u].astype(np.float16)) for u, v in st)
    values, offsets = st.load_all()
    assert values.shape[0] == offsets[-1] == sum(len(x) for x in data.values())
    assert np.array_equal(st.lengths(), [len(x) for x in data.values()])
    np.testing.assert_allclose(st.pooled(), np.stack([x.mean(0) for x in data.values()]), rtol=1e-6, atol=1e-6)
    dv, doffs = st.to_dask()
    assert np.array_equal(dv.compute(), values) and np.array_equal(doffs, offsets)


def test_uncommitted_rows_are_invisible_and_resume_continues(tmp_path):
    data = utterances(30, seed=1)
    ids = list(data)
    path = tmp_path / "s.zarr"
    w = writer(path, ids=ids)
    for uid in ids[:12]:
        w.add(uid, data[uid])
    w.commit(force=True)
    for uid in ids[12:20]:
        w.add(uid, data[uid])  # buffered, never committed: a crash loses these
    w.close()
    partial = open_store(path, allow_incomplete=True)
    assert partial.ids == ids[:12]
    assert len(open_store(path)) == 0 and open_store(path).parts_status[0].status == "writing"

    w = writer(path, ids=ids)
    assert w.done_ids == set(ids[:12])
    for uid in ids[12:]:
        w.add(uid, data[uid])
        w.commit()
    w.finish({})
    w.close()
    st = open_store(path)
    assert st.ids == ids
    assert all(np.array_equal(st.get(u), data[u].astype(np.float16)) for u in ids)


def test_parts_form_one_table_and_missing_parts_are_reported(tmp_path):
    data = utterances(20, seed=2)
    ids = list(data)
    path = tmp_path / "s.zarr"
    for i in (0, 2):
        spec = ShardSpec(i, 3)
        part = ids[i * 7:(i + 1) * 7]
        with writer(path, spec, part) as w:
            for u in part:
                w.add(u, data[u])
            w.finish({})
    st = open_store(path)
    assert [p.status for p in st.parts_status] == ["complete", "missing", "complete"]
    assert not st.complete and st.ids == ids[0:7] + ids[14:21]


def test_refuses_other_encoder_duplicate_ids_and_bad_shapes(tmp_path):
    path = tmp_path / "s.zarr"
    with writer(path, ids=["a", "b"]) as w:
        w.add("a", np.ones((3, L, D)))
        with pytest.raises(StoreError, match="already in"):
            w.add("a", np.ones((3, L, D)))
        with pytest.raises(StoreError, match="does not fit"):
            w.add("b", np.ones((3, L, D + 1)))
        w.finish({"b": "no audio"})
    other = StoreMeta("audio", {"type": "synthetic"}, "OTHER", [3, 4], D, 50.0, "man", 1)
    with pytest.raises(StoreError, match="encoder_fingerprint"):
        PartWriter(path, ShardSpec(), other, ["a", "b"])
    assert open_store(path).failed == {"b": "no audio"}


def test_second_writer_on_same_part_is_refused(tmp_path):
    path = tmp_path / "s.zarr"
    with writer(path, ids=["a"]):
        with pytest.raises(LockError, match=r"part-00000-of-00001\.lock"):
            writer(path, ids=["a"])
    writer(path, ids=["a"]).close()  # released: the next job may write


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="does not exist"):
        open_store(tmp_path / "nope.zarr")
    import zarr
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(StoreError, match="not an imo embedding store"):
        open_store(tmp_path / "plain.zarr")
