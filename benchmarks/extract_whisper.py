"""Whisper encoder throughput: reference (30-s pad) vs trimmed mode vs a naive per-utterance loop.

Generates utterances with IEMOCAP-like durations (benchmarks/extract_audio.py's
generator: 0.5-30 s, mean ~4.5 s, 16 kHz wav), builds a random-init model of
Whisper base's encoder size (6 layers x 512, 80 mel bins, 1500 positions; one
small decoder layer, which is never run) in a temp folder, and measures
audio-seconds per second:

  (a) reference  imo pipeline, --encoder whisper:FOLDER, mode=reference (every utterance padded to 30 s)
  (b) trimmed    imo pipeline, mode=trimmed (only the frames the audio needs)
  (c) naive      per utterance, EmoBox's loop: soundfile + WhisperFeatureExtractor (30-s pad) + encoder
                 (no_grad, all hidden states) + slice + one .npy file

With --faster-whisper it also runs the real Whisper base through CTranslate2
(faster-whisper:base, packaged weights) in both modes, float32 and int8.

With --similarity it measures instead how far trimmed embeddings are from the
reference ones with the real Whisper base weights on real recorded speech
(the five LibriVox sentences of Debian's pocketsphinx-testdata, crops of them
and joined versions): cosine of frames and of mean-pooled vectors, per layer
through `transformers` (the CTranslate2 weights converted back) and for the
CTranslate2 runtime in float32 and int8.

Usage: python benchmarks/extract_whisper.py [--n 200] [--layers last] [--device cpu] [--faster-whisper]
       python benchmarks/extract_whisper.py --similarity
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import soundfile as sf
import torch

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def make_dataset(root: Path, n: int) -> Path:
    """IEMOCAP-like durations, generated exactly as benchmarks/extract_audio.py does."""
    spec = importlib.util.spec_from_file_location("extract_audio", Path(__file__).with_name("extract_audio.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.make_dataset(root, n)


def make_model(folder: Path) -> Path:
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    torch.manual_seed(0)
    config = WhisperConfig(d_model=512, encoder_layers=6, encoder_attention_heads=8, encoder_ffn_dim=2048,
                           num_mel_bins=80, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=8,
                           decoder_ffn_dim=2048, vocab_size=51865)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def run_naive(model_dir: Path, manifest, out: Path, layers: str) -> float:
    """EmoBox's loop: one utterance at a time, padded to 30 s, first floor(samples / 320) frames, one .npy each."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    fe = WhisperFeatureExtractor.from_pretrained(model_dir)
    encoder = WhisperModel.from_pretrained(model_dir).get_encoder().eval()
    out.mkdir()
    t0 = time.perf_counter()
    for u in manifest:
        wav, sr = sf.read(manifest.resolve(u.audio.path), dtype="float32")
        feats = fe(wav, sampling_rate=sr, return_tensors="pt").input_features
        with torch.no_grad():
            hs = encoder(feats, output_hidden_states=True).hidden_states
        keep = torch.stack(hs, dim=2)[0] if layers == "all" else hs[-1][0][:, None]
        np.save(out / f"{u.id}.npy", keep[: len(wav) // 320].numpy().astype(np.float16))
    return time.perf_counter() - t0


def throughput(args) -> None:
    from extractors import build_extractor
    from imo_pipeline.extract import default_streams, extract
    from imo_pipeline.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = load_manifest(make_dataset(tmp / "data", args.n))
        model_dir = make_model(tmp / "model")
        runs: list[tuple[str, str, dict]] = [
            ("reference", f"whisper:{model_dir}", {"mode": "reference", "layers": args.layers}),
            ("trimmed", f"whisper:{model_dir}", {"mode": "trimmed", "layers": args.layers}),
        ]
        if args.faster_whisper:
            runs += [(f"fw-{m}-{ct}", "faster-whisper:base", {"mode": m, "compute_type": ct})
                     for ct in ("float32", "int8") for m in ("reference", "trimmed")]
        total = None
        seconds: dict[str, float] = {}
        for name, encoder, options in runs:
            ext = build_extractor(encoder, "audio", device=args.device, **options)
            if total is None:
                total = sum(ext.measure(u, manifest) for u in manifest)
                streams, threads = default_streams(ext)
                print(f"{len(manifest)} utterances, {total:.0f} s of audio (mean {total / len(manifest):.2f} s); "
                      f"Whisper-base-sized random-init encoder on {ext.device}; {torch.get_num_threads()} torch "
                      f"threads; streams={streams} x {threads} thread(s); layers={args.layers}")
            seconds[name] = extract(manifest, ext, tmp / f"{name}.zarr", progress=False).seconds
            print(f"  {name:22s}: {total / seconds[name]:7.1f} audio-s/s  ({seconds[name]:.1f} s)  "
                  f"batching={ext.batching}", flush=True)
        if ext.device.type == "cpu":
            seconds["naive"] = run_naive(model_dir, manifest, tmp / "naive", args.layers)
            naive = seconds["naive"]
            print(f"  {'naive (EmoBox loop)':22s}: {total / naive:7.1f} audio-s/s  ({naive:.1f} s)")
        print(f"trimmed / reference = {seconds['reference'] / seconds['trimmed']:.2f}x")
        if "naive" in seconds:
            print(f"reference / naive   = {seconds['naive'] / seconds['reference']:.2f}x   (same computation)")
            print(f"trimmed / naive     = {seconds['naive'] / seconds['trimmed']:.2f}x")
        if args.faster_whisper:
            for ct in ("float32", "int8"):
                r, t = seconds[f"fw-reference-{ct}"], seconds[f"fw-trimmed-{ct}"]
                print(f"faster-whisper:base {ct}: trimmed / reference = {r / t:.2f}x")


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def similarity(args) -> None:
    from extractors import build_extractor
    from extractors.whisper_ct2 import ct2_whisper_to_transformers
    from imo_pipeline.assets import whisper_base_dir

    files = sorted(LIBRIVOX.glob("*.wav"))
    if len(files) != 5:
        raise SystemExit("needs Debian's pocketsphinx-testdata (apt-get install pocketsphinx-testdata)")
    speech = [sf.read(f, dtype="float32")[0] for f in files]
    pause = np.zeros(8000, np.float32)
    clips = {f"sentence {i + 1}": w for i, w in enumerate(speech)}
    clips["1-s crop"], clips["2-s crop"] = speech[0][16000:32000], speech[2][8000:40000]
    clips["5 joined"] = np.concatenate([x for w in speech for x in (w, pause)])
    clips["7 joined (>30 s)"] = np.concatenate([clips["5 joined"], speech[0], pause, speech[1]])
    with tempfile.TemporaryDirectory() as tmp:
        folder = ct2_whisper_to_transformers(whisper_base_dir(), Path(tmp) / "whisper-base")
        hf = {m: build_extractor(f"whisper:{folder}", "audio", mode=m, layers="all", device="cpu")
              for m in ("reference", "trimmed")}
        ct = {(m, c): build_extractor("faster-whisper:base", "audio", mode=m, compute_type=c, device="cpu")
              for m in ("reference", "trimmed") for c in ("float32", "int8")}
        print("OpenAI Whisper base, real speech (pocketsphinx-testdata LibriVox); trimmed vs reference cosine:\n"
              "frames = mean over frames of the frame cosine (min), pooled = cosine of the mean-pooled vectors")
        print(f"{'clip':18s} {'s':>5s} | {'last layer: frames (min)':>25s} {'pooled':>7s} | "
              f"{'pooled per layer 0..6':40s} | {'int8 trimmed vs f32 ref':>23s} | {'hf-ct2':>7s}")
        for name, wav in clips.items():
            r, t = hf["reference"].embed([wav])[0], hf["trimmed"].embed([wav])[0]
            cr = ct[("reference", "float32")].embed([wav])[0][:, 0]
            ct_t = ct[("trimmed", "float32")].embed([wav])[0][:, 0]
            i8t = ct[("trimmed", "int8")].embed([wav])[0][:, 0]
            frames = cosine(r[:, -1], t[:, -1])
            per_layer = " ".join(f"{cosine(r[:, k].mean(0), t[:, k].mean(0)):.3f}" for k in range(r.shape[1]))
            cross = max(np.abs(cr - r[:, -1]).max(), np.abs(ct_t - t[:, -1]).max())
            print(f"{name:18s} {len(wav) / 16000:5.2f} | {frames.mean():17.4f} ({frames.min():+.2f}) "
                  f"{cosine(r[:, -1].mean(0), t[:, -1].mean(0)):7.4f} | {per_layer:40s} | "
                  f"{cosine(cr, i8t).mean():10.4f} {cosine(cr.mean(0), i8t.mean(0)):.4f}   | {cross:7.1e}")
        r8 = [ct[("reference", "int8")].embed([w])[0][:, 0] for w in speech]
        r32 = [ct[("reference", "float32")].embed([w])[0][:, 0] for w in speech]
        print("int8 vs float32, reference mode, the 5 sentences: frames "
              + " ".join(f"{cosine(a, b).mean():.4f}" for a, b in zip(r8, r32)))
        print("hf-ct2: largest |difference| between the transformers and CTranslate2 (float32) last layers, same mode")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--layers", default="last")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--faster-whisper", action="store_true", help="also the real Whisper base through CTranslate2")
    ap.add_argument("--similarity", action="store_true", help="trimmed vs reference on real speech instead")
    args = ap.parse_args()
    similarity(args) if args.similarity else throughput(args)


if __name__ == "__main__":
    main()
