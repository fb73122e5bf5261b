"""Audio extraction throughput: the imo pipeline vs. the model alone vs. a naive per-utterance loop.

Generates ~200 utterances with IEMOCAP-like durations (0.5-30 s, mean ~4.5 s,
16 kHz wav), builds a random-init wav2vec2-base-sized model (same compute as
facebook/wav2vec2-base) in a temp folder, and measures audio-seconds per second:

  (a) pipeline  `imo_pipeline.extract.extract`: manifest -> decode -> model -> Zarr store
  (b) ceiling   the model alone on the same batches with the pipeline's settings, media in memory
  (c) naive     per utterance: soundfile + HF feature extractor + model (no_grad) + one .npy file

Usage: python benchmarks/extract_audio.py [--n 200] [--layers last] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import soundfile as sf
import torch


def make_dataset(root: Path, n: int, seed: int = 0) -> Path:
    """Wav files with gamma-distributed durations clipped to [0.5, 30] s, mean ~4.5 s."""
    from imo_pipeline.manifest import write_manifest

    rng = np.random.default_rng(seed)
    durations = np.clip(rng.gamma(2.0, 2.3, n), 0.5, 30.0)
    (root / "wav").mkdir(parents=True)
    lines = []
    for i, d in enumerate(durations):
        t = np.arange(int(d * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 300) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / "wav" / f"utt{i:04d}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
        lines.append({"id": f"utt{i:04d}", "label": "neu", "audio": {"path": f"wav/utt{i:04d}.wav"}})
    return write_manifest(lines, root / "manifest.jsonl")


def make_model(folder: Path) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)   # base: 12 layers x 768, group-norm front end
    Wav2Vec2FeatureExtractor(return_attention_mask=False).save_pretrained(folder)
    return folder


def run_ceiling(ext, manifest, budget, streams, threads) -> float:
    """Model only: same batch plan and stream settings as the pipeline, waveforms already in memory."""
    from imo_pipeline.extract import plan_batches

    sizes = {u.id: ext.measure(u, manifest) for u in manifest}
    media = {u.id: ext.load(u, manifest) for u in manifest}
    batches = plan_batches(sizes, budget, ext.batching)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda b: ext._run_all([media[k] for k in b]), batches))
    seconds = time.perf_counter() - t0
    torch.set_num_threads(old)
    return seconds


def run_naive(model_dir: Path, manifest, out: Path, layers: str) -> float:
    """The loop most research code runs: one utterance at a time, one .npy per utterance."""
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out.mkdir()
    t0 = time.perf_counter()
    for u in manifest:
        wav, sr = sf.read(manifest.resolve(u.audio.path), dtype="float32")
        inputs = fe(wav, sampling_rate=sr, return_tensors="pt")
        with torch.no_grad():
            hs = model(**inputs, output_hidden_states=True).hidden_states
        keep = torch.stack(hs, dim=2)[0] if layers == "all" else hs[-1][0][:, None]
        np.save(out / f"{u.id}.npy", keep.numpy().astype(np.float16))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--layers", default="last")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-seconds", type=float, default=None)
    args = ap.parse_args()

    from extractors import build_extractor
    from imo_pipeline.extract import default_streams, extract
    from imo_pipeline.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = load_manifest(make_dataset(tmp / "data", args.n))
        model_dir = make_model(tmp / "model")
        ext = build_extractor(str(model_dir), "audio", layers=args.layers, device=args.device)
        total = sum(ext.measure(u, manifest) for u in manifest)
        budget = args.batch_seconds or ext.default_budget * (4 if ext.device.type != "cpu" else 1)
        streams, threads = default_streams(ext)
        print(f"{len(manifest)} utterances, {total:.0f} s of audio (mean {total / len(manifest):.2f} s); "
              f"wav2vec2-base-sized random-init model on {ext.device}; {torch.get_num_threads()} torch threads; "
              f"batching={ext.batching}, streams={streams} x {threads} thread(s)")

        r = extract(manifest, ext, tmp / "store.zarr", budget=budget, progress=False)
        pipeline = r.seconds
        ceiling = run_ceiling(ext, manifest, budget, streams, threads)
        naive = run_naive(model_dir, manifest, tmp / "naive", args.layers) if ext.device.type == "cpu" else float("nan")

        print(f"(a) pipeline : {total / pipeline:7.1f} audio-s/s  ({pipeline:.1f} s)")
        print(f"(b) ceiling  : {total / ceiling:7.1f} audio-s/s  ({ceiling:.1f} s)  model only, same batches")
        print(f"(c) naive    : {total / naive:7.1f} audio-s/s  ({naive:.1f} s)  per-utterance loop + .npy")
        print(f"a/b = {ceiling / pipeline:.2f}   (aim >= 0.85)")
        print(f"a/c = {naive / pipeline:.2f}   (aim >= 1.3)")


if __name__ == "__main__":
    main()
