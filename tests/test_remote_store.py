"""Stores at fsspec URLs (zarr's FsspecStore), tested with the in-process ``memory://`` filesystem."""

import json
import uuid

import fsspec
import numpy as np
import pytest
import soundfile as sf

from audio_utils import tone, write_manifest_lines
from extractors import build_extractor
from imo_pipeline.errors import StoreError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import ShardSpec, load_manifest
from imo_pipeline.store import open_store


@pytest.fixture
def manifest(tmp_path):
    lines = []
    for i in range(12):
        sf.write(tmp_path / f"a{i}.wav", tone(0.3 + 0.2 * i, 16000, 150 + 9 * i, seed=i), 16000)
        lines.append({"id": f"a{i}", "label": "neu", "audio": f"a{i}.wav"})
    lines.append({"id": "gone", "label": "neu", "audio": "gone.wav"})
    return load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines))


def test_sharded_extraction_into_a_memory_url_equals_a_local_store(manifest, tmp_path):
    ext = build_extractor("fbank", "audio")
    url = f"memory://imo-{uuid.uuid4().hex[:8]}/cache/audio.zarr"
    first = extract(manifest, ext, url, ShardSpec(0, 2), progress=False, shard_mb=0.05)
    # readers see only complete parts, whatever the filesystem
    half = open_store(url)
    assert not half.complete and len(half) == first.done and half.parts_status[1].status == "missing"
    second = extract(manifest, ext, url, ShardSpec(1, 2), progress=False, shard_mb=0.05)
    again = extract(manifest, ext, url, ShardSpec(1, 2), progress=False, shard_mb=0.05)  # resume: nothing to do
    assert again.done == 0 and again.skipped == second.done

    local = tmp_path / "audio.zarr"
    extract(manifest, ext, local, progress=False, shard_mb=0.05)
    a, b = open_store(local), open_store(url)
    assert b.complete and sorted(b.ids) == sorted(a.ids) and len(b) == 12
    for uid in a.ids:
        assert np.array_equal(a.get(uid), b.get(uid))
    assert b.size_on_disk() > 0
    # the failure report lands beside the store, on the same filesystem
    fs = fsspec.filesystem("memory")
    errors = url.removeprefix("memory://").replace("audio.zarr", "audio.part-00001-of-00002.errors.jsonl")
    which = first if first.failed else second
    assert which.errors_file.startswith("memory://")
    assert [json.loads(line)["id"] for line in fs.cat(which.errors_file.removeprefix("memory://")).decode().splitlines()] == ["gone"]
    assert fs.exists(errors) == bool(second.failed)


def test_missing_url_store_is_a_typed_error():
    with pytest.raises(StoreError, match="is not an imo embedding store"):
        open_store(f"memory://nothing-{uuid.uuid4().hex[:8]}/x.zarr")


def test_deleted_or_damaged_file_in_a_url_store_is_found_and_the_part_rebuilt(manifest):
    from imo_pipeline.store.verify import verify_store

    ext = build_extractor("fbank", "audio")
    url = f"memory://imo-{uuid.uuid4().hex[:8]}/cache/audio.zarr"
    extract(manifest, ext, url, progress=False, shard_mb=0.05)
    good = {u: v for u, v in open_store(url)}
    fs, root = fsspec.core.url_to_fs(url)
    shards = sorted(p for p in fs.find(root + "/part-00000-of-00001/values") if p.endswith("/0/0"))
    fs.rm(shards[0])                                              # deleted: zarr alone would read zeros
    key = shards[0][len(root) + 1:]
    st = open_store(url)
    assert st.parts_status[0].status == "damaged" and st.parts_status[0].damage == {key: "missing"}
    with pytest.raises(StoreError, match=f"{key}: missing; rebuild the part with `imo extract --modality audio "):
        st.check()
    report = verify_store(url, progress=False)
    assert report.damaged and report.damaged[0].marked
    assert extract(manifest, ext, url, progress=False, shard_mb=0.05).done == len(good)   # rebuilt from scratch
    again = open_store(url).check()
    assert again.ids == list(good) and all(np.array_equal(again.get(u), v) for u, v in good.items())
    assert not verify_store(url, progress=False).damaged
