import json
import os
import subprocess
import sys

import numpy as np
import pytest

from audio_utils import write_manifest_lines
from extractors import build_extractor
from imo_pipeline.errors import MediaError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.media.faces import FaceCropper, center_crop
from imo_pipeline.media.video import load_video, pick_frames, sample_times, video_duration, write_video
from imo_pipeline.store import open_store
from media_utils import blank_frame, draw_face, moving_face_frames, save_tiny_vit, write_frames_folder

RATE = 25          # frames per second of the written videos
N = 50             # 2 s
FACELESS = set(range(20, 30))   # 0.8 s .. 1.2 s show no face


@pytest.fixture(scope="module")
def vit(tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp("vit") / "vit")


@pytest.fixture
def video_set(tmp_path):
    """A manifest over an mp4 of a moving face (with a faceless stretch), a segment of it, and a frames folder."""
    frames = moving_face_frames(N, faceless=FACELESS)
    write_video(tmp_path / "media" / "face.mp4", frames, RATE)
    write_frames_folder(tmp_path / "media" / "frames_a", moving_face_frames(7))
    lines = [{"id": "whole", "label": "hap", "video": {"path": "media/face.mp4"}},
             {"id": "seg", "label": "sad", "video": {"path": "media/face.mp4", "start": 1.2, "end": 2.0}},
             {"id": "folder", "label": "neu", "frames": "media/frames_a"}]
    return load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines)), frames


def test_decoding_samples_the_right_frames(tmp_path):
    frames = [np.zeros((64, 4 * N, 3), np.uint8) for i in range(N)]
    for i, f in enumerate(frames):
        f[:, 4 * i:4 * i + 4] = 255                                         # frame i: a white bar at x = 4 i
    path = write_video(tmp_path / "bars.mp4", frames, RATE)
    shown = lambda got: [int(g.mean(axis=(0, 2)).argmax()) // 4 for g in got]  # noqa: E731
    assert video_duration(path) == pytest.approx(N / RATE, abs=0.05)
    got = load_video(path, 0.0, None, fps=4.0, max_frames=100)
    times = sample_times(0.0, N / RATE, 4.0, 100)
    assert len(got) == len(times) == 8
    assert shown(got) == [round(t * RATE) for t in times] == [3, 9, 16, 22, 28, 34, 41, 47]  # nearest frames
    assert shown(load_video(path, 1.0, 1.6, fps=4.0, max_frames=100)) == [29, 36]
    assert shown(load_video(path, 0.0, None, fps=25.0, max_frames=4)) == [6, 19, 31, 44]  # capped: spread evenly
    assert pick_frames(100, 25.0, 5.0, 300) == list(range(2, 100, 5))
    assert pick_frames(10, None, 5.0, 4) == [1, 3, 6, 8]


def test_face_crop_found_on_frames_that_have_a_face():
    cropper = FaceCropper(size=64, margin=0.2)
    for cx in (55, 80, 105):
        box = cropper.detect(draw_face(160, cx=cx, cy=80, r=45))
        assert box is not None
        x, y, w, h = box
        assert abs(x + w / 2 - cx) < 10 and abs(y + h / 2 - 80) < 15 and 50 < w < 130
        assert cropper(draw_face(160, cx=cx, cy=80, r=45)).shape == (64, 64, 3)
    assert cropper.detect(blank_frame()) is None
    assert center_crop(np.zeros((40, 60, 3), np.uint8), 32).shape == (32, 32, 3)


def test_video_round_trip_counts_frames_without_a_face(video_set, vit, tmp_path):
    manifest, _ = video_set
    ext = build_extractor(str(vit), "video", layers="all", device="cpu", crop_size=64)
    assert (ext.unit, ext.frame_rate, ext.dim, ext.layers) == ("frames", 5.0, 32, [0, 1, 2])
    result = extract(manifest, ext, tmp_path / "v.zarr", budget=16, progress=False)
    assert (result.done, result.failed) == (3, {})
    store = open_store(tmp_path / "v.zarr")
    # 10 frames sampled at 5 fps, two of them (0.9 s, 1.1 s) in the faceless stretch: left out and reported
    assert store.get("whole").shape == (8, 3, 32)
    assert store.get("seg").shape == (4, 3, 32) and store.get("folder").shape == (7, 3, 32)
    assert result.notes == {"whole": f"2 of 10 sampled frames had no face and were left out "
                                     f"({manifest.resolve('media/face.mp4')})"}
    assert [json.loads(x)["id"] for x in open(result.notes_file)] == ["whole"]
    assert "notes for 1 utterance(s)" in result.summary("frames")
    assert "(e.g. whole: 2 of 10 sampled frames had no face and were left out" in result.summary("frames")
    meta = store.meta
    assert meta.frame_rate == 5.0 and meta.modality == "video"
    assert {k: meta.encoder[k] for k in ("type", "fps", "max_frames", "face", "crop_size")} == \
        {"type": "hf-vision", "fps": 5.0, "max_frames": 300, "face": True, "crop_size": 64}
    for u in manifest:   # batched equals single
        alone = ext.embed([ext.load(u, manifest)])[0]
        np.testing.assert_allclose(store.get(u.id).astype(np.float32), alone, atol=1e-3, rtol=1e-3)
    # resume keeps the notes of utterances extracted before
    again = extract(manifest, ext, tmp_path / "v.zarr", progress=False)
    assert (again.done, again.skipped, again.notes.keys()) == (0, 3, {"whole"})


def test_pixels_baseline_and_no_face_mode(video_set, tmp_path):
    manifest, frames = video_set
    ext = build_extractor("pixels", "video", face=False, fps=2.5, size=16)
    assert (ext.dim, ext.layers, ext.frame_rate) == (256, [0], 2.5)
    extract(manifest, ext, tmp_path / "p.zarr", progress=False)
    store = open_store(tmp_path / "p.zarr")
    assert store.get("whole").shape == (5, 1, 256)    # no detection: every sampled frame kept
    assert store.get("folder").shape == (7, 1, 256)
    first = frames[int(0.2 * RATE)]
    import cv2
    expect = cv2.resize(cv2.cvtColor(center_crop(first, 96), cv2.COLOR_RGB2GRAY), (16, 16),
                        interpolation=cv2.INTER_AREA).reshape(-1) / 255.0
    assert np.abs(store.get("whole")[0, 0].astype(np.float32) - expect).mean() < 0.03   # lossy mp4


def test_bad_videos_fail_alone(video_set, tmp_path):
    manifest, _ = video_set
    media = tmp_path / "media"
    (media / "garbage.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video" * 10)
    write_video(media / "noface.mp4", [blank_frame(seed=i) for i in range(20)], RATE)
    write_frames_folder(media / "frames_noface", [blank_frame(seed=i) for i in range(3)])
    (media / "frames_empty").mkdir()
    bad = {"missing": {"video": "media/missing.mp4"}, "garbage": {"video": "media/garbage.mp4"},
           "noface": {"video": "media/noface.mp4"}, "outside": {"video": {"path": "media/face.mp4", "start": 5.0}},
           "folder_noface": {"frames": "media/frames_noface"}, "folder_empty": {"frames": "media/frames_empty"},
           "textonly": {"text": "hello"}}
    lines = [u.to_json() for u in manifest] + [{"id": k, "label": "neu", **v} for k, v in bad.items()]
    manifest = load_manifest(write_manifest_lines(tmp_path / "m.jsonl", lines))
    ext = build_extractor("pixels", "video")
    result = extract(manifest, ext, tmp_path / "v.zarr", progress=False)
    assert result.done == 3 and set(result.failed) == set(bad)
    reasons = {r["id"]: r for r in map(json.loads, open(result.errors_file))}
    assert "does not exist" in reasons["missing"]["reason"] and reasons["missing"]["path"] == "media/missing.mp4"
    assert "could not be decoded" in reasons["garbage"]["reason"]
    assert "no face found in any of the 4 sampled frames" in reasons["noface"]["reason"]
    assert "lies outside the video" in reasons["outside"]["reason"]
    assert "no face found" in reasons["folder_noface"]["reason"]
    assert reasons["folder_noface"]["path"] == "media/frames_noface"
    assert "holds no images" in reasons["folder_empty"]["reason"]
    assert "neither 'video' nor 'frames'" in reasons["textonly"]["reason"]
    assert sorted(open_store(tmp_path / "v.zarr").ids) == ["folder", "seg", "whole"]


def test_unreadable_frame_image_is_reported(tmp_path):
    folder = write_frames_folder(tmp_path / "f", moving_face_frames(3))
    (folder / "0001.png").write_bytes(b"not a png")
    manifest = load_manifest(write_manifest_lines(tmp_path / "m.jsonl", [{"id": "a", "label": "x", "frames": "f"}]))
    with pytest.raises(MediaError, match="0001.png could not be read"):
        build_extractor("pixels", "video").load(manifest.utterances[0], manifest)


def test_cli_extract_video(video_set, tmp_path):
    (tmp_path / "imo.toml").write_text('manifest = "m.jsonl"\ncache = "cache"\n[encoders]\nvideo = "pixels"\n')
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "imo_pipeline", "extract", "--modality", "video",  # noqa: E731
                                     "--no-progress", *a], cwd=tmp_path, capture_output=True, text=True, env=env)
    r = run()
    assert r.returncode == 0, r.stderr
    assert "done 3, already present 0, failed 0" in r.stdout and "notes for 1 utterance(s)" in r.stdout
    assert (tmp_path / "cache" / "video.notes.jsonl").exists()
    shown = subprocess.run([sys.executable, "-m", "imo_pipeline", "inspect", tmp_path / "cache" / "video.zarr"],
                           capture_output=True, text=True)
    assert "with notes 1" in shown.stdout and "note whole: 2 of 10 sampled frames had no face" in shown.stdout
    r = run("--fps", "10", "--max-frames", "6", "--no-face", "--out", "cache/v10.zarr")
    assert r.returncode == 0, r.stderr
    store = open_store(tmp_path / "cache" / "v10.zarr")
    assert store.meta.frame_rate == 10.0 and store.meta.encoder["face"] is False
    assert store.get("whole").shape[0] == 6 and store.get("seg").shape[0] == 6
