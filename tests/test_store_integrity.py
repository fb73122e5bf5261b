"""Hostile inputs against real Zarr stores written by the real PartWriter: values that are not finite in the
store's dtype, deleted / truncated / bit-flipped files, corrupt zarr.json, and `imo verify`. Each test checks
the loud outcome and that nothing good was lost (other parts intact, a rebuild restores the same data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from imo_pipeline.errors import ConfigError, StoreError
from imo_pipeline.manifest import ShardSpec
from imo_pipeline.store import NonFiniteError, PartWriter, StoreMeta, open_store
from imo_pipeline.store.integrity import ChecksumError
from imo_pipeline.store.verify import verify_store

L, D = 2, 8
ROW_MB = L * D * 2 / 2**20          # one float16 frame, in MB
PART = "part-00001-of-00002"


def meta(n_parts=2, dtype="float16"):
    return StoreMeta("audio", {"type": "synthetic"}, "enc", [3, 4], D, 50.0, "man", n_parts, dtype=dtype)


def utterances(n, seed=0):
    rng = np.random.default_rng(seed)
    return {f"u{i:03d}": rng.standard_normal((int(rng.integers(3, 30)), L, D)).astype(np.float32) for i in range(n)}


DATA = utterances(40)
IDS = list(DATA)


def write_part(path, index, n_parts=2, data=DATA, dtype="float16", per_commit=1):
    """Part ``index`` of ``data`` (chunks of 5 frames in shards of 20: many files even for tiny data)."""
    ids = list(data)
    part = ids[index * len(ids) // n_parts:(index + 1) * len(ids) // n_parts]
    with PartWriter(path, ShardSpec(index, n_parts), meta(n_parts, dtype), part,
                    chunk_mb=5 * ROW_MB, shard_mb=20 * ROW_MB) as w:
        for k, uid in enumerate(part):
            w.add(uid, data[uid])
            if k % per_commit == 0:
                w.commit(force=True)
        w.finish({})
        return w.redone


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.zarr"
    write_part(path, 0)
    write_part(path, 1)
    return path


def files_of(path: Path, part: str) -> dict[str, bytes]:
    return {str(f.relative_to(path)): f.read_bytes() for f in sorted((path / part).rglob("*")) if f.is_file()}


def assert_intact(path: Path, ids=IDS, data=DATA):
    st = open_store(path).check()
    assert st.ids == ids
    for uid, v in st:
        assert np.array_equal(v, data[uid].astype(st.dtype)), uid


def cli(*args):
    """`imo ARGS` in this process (stdout, stderr and exit status as the console script gives them)."""
    from typer.testing import CliRunner

    from imo_pipeline.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def cli_process(*args):
    """`imo ARGS` as a real process: an ImoError must become one `error:` line and exit status 2."""
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *map(str, args)], capture_output=True, text=True)


# --- finite values --------------------------------------------------------------------------------------------
def test_values_not_finite_in_the_store_dtype_fail_that_utterance_only(tmp_path):
    path = tmp_path / "s.zarr"
    ids = IDS[:6] + ["huge", "nan", "beyond32"]
    bad = {"huge": np.full((4, L, D), 1e5, np.float32), "nan": np.full((4, L, D), np.nan, np.float32),
           "beyond32": np.full((4, L, D), 1e39, np.float64)}
    with PartWriter(path, ShardSpec(), meta(1), ids, chunk_mb=5 * ROW_MB, shard_mb=20 * ROW_MB) as w:
        failed = {}
        for uid in ids:
            try:
                w.add(uid, bad.get(uid, DATA.get(uid)))
            except NonFiniteError as e:
                assert isinstance(e, StoreError) and "\n" not in str(e)
                failed[uid] = str(e)
            w.commit(force=True)
        w.finish(failed)
    assert "overflow the store's float16 range" in failed["huge"] and "--dtype float32" in failed["huge"]
    assert "non-finite" in failed["nan"] and "--dtype" not in failed["nan"]
    assert "exceed float16's range" in failed["beyond32"] and "--dtype" not in failed["beyond32"]
    st = open_store(path).check()
    assert st.ids == IDS[:6] and st.failed == failed        # the good ones are all there, the bad ones counted
    assert all(np.isfinite(v.astype(np.float32)).all() for _, v in st) and np.isfinite(st.pooled()).all()


def test_float32_store_keeps_values_beyond_float16(tmp_path):
    path = tmp_path / "s32.zarr"
    data = {"huge": np.full((30, L, D), 1e5, np.float32), "tiny": np.full((3, L, D), 1e-8, np.float32), **utterances(5)}
    write_part(path, 0, 1, data, dtype="float32")
    st = open_store(path).check()
    assert st.meta.dtype == "float32" and st.dtype == np.float32 and st.nbytes == st.n_frames * L * D * 4 + 7 * L * D * 4
    assert np.array_equal(st.get("huge"), data["huge"]) and np.array_equal(st.get("tiny"), data["tiny"])
    values, offsets = st.load_all()
    assert values.dtype == np.float32 and np.array_equal(values[offsets[0]:offsets[1]], data["huge"])
    # row bytes honour the dtype: 20 float16 rows per shard hold 10 float32 rows
    assert st._parts[0].rows == 10 and open_store(path).to_dask()[0].dtype == np.float32
    # a float16 job cannot add to it
    with pytest.raises(StoreError, match="dtype='float32', this job has dtype='float16'"):
        PartWriter(path, ShardSpec(), meta(1), list(data))
    from imo_pipeline.export import export_store
    import h5py
    out = export_store(path, tmp_path / "s32.h5", "hdf5", progress=False)
    with h5py.File(out, "r") as h5:
        assert h5["values"].dtype == np.float32 and h5.attrs["dtype"] == "float32"
        assert np.array_equal(h5["values"][:30], data["huge"])


@pytest.mark.parametrize("kw", [dict(shard_mb=float("nan")), dict(shard_mb=0), dict(shard_mb=-1),
                                dict(chunk_mb=float("inf")), dict(shard_mb="x")])
def test_writer_sizes_must_be_finite_and_positive(tmp_path, kw):
    with pytest.raises(ConfigError, match="finite size in MB above 0"):
        PartWriter(tmp_path / "s.zarr", ShardSpec(), meta(1), ["a"], **kw)
    assert not (tmp_path / "s.zarr").exists()


def test_unknown_dtype_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--dtype 'float64': use one of float16, float32"):
        PartWriter(tmp_path / "s.zarr", ShardSpec(), meta(1, dtype="float64"), ["a"])


# --- verified reads -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("folder", ["values", "offsets", "pooled", "ids"])
def test_deleted_file_is_refused_named_and_rebuilt(store, folder):
    part0 = files_of(store, "part-00000-of-00002")
    victim = sorted((store / PART / folder).rglob("c/**/*"))
    victim = [f for f in victim if f.is_file()][-1]
    key = str(victim.relative_to(store))
    victim.unlink()

    st = open_store(store)
    assert [p.status for p in st.parts_status] == ["complete", "damaged"]
    assert st.parts_status[1].damage == {key: "missing"}
    fix = f"imo extract --modality audio --shard 1/2 --out {store}"
    with pytest.raises(StoreError) as e:
        st.check()
    assert key in str(e.value) and fix in str(e.value) and "\n" not in str(e.value)
    assert st.ids == IDS[:20]                                  # the sound part still reads (allow_incomplete views)

    r = cli("inspect", store)
    assert r.exit_code == 1 and "DAMAGED" in r.stdout and key in r.stdout and "1/2 complete" in r.stdout
    r = cli("verify", store, "--no-progress")
    assert r.exit_code == 1 and f"damaged file {key}: missing" in r.stdout and f"rebuild: {fix}" in r.stdout
    marked = json.loads((store / PART / "zarr.json").read_text())["attributes"]
    assert marked["status"] == "damaged" and key in marked["damage"]["files"]
    with pytest.raises(StoreError, match="part 1 is damaged"):
        from imo_pipeline.export import export_store
        export_store(store, store.parent / "x.h5", progress=False)
    assert not (store.parent / "x.h5").exists() and not (store.parent / "x.h5.partial").exists()

    redone = write_part(store, 1)                             # the command verify printed: rebuild from scratch
    assert redone and key in redone
    assert files_of(store, "part-00000-of-00002") == part0    # the sound part was not touched
    assert_intact(store)
    assert cli("verify", store, "--no-progress").exit_code == 0


def test_truncated_shard_file_is_caught_at_open_without_reading_it(store):
    victim = store / PART / "values" / "c" / "2" / "0" / "0"
    victim.write_bytes(victim.read_bytes()[:-40])
    st = open_store(store)
    why = st.parts_status[1].damage[f"{PART}/values/c/2/0/0"]
    assert "truncated" in why
    write_part(store, 1)
    assert_intact(store)


def test_flipped_byte_is_caught_by_whole_shard_reads_and_verify(store):
    victim = store / PART / "values" / "c" / "1" / "0" / "0"
    raw = bytearray(victim.read_bytes())
    raw[10] ^= 0xFF                                            # same size: only the checksum can tell
    victim.write_bytes(bytes(raw))
    key = f"{PART}/values/c/1/0/0"
    st = open_store(store).check()                            # structure is fine
    for read in (lambda: st.load_all(), lambda: list(st), lambda: st.to_dask()[0].compute()):
        with pytest.raises(ChecksumError) as e:
            read()
        assert key in str(e.value) and f"imo verify {store}" in str(e.value) and "\n" not in str(e.value)
    report = verify_store(store, progress=False)
    assert [p.status for p in report.parts] == ["ok", "damaged"] and report.damaged[0].marked
    assert "do not match the checksum" in report.damaged[0].damage[key]
    with pytest.raises(StoreError, match="part 1 is damaged"):
        open_store(store).check()
    write_part(store, 1)
    assert_intact(store)


def test_flipped_byte_in_offsets_is_caught_at_open(store):
    victim = store / PART / "offsets" / "c" / "0"
    raw = bytearray(victim.read_bytes())
    raw[-1] ^= 0x01
    victim.write_bytes(bytes(raw))
    st = open_store(store)
    assert st.parts_status[1].status == "damaged"
    assert "checksum" in st.parts_status[1].damage[f"{PART}/offsets/c/0"]


@pytest.mark.parametrize("which", ["root", "part", "array"])
def test_corrupt_zarr_json_is_one_line(store, which):
    target = {"root": store / "zarr.json", "part": store / PART / "zarr.json",
              "array": store / PART / "values" / "zarr.json"}[which]
    target.write_text(target.read_text()[:25])
    if which == "root":
        with pytest.raises(StoreError, match=r"s\.zarr/zarr\.json \(the store's metadata\) is corrupt"):
            open_store(store)
        r = cli_process("inspect", store)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and r.stderr.startswith("error: ")
        return
    st = open_store(store)
    key = str(target.relative_to(store))
    assert st.parts_status[1].status == "damaged" and key in st.parts_status[1].damage
    r = cli("verify", store, "--no-progress")
    assert r.exit_code == 1 and key in r.stdout and "Traceback" not in r.stderr
    assert json.loads((store / PART / "zarr.json").read_text())["attributes"]["status"] == "damaged"
    write_part(store, 1)
    assert_intact(store)


def test_format1_part_without_checksums_is_checked_structurally_with_a_note(store):
    zj = store / PART / "zarr.json"
    doc = json.loads(zj.read_text())
    for k in ("format", "checksums"):
        doc["attributes"].pop(k)
    zj.write_text(json.dumps(doc))
    assert_intact(store)                                       # still reads
    r = cli("verify", store, "--no-progress")
    assert r.exit_code == 0 and "format 1: written without checksums" in r.stdout
    assert "written without checksums" in cli("inspect", store).stdout
    (store / PART / "pooled" / "c" / "0" / "0" / "0").unlink()
    assert open_store(store).parts_status[1].status == "damaged"


def test_resuming_a_format1_part_records_checksums_of_what_it_wrote(tmp_path):
    path = tmp_path / "s.zarr"
    part = IDS[:20]
    w = PartWriter(path, ShardSpec(), meta(1), part, chunk_mb=5 * ROW_MB, shard_mb=20 * ROW_MB)
    for uid in part[:8]:
        w.add(uid, DATA[uid])
    w.commit(force=True)
    w.close()
    zj = path / "part-00000-of-00001" / "zarr.json"
    doc = json.loads(zj.read_text())
    doc["attributes"].pop("format"), doc["attributes"].pop("checksums")
    zj.write_text(json.dumps(doc))
    with PartWriter(path, ShardSpec(), meta(1), part, chunk_mb=5 * ROW_MB, shard_mb=20 * ROW_MB) as w:
        assert w.done_ids == set(part[:8]) and w.redone is None
        for uid in part[8:]:
            w.add(uid, DATA[uid])
        w.finish({})
    report = verify_store(path, progress=False)
    assert report.parts[0].status == "ok" and report.bytes_checked > 0
    assert_intact(path, part)


def test_checksums_land_in_the_content_fingerprint(store):
    before = open_store(store).content_fingerprint()
    data = dict(DATA)
    data[IDS[25]] = DATA[IDS[25]] + 1                          # same ids and shapes, other values
    (store / PART).rename(store.parent / "old-part")
    write_part(store, 1, data=data)
    assert open_store(store).content_fingerprint() != before


def test_extraction_fails_an_utterance_whose_embedding_is_not_finite(tmp_path):
    """A float WAV with finite but huge samples (1e30) makes fbank overflow: that utterance fails with its
    reason in the errors file; the others are stored. The driver's dtype option reaches the store."""
    import soundfile as sf

    from audio_utils import tone, write_manifest_lines
    from extractors import build_extractor
    from imo_pipeline.extract import extract
    from imo_pipeline.manifest import load_manifest

    lines = []
    for i in range(4):
        x = tone(0.5, 16000, 200 + 50 * i, seed=i)
        sf.write(tmp_path / f"a{i}.wav", x * (1e30 if i == 2 else 1.0), 16000, subtype="FLOAT")
        lines.append({"id": f"a{i}", "label": "neu", "audio": f"a{i}.wav"})
    man = load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines))
    ext = build_extractor("fbank", "audio")
    for dtype in ("float16", "float32"):
        out = tmp_path / f"{dtype}.zarr"
        res = extract(man, ext, out, progress=False, dtype=dtype)
        assert list(res.failed) == ["a2"] and "non-finite" in res.failed["a2"]["reason"]
        errors = [json.loads(line) for line in Path(res.errors_file).read_text().splitlines()]
        assert [e["id"] for e in errors] == ["a2"] and errors[0]["path"].endswith("a2.wav")
        st = open_store(out).check()
        assert st.meta.dtype == dtype and st.ids == ["a0", "a1", "a3"] and "a2" in st.failed
        assert all(np.isfinite(v.astype(np.float32)).all() for _, v in st)


def test_all_zero_embeddings_still_write_every_file(tmp_path):
    """Zarr skips chunks equal to the fill value by default; a store must not, or a silent clip (all-zero
    frames) would look like a deleted file."""
    data = {"silent": np.zeros((45, L, D), np.float32), **utterances(3, seed=5), "black": np.zeros((7, L, D))}
    path = tmp_path / "z.zarr"
    write_part(path, 0, 1, data)
    st = open_store(path).check()
    assert np.array_equal(st.get("silent"), np.zeros((45, L, D), np.float16)) and not st.get("black").any()
    report = verify_store(path, progress=False)
    assert report.parts[0].status == "ok"


@pytest.mark.slow
def test_train_and_export_refuse_a_store_with_a_deleted_shard_in_one_line(tmp_path):
    """Before: `imo train` trained on zeros and `imo export` wrote zeros, exit status 0."""
    from store_utils import make_partial_info_set

    manifest, stores = make_partial_info_set(tmp_path / "cache", per_class=4, modalities=("audio",))
    manifest.rename(tmp_path / "m.jsonl")
    (tmp_path / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n')
    victim = sorted((stores["audio"] / "part-00000-of-00001" / "values" / "c").rglob("0/0"))[1]
    victim.unlink()
    key = str(victim.relative_to(stores["audio"]))
    want = (f"error: store {stores['audio']}: part 0 is damaged: {key}: missing; rebuild the part with "
            f"`imo extract --modality audio --shard 0/1 --out {stores['audio']}`")
    for args in (["train", "-m", "a", "--head", "concat", "--epochs", "1", "--out", "runs/x", "--no-progress"],
                 ["export", str(stores["audio"]), "--out", "a.h5", "--no-progress"]):
        r = subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == want, r.stderr
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "a.h5").exists()


def test_writer_on_a_store_with_corrupt_root_metadata_is_one_line(store):
    (store / "zarr.json").write_text("{")
    with pytest.raises(StoreError, match=r"zarr\.json \(the store's metadata\) is corrupt .*; delete .* and write it again"):
        write_part(store, 1)
    assert not (store / f"{PART}.lock").exists()
