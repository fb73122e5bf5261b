"""Hostile inputs to `imo extract`, through the real CLI: each is loud (one line, or one errors-file entry
naming the file) and nothing good is lost (the other utterances are extracted, an existing store is kept)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audio_utils import tone, write_manifest_lines
from extractors import build_extractor
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store
from media_utils import moving_face_frames, write_frames_folder
from scale_utils import env

GOOD = [{"id": f"u{i}", "label": "neu", "audio": f"media/u{i}.wav"} for i in range(4)]


@pytest.fixture
def project(tmp_path):
    (tmp_path / "media").mkdir()
    for i in range(4):
        sf.write(tmp_path / "media" / f"u{i}.wav", tone(0.3 + 0.1 * i, 16000, seed=i), 16000)
    write_manifest_lines(tmp_path / "m.jsonl", GOOD)
    return tmp_path


CMD = ("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", "fbank", "--out", "s.zarr", "--no-progress")


def test_fifo_device_and_folder_as_media_fail_alone_without_hanging(project):
    os.mkfifo(project / "media" / "pipe.wav")
    (project / "media" / "dir.wav").mkdir()
    bad = {"pipe": "media/pipe.wav", "dev": "/dev/zero", "dir": "media/dir.wav"}
    write_manifest_lines(project / "m.jsonl", GOOD[:2] + [{"id": k, "audio": v} for k, v in bad.items()] + GOOD[2:])
    # a real process with a time limit: before the fix, reading the FIFO blocked forever
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", *CMD], cwd=project, capture_output=True, text=True,
                       env=env(), timeout=120)
    assert r.returncode == 1, r.stderr
    assert "done 4, already present 0, failed 3" in r.stdout and "3 utterance(s) failed; see" in r.stderr
    reasons = {e["id"]: e for e in map(json.loads, open(project / "s.errors.jsonl"))}
    assert "pipe.wav is a FIFO (named pipe), not a regular file" in reasons["pipe"]["reason"]
    assert reasons["pipe"]["path"] == "media/pipe.wav"
    assert "/dev/zero is a character device, not a regular file" in reasons["dev"]["reason"]
    assert "dir.wav is a folder, not a file" in reasons["dir"]["reason"]
    st = open_store(project / "s.zarr")
    assert sorted(st.ids) == [g["id"] for g in GOOD] and set(st.failed) == set(bad)


def test_fifo_video_and_fifo_frame_fail_alone(tmp_path):
    write_frames_folder(tmp_path / "good", moving_face_frames(3))
    write_frames_folder(tmp_path / "piped", moving_face_frames(3))
    (tmp_path / "piped" / "0001.png").unlink()
    os.mkfifo(tmp_path / "piped" / "0001.png")
    os.mkfifo(tmp_path / "clip.mp4")
    (tmp_path / "dirclip.mp4").mkdir()
    (tmp_path / "notafolder").write_bytes(b"x")
    lines = [{"id": "good", "frames": "good"}, {"id": "piped", "frames": "piped"},
             {"id": "fifo", "video": "clip.mp4"}, {"id": "dir", "video": "dirclip.mp4"},
             {"id": "file", "frames": "notafolder"}]
    manifest = load_manifest(write_manifest_lines(tmp_path / "v.jsonl", lines))
    result = extract(manifest, build_extractor("pixels", "video", face=False), tmp_path / "v.zarr", progress=False)
    assert result.done == 1 and set(result.failed) == {"piped", "fifo", "dir", "file"}
    assert "0001.png is a FIFO (named pipe), not a regular file" in result.failed["piped"]["reason"]
    assert "video file" in result.failed["fifo"]["reason"] and "clip.mp4 is a FIFO" in result.failed["fifo"]["reason"]
    assert "dirclip.mp4 is a folder, not a file" in result.failed["dir"]["reason"]
    assert "notafolder is not a folder" in result.failed["file"]["reason"]
    assert list(open_store(tmp_path / "v.zarr").ids) == ["good"]


@pytest.mark.parametrize("line, message", [
    ('{"id": "\\udc80", "label": "neu", "audio": "media/u0.wav"}', "m.jsonl:3: field 'id' holds '\\udc80'"),
    ('{"id": "x", "label": NaN, "audio": "media/u0.wav"}', "m.jsonl:3: field 'label' is nan"),
    ('{"id": "x", "label": Infinity}', "m.jsonl:3: field 'label' is inf"),
    ('{"id": "x", "label": "neu", "targets": {"valence": -Infinity}}', "m.jsonl:3: field 'targets.valence' is -inf"),
    ('[' * 50_000 + ']' * 50_000, "m.jsonl:3: JSON nested too deeply"),
    (b'{"id": "caf\xe9", "label": "neu"}', "m.jsonl:3: not UTF-8 (byte 0xe9 at column 12)"),
])
def test_bad_manifest_lines_refused_in_one_line_and_the_store_is_kept(imo, project, line, message):
    assert imo(*CMD, cwd=project).code == 0
    before = {u: open_store(project / "s.zarr").get(u) for u in ("u0", "u3")}
    raw = "".join(json.dumps(g) + "\n" for g in GOOD[:2]).encode()
    (project / "m.jsonl").write_bytes(raw + (line if isinstance(line, bytes) else line.encode()) + b"\n")
    r = imo(*CMD, cwd=project)
    assert r.code == 2 and r.stderr.count("\n") == 1 and message in r.error, r.stderr
    st = open_store(project / "s.zarr")          # the good store is untouched
    assert st.complete and sorted(st.ids) == ["u0", "u1", "u2", "u3"]
    for u, v in before.items():
        np.testing.assert_array_equal(st.get(u), v)


def test_surrogate_id_can_no_longer_reach_a_part_commit(tmp_path):
    """The reproduction of the issue: an id with a lone surrogate used to crash the part's commit at every
    re-run, losing the good utterances of that part. Now the manifest is refused before any write."""
    from imo_pipeline.errors import ManifestError

    sf.write(tmp_path / "a.wav", tone(0.3, 16000), 16000)
    (tmp_path / "m.jsonl").write_text('{"id": "ok", "audio": "a.wav"}\n{"id": "bad\\udc80", "audio": "a.wav"}\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: field 'id' holds '\\udc80' at position 3"):
        load_manifest(tmp_path / "m.jsonl")


def test_unlabeled_manifest_extracts(imo, project):
    write_manifest_lines(project / "m.jsonl", [{"id": g["id"], "audio": g["audio"]} for g in GOOD])
    r = imo(*CMD, cwd=project)
    assert r.code == 0, r.stderr
    assert "done 4, already present 0, failed 0" in r.stdout
    assert open_store(project / "s.zarr").complete
