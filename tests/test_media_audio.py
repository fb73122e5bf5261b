import numpy as np
import pytest
import soundfile as sf

from audio_utils import tone
from imo_pipeline.errors import MediaError
from imo_pipeline.media.audio import audio_duration, load_audio


@pytest.mark.parametrize("ext, sr, channels", [("wav", 16000, 1), ("flac", 44100, 2), ("ogg", 22050, 1), ("wav", 8000, 2)])
def test_decode_downmix_resample(tmp_path, ext, sr, channels):
    path = tmp_path / f"x.{ext}"
    sf.write(path, tone(2.0, sr, 300, channels), sr)
    wav = load_audio(path, 16000)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(len(wav) - 32000) <= 2
    seg = load_audio(path, 16000, 0.5, 1.25)
    assert abs(len(seg) - 12000) <= 2
    assert audio_duration(path, 0.5, 1.25) == pytest.approx(0.75, abs=1e-3)
    # the segment is the same signal as the matching slice of the whole file
    if ext in ("wav", "flac") and sr == 16000:
        np.testing.assert_allclose(seg, wav[8000:20000], atol=1e-4)


def test_stereo_downmix_is_the_channel_mean(tmp_path):
    x = np.stack([np.linspace(-0.5, 0.5, 1600), np.zeros(1600)], axis=1).astype(np.float32)
    sf.write(tmp_path / "s.wav", x, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 16000), x.mean(axis=1), atol=1e-6)


def test_bad_audio_errors(tmp_path):
    with pytest.raises(MediaError, match="does not exist"):
        load_audio(tmp_path / "missing.wav", 16000)
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    with pytest.raises(MediaError, match="could not be decoded"):
        load_audio(tmp_path / "bad.wav", 16000)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 16000)
    with pytest.raises(MediaError, match="past its end|no samples"):
        load_audio(tmp_path / "empty.wav", 16000)
    nan = tone(0.5, 16000)
    nan[100] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    with pytest.raises(MediaError, match="NaN or Inf"):
        load_audio(tmp_path / "nan.wav", 16000)
    sf.write(tmp_path / "short.wav", tone(1.0, 16000), 16000)
    with pytest.raises(MediaError, match="past its end"):
        load_audio(tmp_path / "short.wav", 16000, start=2.0, end=3.0)


def test_non_regular_files_are_refused_before_opening(tmp_path):
    import os

    os.mkfifo(tmp_path / "pipe.wav")           # opening it for reading would block forever
    (tmp_path / "folder.wav").mkdir()
    for fn in (lambda p: audio_duration(p), lambda p: load_audio(p, 16000)):
        with pytest.raises(MediaError, match=r"pipe.wav is a FIFO \(named pipe\), not a regular file"):
            fn(tmp_path / "pipe.wav")
        with pytest.raises(MediaError, match="folder.wav is a folder, not a file"):
            fn(tmp_path / "folder.wav")
        with pytest.raises(MediaError, match="/dev/null is a character device, not a regular file"):
            fn("/dev/null")
    os.symlink(tmp_path / "pipe.wav", tmp_path / "link.wav")   # links are followed
    with pytest.raises(MediaError, match="link.wav is a FIFO"):
        audio_duration(tmp_path / "link.wav")
