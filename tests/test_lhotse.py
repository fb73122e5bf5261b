"""lhotse CutSets in (`imo prepare lhotse`) and out (`imo export-manifest --format lhotse`), with the lhotse
library itself building and reading the manifests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from imo_pipeline.cli import app
from imo_pipeline.errors import ConfigError
from imo_pipeline.manifest import load_manifest
from imo_pipeline.prepare import prepare

import lhotse
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

runner = CliRunner()


def tone(path: Path, seconds: float, sr: int = 16000, channels: int = 1, freq: float = 220.0) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.repeat(x[:, None], channels, 1) if channels > 1 else x, sr)
    return path


def sup(cut_id: str, rec: Recording, start: float, dur: float, text=None, speaker=None, channel=0, **custom):
    return SupervisionSegment(id=cut_id, recording_id=rec.id, start=start, duration=dur, channel=channel, text=text,
                              speaker=speaker, custom=custom or None)


@pytest.fixture
def corpus(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    mono = Recording.from_file(tone(audio / "talk.wav", 6.0), recording_id="talk")
    stereo = Recording.from_file(tone(audio / "call.wav", 4.0, channels=2), recording_id="call")
    gone = Recording.from_file(tone(audio / "gone.wav", 2.0), recording_id="gone")
    (audio / "gone.wav").unlink()
    c1 = MonoCut("talk-1", 0.5, 2.0, 0, recording=mono,
                 supervisions=[sup("talk-1a", mono, 0.0, 1.0, "hello there", "anna", emotion="hap", split="train"),
                               sup("talk-1b", mono, 1.0, 1.0, "how are you", "anna", emotion="hap")])
    c2 = MonoCut("talk-2", 3.0, 2.5, 0, recording=mono,
                 supervisions=[sup("talk-2", mono, 0.0, 2.5, "go away", "ben", emotion="ang", split="dev", fold=3)])
    c3 = lhotse.MultiCut("call-1", 0.0, 4.0, [0, 1], recording=stereo,
                         supervisions=[sup("call-1", stereo, 0.0, 4.0, "fine", "carl", channel=[0, 1], emotion="neu")])
    one_channel = MonoCut("call-ch1", 0.0, 4.0, 1, recording=stereo,
                          supervisions=[sup("call-ch1", stereo, 0.0, 4.0, "x", channel=1, emotion="neu")])
    faster = c2.perturb_speed(1.1)
    mixed = c1.mix(c2)
    no_label = MonoCut("talk-3", 5.0, 1.0, 0, recording=mono, supervisions=[sup("talk-3", mono, 0.0, 1.0, "uh")])
    missing = MonoCut("gone-1", 0.0, 2.0, 0, recording=gone, supervisions=[sup("gone-1", gone, 0, 2.0, emotion="sad")])
    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([c1, c2, c3, one_channel, faster, mixed, no_label, missing]).to_file(path)
    return path


def test_import_cuts_with_labels_text_speakers_and_reported_problems(corpus, tmp_path):
    utts, report = prepare("lhotse", corpus, tmp_path / "m.jsonl", label_field="emotion", data_root=tmp_path)
    by = {u.id: u for u in utts}
    assert sorted(by) == ["call-1", "talk-1", "talk-2"]
    t1 = by["talk-1"]
    assert (t1.label, t1.text, t1.speaker, t1.split) == ("hap", "hello there how are you", "anna", "train")
    assert t1.audio.path.endswith("audio/talk.wav") and (t1.audio.start, t1.audio.end) == (0.5, 2.5)
    assert (by["talk-2"].split, by["talk-2"].fold, by["talk-2"].label) == ("valid", "3", "ang")
    assert by["call-1"].audio.end == 4.0 and by["call-1"].label == "neu"
    why = {i.where.split("(")[-1].rstrip(")"): (i.kind, i.reason) for i in report.issues}
    assert why["call-ch1"][0] == "skipped" and "mix of all channels" in why["call-ch1"][1]
    assert "transforms" in why["talk-2_sp1.1"][1]
    assert any(k.startswith("mix") or "MixedCut" in r for k, (_, r) in why.items())
    assert why["talk-3"] == ("unknown_label", "no 'emotion' in its supervisions; utterance left out")
    assert why["gone-1"][0] == "missing"
    # no label field: a prediction-only manifest keeps the unlabeled cut too
    utts, _ = prepare("lhotse", corpus, None, data_root=tmp_path)
    assert "talk-3" in {u.id for u in utts} and all(u.label is None for u in utts)
    # the audio an imo extractor reads is the cut's audio
    from imo_pipeline.media.audio import load_audio
    cut = next(c for c in CutSet.from_file(corpus) if c.id == "talk-2")
    m = load_manifest(tmp_path / "m.jsonl", tmp_path)
    u = m.by_id()["talk-2"]
    np.testing.assert_allclose(load_audio(m.resolve(u.audio.path), 16000, u.audio.start, u.audio.end),
                               cut.load_audio()[0], atol=1e-4)


def test_command_and_url_sources_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    wav = tone(tmp_path / "a.wav", 1.0)
    for kind, source in (("command", f"touch {marker} && cat {wav}"), ("url", "https://example.invalid/a.wav")):
        rec = Recording(id="r", sources=[AudioSource(type=kind, channels=[0], source=source)], sampling_rate=16000,
                        num_samples=16000, duration=1.0)
        ok = Recording.from_file(wav, recording_id="ok")
        path = tmp_path / f"{kind}.jsonl.gz"
        CutSet.from_cuts([MonoCut("fine", 0, 1.0, 0, recording=ok), MonoCut("bad", 0, 1.0, 0, recording=rec)]).to_file(path)
        with pytest.raises(ConfigError) as e:
            prepare("lhotse", path, tmp_path / "m.jsonl")
        msg = str(e.value)
        assert "\n" not in msg and "cut 'bad'" in msg and "never runs commands or fetches URLs" in msg
        r = runner.invoke(app, ["prepare", "lhotse", str(path), "--out", str(tmp_path / "m.jsonl")])
        assert r.exit_code != 0 and not (tmp_path / "m.jsonl").exists()
    assert not marker.exists()


def test_round_trip_imo_to_lhotse_to_imo(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tone(data / "s1.wav", 5.0)
    tone(data / "s2.flac", 3.0, sr=22050, channels=2)
    from media_utils import moving_face_frames
    from imo_pipeline.media.video import write_video
    write_video(data / "s1.mp4", moving_face_frames(10), 5.0)
    lines = [
        {"id": "u1", "label": "hap", "split": "train", "fold": "1", "speaker": "spk1", "text": "so happy",
         "audio": {"path": "data/s1.wav", "start": 0.0, "end": 2.0},
         "video": {"path": "data/s1.mp4", "start": 0.0, "end": 2.0}, "targets": {"valence": 3.5}},
        {"id": "u2", "label": "sad", "split": "test", "fold": "2", "speaker": "spk2", "text": "so sad",
         "audio": {"path": "data/s1.wav", "start": 2.5, "end": 5.0}},
        {"id": "ü3 wörds", "label": 1.25, "split": "valid", "audio": {"path": "data/s2.flac"}, "source": "s2.flac",
         "asr": {"avg_logprob": -0.2}},
        {"id": "text-only", "label": "neu", "text": "no audio here"},
    ]
    src = tmp_path / "m.jsonl"
    src.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8")
    cuts = tmp_path / "out" / "cuts.jsonl.gz"
    r = runner.invoke(app, ["export-manifest", str(src), "--format", "lhotse", "--out", str(cuts)])
    assert r.exit_code == 1 and "wrote 3 cuts on 2 recordings" in r.output and "text-only: no audio" in r.output
    cs = CutSet.from_file(cuts)                            # lhotse reads what imo wrote
    assert [c.id for c in cs] == ["u1", "u2", "ü3 wörds"]
    c3 = cs[2]
    assert type(c3).__name__ == "MultiCut" and c3.channel == [0, 1] and c3.recording.sampling_rate == 22050
    assert c3.load_audio().shape == (2, 3 * 22050)
    assert cs[1].load_audio().shape == (1, 40000)

    back = tmp_path / "back.jsonl"
    r = runner.invoke(app, ["prepare", "lhotse", str(cuts), "--label-field", "emotion", "--out", str(back)])
    assert r.exit_code == 0, r.output
    before = {u.id: u for u in load_manifest(src)}
    after = {u.id: u for u in load_manifest(back)}
    assert sorted(after) == ["u1", "u2", "ü3 wörds"]
    for uid, u in after.items():
        b = before[uid]
        assert (u.label, u.split, u.fold, u.speaker, u.text, u.targets) == \
            (b.label, b.split, b.fold, b.speaker, b.text, b.targets)
        assert Path(u.audio.path) == (tmp_path / b.audio.path).resolve()
        assert u.audio.start == b.audio.start
        assert u.audio.end == (b.audio.end if b.audio.end is not None else 3.0)
        assert (u.video is None) == (b.video is None)
    assert Path(after["u1"].video.path) == (data / "s1.mp4").resolve() and after["u1"].video.end == 2.0
    assert after["ü3 wörds"].extra["asr"] == {"avg_logprob": -0.2} and after["ü3 wörds"].extra["source"] == "s2.flac"
    with pytest.raises(ConfigError, match="--format 'csv'"):
        from imo_pipeline.commands.export_manifest import export_manifest
        export_manifest(src, tmp_path / "x", format="csv", data_root=None, label_field="emotion")
