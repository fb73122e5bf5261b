"""`imo predict RUN --timeline FILE`: a recording of any length labelled segment by segment.

Runs trained here on the demo's generated set (fbank audio, all-MiniLM-L6-v2 text, pixels faces with
face detection on), then labelled timelines of recordings built from real speech (Debian's
pocketsphinx-testdata, tests/speech_utils.py) with silences between the clips.

Measured on this machine (2 cores): on a 5.9-min recording of 70 clips (44.1 kHz stereo) the timeline
had one row per clip (70/70, each clip holding exactly one segment's midpoint), the same segments as
`imo prepare media` finds. The tests allow one segment more or less per 10 clips (as
test_prepare_media.py does for segmentation).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from imo_pipeline.errors import ConfigError
from imo_pipeline.media.asr import word_error_rate
from imo_pipeline.media.segment import fixed_windows
from imo_pipeline.timeline import (TimelineConfig, TimelineSegment, display_spans, n_rows, output_paths,
                                   row_seconds)
from speech_utils import build_recording, speech_clips

MAX_WER = 0.12
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# --- no run needed ------------------------------------------------------------------------------

def test_window_options_are_checked():
    assert TimelineConfig(window=4).hop == 4
    for bad, match in (({"hop": 2}, "--hop 2 needs --window"), ({"window": 0}, "--window 0"),
                       ({"window": 4, "hop": -1}, "--hop -1"), ({"window": float("nan")}, "--window nan"),
                       ({"window": 0.05}, "shorter than 0.1 s")):
        with pytest.raises(ConfigError, match=match):
            TimelineConfig(**bad)
    assert TimelineConfig(window=4, hop=2).to_json()["segmentation"] == {"type": "windows", "window": 4, "hop": 2}
    assert TimelineConfig().to_json()["segmentation"]["type"] == "silero"


def test_png_rows_and_overlapping_windows_meet_in_the_middle(tmp_path):
    assert row_seconds(12.3) == 13 and row_seconds(20.4) == 21                  # short: one row
    assert row_seconds(52) == 20 and n_rows(52, 20) == 3
    assert row_seconds(354) == 45 and n_rows(354, 45) == 8                       # 6 min: 8 rows of 45 s
    assert row_seconds(354, 12) == 30 and n_rows(3600, row_seconds(3600)) <= 10
    segs = [TimelineSegment(str(i), index=i, start=a, end=b) for i, (a, b) in enumerate(fixed_windows(9, 4, 2))]
    assert [(s.start, s.end) for s in segs] == [(0, 4), (2, 6), (4, 8), (6, 9)]
    assert display_spans(segs) == [(0, 3), (3, 5), (5, 7), (7, 9)]
    apart = [TimelineSegment("a", start=1, end=2), TimelineSegment("b", start=3, end=4)]
    assert display_spans(apart) == [(1, 2), (3, 4)]
    paths = output_paths("/x/../my talk.wav", tmp_path)
    assert all(p.parent == tmp_path and p.name.endswith(f".timeline.{k}") for k, p in paths.items())
    assert output_paths("/x/talk.mp4", tmp_path)["csv"].name == "talk.timeline.csv"


def test_rows_for_classification_and_regression():
    s = TimelineSegment("t_0001", np.array([0.1, 0.7, 0.2]), ["ang", "hap", "sad"], index=1, start=1.5, end=3.25,
                        text="hello")
    assert s.csv_row() == {"segment": 1, "start": "1.500", "end": "3.250", "text": "hello", "label": "hap",
                           "p_ang": "0.100000", "p_hap": "0.700000", "p_sad": "0.200000", "error": ""}
    assert s.to_json()["scores"] == {"ang": pytest.approx(0.1), "hap": pytest.approx(0.7), "sad": pytest.approx(0.2)}
    failed = TimelineSegment("t_0002", None, ["ang", "hap", "sad"], error="no face", index=2, start=4, end=5)
    assert failed.csv_row()["label"] == "" and failed.csv_row()["p_hap"] == "" and failed.csv_row()["error"] == "no face"
    value = TimelineSegment("t_0003", np.array(0.25, np.float32), None, index=3, start=5, end=6)
    assert value.csv_row()["value"] == "0.250000" and "label" not in value.csv_row()
    assert value.to_json()["value"] == 0.25


@pytest.mark.parametrize("task", ["classification", "binary", "regression"])
def test_png_of_every_task_with_failed_and_overlapping_segments(tmp_path, task):
    from PIL import Image

    from imo_pipeline.media.segment import HOP, FrameScores
    from imo_pipeline.media.stream import MediaInfo
    from imo_pipeline.timeline import Scan, plot_timeline

    rng = np.random.default_rng(0)
    duration = 130.0
    frames = FrameScores(np.zeros(int(duration / HOP), np.float32),
                         rng.uniform(-60, -10, int(duration / HOP)).astype(np.float32), duration)
    labels = None if task == "regression" else ["ang", "hap", "neu"]
    segs = []
    for i, (a, b) in enumerate(fixed_windows(duration, 4, 2)):
        p = rng.dirichlet(np.ones(3)) if task == "classification" else rng.uniform(0, 1, 3)
        scores = np.array(rng.normal()) if labels is None else p
        segs.append(TimelineSegment(str(i), None if i == 5 else scores, labels, "no face" if i == 5 else None,
                                    index=i, start=a, end=b, text="word " * (i % 7) or None))
    scan = Scan(tmp_path / "x.wav", MediaInfo("x.wav", duration, 16000, 1, False, "soundfile"),
                [(s.start, s.end) for s in segs], frames)
    path = plot_timeline(scan, segs, tmp_path / "t.png", title="x", task=task, shade=False)
    with Image.open(path) as im:
        assert im.size[0] == 1600 and im.size[1] > 600          # 7 rows of 20 s
    assert not list(tmp_path.glob("*.tmp"))


# --- runs trained on the demo's generated set ---------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs ``audio`` (probe), ``at`` and ``atv`` (concat) and ``reg`` (audio regression), 2 epochs each."""
    import cv2
    import torch

    from extractors import build_extractor
    from imo_pipeline.demo.run import minilm_path
    from imo_pipeline.demo.synth import generate
    from imo_pipeline.extract import extract
    from imo_pipeline.manifest import load_manifest, write_manifest
    from imo_pipeline.training.trainer import TrainConfig, train
    from media_utils import draw_face

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("timeline")
    data = generate(root / "data", per_class=6)
    man = load_manifest(data.manifest)
    for u in man:                         # faces the Haar cascade finds, so the video run detects faces
        folder = root / "data" / u.frames
        for f in folder.iterdir():
            f.unlink()
        for k in range(2):
            cv2.imwrite(str(folder / f"{k}.png"), cv2.cvtColor(draw_face(96, 46 + 2 * k, 48, 30), cv2.COLOR_RGB2BGR))
    values = {"ang": 2.0, "hap": 1.0, "neu": 0.0, "sad": -1.5}
    reg = write_manifest([{**u.to_json(), "label": values[u.label]} for u in man], root / "data" / "reg.jsonl")
    encoders = {"audio": build_extractor("fbank", "audio", device="cpu"),
                "text": build_extractor(minilm_path(), "text", device="cpu"),
                "video": build_extractor("pixels", "video", device="cpu", face=True, crop_size=32, size=8)}
    stores = {}
    for m, ext in encoders.items():
        stores[m] = str(root / "cache" / f"{m}.zarr")
        assert not extract(man, ext, stores[m], progress=False).failed
    assert not extract(load_manifest(reg), encoders["audio"], root / "cache" / "reg.zarr", progress=False).failed
    out = {}
    for name, head, mods, task in (("audio", "probe", ["audio"], "classification"),
                                   ("at", "concat", ["audio", "text"], "classification"),
                                   ("atv", "concat", ["audio", "text", "video"], "classification"),
                                   ("reg", "probe", ["audio"], "regression")):
        st = {"audio": str(root / "cache" / "reg.zarr")} if name == "reg" else {m: stores[m] for m in mods}
        cfg = TrainConfig(modalities=mods, stores=st, manifest=str(reg if name == "reg" else data.manifest),
                          head=head, task=task, epochs=2, batch_size=8, lr=5e-3, seed=0)
        train(cfg, root / "runs" / name, progress=False, log=lambda *a: None)
        out[name] = root / "runs" / name
    return out


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open(encoding="utf-8")))


def check_outputs(out: Path, stem: str, duration: float, labels: list[str] | None) -> list[dict[str, str]]:
    """The CSV, JSON and PNG exist and agree; rows lie inside the recording, in order; probabilities sum to 1."""
    rows = read_csv(out / f"{stem}.timeline.csv")
    doc = json.loads((out / f"{stem}.timeline.json").read_text())
    assert (out / f"{stem}.timeline.png").read_bytes()[:8] == PNG
    assert not list(out.glob("*.tmp"))
    assert doc["duration"] == pytest.approx(duration, abs=0.05) and doc["labels"] == labels
    assert len(doc["segments"]) == len(rows) > 0
    assert [int(r["segment"]) for r in rows] == list(range(len(rows)))
    starts = [float(r["start"]) for r in rows]
    assert starts == sorted(starts)
    for r, seg in zip(rows, doc["segments"]):
        a, b = float(r["start"]), float(r["end"])
        assert 0 <= a < b <= duration + 1e-3
        assert (seg["start"], seg["end"]) == pytest.approx((a, b), abs=1e-3) and (seg["text"] or "") == r["text"]
        if r["error"]:
            continue
        if labels is None:
            assert math.isfinite(float(r["value"])) and seg["value"] == pytest.approx(float(r["value"]), abs=1e-6)
        else:
            p = {k: float(r[f"p_{k}"]) for k in labels}
            assert sum(p.values()) == pytest.approx(1.0, abs=1e-5) and all(0 <= x <= 1 for x in p.values())
            assert r["label"] == max(p, key=p.get) == seg["label"]
    return rows


def times_of(out: Path) -> list[dict[str, str]]:
    return read_csv(next(out.glob("*.timeline.csv")))


def clips_matched(rows, truth) -> int:
    """Clips holding exactly one row's midpoint (as test_prepare_media.match_clips)."""
    mids = [(float(r["start"]) + float(r["end"])) / 2 for r in rows]
    return sum(sum(a - 0.3 <= m <= b + 0.3 for m in mids) == 1 for a, b, _ in truth)


@pytest.mark.slow
def test_several_minute_recording_gets_one_row_per_speech_segment(runs, imo, tmp_path):
    from imo_pipeline.media.segment import Segmenter

    clips = speech_clips()
    rec = tmp_path / "interview.wav"
    truth = build_recording(rec, clips * 7, seed=5, rate=44100, channels=2)    # 70 clips, 5.9 min
    duration = sf.info(rec).duration
    assert duration > 5 * 60
    r = imo("predict", runs["audio"], "--timeline", rec, "--out", tmp_path / "out", "--no-progress")
    assert r.code == 0, r.stderr
    assert f"{len(times_of(tmp_path / 'out'))} segments labelled, 0 failed" in r.stdout
    rows = check_outputs(tmp_path / "out", "interview", duration, ["ang", "hap", "neu", "sad"])
    tolerance = math.ceil(len(truth) / 10)
    assert abs(len(rows) - len(truth)) <= tolerance and clips_matched(rows, truth) >= len(truth) - tolerance
    assert all(r["text"] == "" for r in rows)                 # an audio-only run: no transcripts unless asked
    times, _ = Segmenter().times(rec)                         # the segments `imo prepare media` makes
    np.testing.assert_allclose([(float(r["start"]), float(r["end"])) for r in rows], times, atol=1e-3)


@pytest.mark.slow
def test_fixed_windows_give_the_expected_rows_and_regression_values(runs, imo, tmp_path):
    rec = tmp_path / "call.flac"
    build_recording(rec, speech_clips()[:3], seed=2)
    duration = sf.info(rec).duration
    for args, window, hop in ((["--window", "4", "--hop", "2"], 4, 2), (["--window", "5"], 5, 5)):
        out = tmp_path / f"w{window}"
        r = imo("predict", runs["reg"], "--timeline", rec, "--out", out, "--no-progress", *args)
        assert r.code == 0, r.stderr
        rows = check_outputs(out, "call", duration, None)
        want = fixed_windows(duration, window, hop)
        assert len(rows) == len(want) == math.ceil(max(0, duration - window) / hop) + 1
        np.testing.assert_allclose([(float(x["start"]), float(x["end"])) for x in rows], want, atol=1e-3)
        assert list(rows[0]) == ["segment", "start", "end", "text", "value", "error"]
        doc = json.loads((out / "call.timeline.json").read_text())
        assert doc["task"] == "regression" and doc["segmentation"] == {"type": "windows", "window": window, "hop": hop}


@pytest.mark.slow
def test_text_run_gets_transcripts_and_equals_prepare_media_then_predict_manifest(runs, imo, tmp_path):
    from imo_pipeline.manifest import load_manifest
    from imo_pipeline.media.asr import ASRConfig
    from imo_pipeline.predict import Predictor
    from imo_pipeline.prepare import prepare

    rec = tmp_path / "talk.wav"
    truth = build_recording(rec, speech_clips()[:4], seed=4)
    r = imo("predict", runs["at"], "--timeline", rec, "--out", tmp_path, "--language", "en", "--no-progress")
    assert r.code == 0, r.stderr
    rows = check_outputs(tmp_path, "talk", sf.info(rec).duration, ["ang", "hap", "neu", "sad"])
    assert len(rows) == 4 and clips_matched(rows, truth) == 4
    assert word_error_rate([t for *_, t in truth], [x["text"] for x in rows]) < MAX_WER
    doc = json.loads((tmp_path / "talk.timeline.json").read_text())
    assert doc["asr"]["language"] == "en" and all(s["asr"]["language"] == "en" for s in doc["segments"])

    # the same segments, transcripts and probabilities as `imo prepare media` + `imo predict --manifest`
    utts, _ = prepare("media", rec, tmp_path / "m.jsonl", paths=[rec], asr=ASRConfig(language="en"),
                      progress=False, data_root=tmp_path)
    preds = Predictor.load(runs["at"]).predict_manifest(load_manifest(tmp_path / "m.jsonl"), progress=False)
    assert [(u.audio.start, u.audio.end, u.text) for u in utts] == \
        [(float(x["start"]), float(x["end"]), x["text"]) for x in rows]
    got = np.array([[float(x[f"p_{k}"]) for k in preds[0].labels] for x in rows])
    np.testing.assert_allclose(got, np.stack([p.scores for p in preds]), atol=2e-6)


@pytest.mark.slow
def test_video_run_embeds_faces_and_a_faceless_segment_fails_only_its_row(runs, imo, tmp_path):
    from media_utils import blank_frame, draw_face, write_av

    wav = tmp_path / "track.wav"
    truth = build_recording(wav, speech_clips()[:4], seed=3)
    audio, _ = sf.read(wav, dtype="float32")
    a, b, _ = truth[2]                                  # the third clip: nobody in the picture
    frames = [blank_frame(96, seed=k) if a - 0.5 <= k / 25 <= b + 0.5 else draw_face(96, 48, 48, 30)
              for k in range(int(len(audio) / 16000 * 25))]
    video = write_av(tmp_path / "meeting.mp4", audio, 16000, frames)
    r = imo("predict", runs["atv"], "--timeline", video, "--out", tmp_path / "out", "--language", "en",
            "--no-progress")
    assert r.code == 1, r.stderr                       # some rows failed: as `imo predict --manifest`
    rows = check_outputs(tmp_path / "out", "meeting", len(audio) / 16000, ["ang", "hap", "neu", "sad"])
    assert len(rows) == 4 and clips_matched(rows, truth) == 4
    assert [bool(x["error"]) for x in rows] == [False, False, True, False]
    assert "no face found" in rows[2]["error"] and rows[2]["label"] == "" and rows[2]["text"]
    assert all(x["text"] and x["label"] for i, x in enumerate(rows) if i != 2)
    assert "3 segments labelled, 1 failed" in r.stdout and "segment 2 [" in r.stderr and "no face" in r.stderr


@pytest.mark.slow
def test_refusals_are_one_line_and_short_files_still_predict(runs, imo, tmp_path):
    rec = tmp_path / "talk.wav"
    build_recording(rec, speech_clips()[:1])
    sf.write(tmp_path / "quiet.wav", 0.001 * np.random.default_rng(0).standard_normal(48000).astype(np.float32),
             16000)
    (tmp_path / "file").write_text("x")
    cases = [
        ((runs["atv"], "--timeline", rec), "uses video (faces) but the file has no video track"),
        ((runs["audio"], "--timeline", tmp_path / "quiet.wav"), "no speech found"),
        ((runs["audio"], "--timeline", tmp_path / "missing.wav"), "missing.wav: no such file"),
        ((runs["audio"], "--timeline", rec, "--audio", rec), "leave out --audio"),
        ((runs["audio"], "--timeline", rec, "--hop", "2"), "--hop 2 needs --window"),
        ((runs["audio"], "--timeline", rec, "--max-len", "1"), "--max-len 1.0"),
        ((runs["audio"], "--timeline", rec, "--out", tmp_path / "file"), "is a file; give a folder"),
        ((runs["audio"], "--timeline", tmp_path / "file"), "could not be decoded"),
    ]
    for args, message in cases:
        r = imo("predict", *args, "--no-progress")
        assert r.code == 2 and r.error.startswith("error: ") and message in r.error, (args, r.stderr)
        assert "Traceback" not in r.stderr
    r = imo("predict", runs["audio"], "--audio", rec)      # a short file: as before
    assert r.code == 0 and r.stdout.startswith("label: ")
    r = imo("predict", runs["audio"], "--timeline", rec, "--out", tmp_path / "t", "--no-progress", "--transcribe",
            "--language", "en")
    assert r.code == 0 and read_csv(tmp_path / "t" / "talk.timeline.csv")[0]["text"]   # transcripts on request


@pytest.mark.slow
def test_memory_stays_flat_on_long_recordings(runs, tmp_path):
    """Peak RSS of labelling a 1-minute and a 6-minute recording (44.1 kHz stereo). The 6-minute signal would
    take 124 MB as decoded, 22 MB at 16 kHz mono: labelling (pass 2) must not grow with the length, and the
    whole (VAD pass and PNG included) by far less than the signal. Measured above the loaded run: whole
    53 vs 68 MB (the PNG's canvas grows up to its 10 rows; the VAD pass by 9 MB), labelling 6 vs 2 MB."""
    clips = speech_clips()
    for name, reps in (("short", 1), ("long", 7)):
        build_recording(tmp_path / f"{name}.wav", clips * reps, seed=6, rate=44100, channels=2)
    code = ("import resource, sys; from imo_pipeline.predict import Predictor; "
            "from imo_pipeline.timeline import Timeline, plot_timeline; "
            "rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "tl = Timeline(Predictor.load(sys.argv[1])); base = rss(); "
            "scan = tl.scan(sys.argv[2]); before = rss(); segs = list(tl.label(scan)); after = rss(); "
            "plot_timeline(scan, segs, sys.argv[3]); "
            "print(len(segs), sum(s.error is None for s in segs), rss() - base, after - before)")
    got = {}
    for name in ("short", "long"):
        res = subprocess.run([sys.executable, "-c", code, str(runs["audio"]), str(tmp_path / f"{name}.wav"),
                              str(tmp_path / f"{name}.png")], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert res.returncode == 0, res.stderr[-2000:]
        rows, ok, whole, label = res.stdout.split()[-4:]
        assert int(rows) == int(ok) > 0
        got[name] = float(whole), float(label)
    assert got["long"][0] - got["short"][0] < 40, got
    assert got["long"][1] - got["short"][1] < 12, got
