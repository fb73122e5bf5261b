"""Face-video extraction throughput: the imo pipeline vs. a per-frame loop.

Writes ``--n`` frames folders (3-20 PNG frames of 160x160 with a face each,
as the original work stored them) and embeds them with a random-init FabNet
encoder and a random-init ViT-small-sized model (12 x 384, 224 px), with
Haar face detection and crop. Measures frames per second:

  (a) pipeline  `imo_pipeline.extract.extract`: decode + detect in a background thread, frames of many
                utterances batched through the model, Zarr store
  (b) naive     per frame: imread + detect + crop + model on one frame (no_grad); one .npy per utterance
  (c) naive-1t  the same loop with one torch thread (the fairer baseline on a busy shared CPU)

Usage: python benchmarks/extract_video.py [--n 40] [--encoders fabnet,vit]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import numpy as np
import torch


def make_manifest(root: Path, n: int, seed: int = 0) -> Path:
    from imo_pipeline.manifest import write_manifest
    from media_utils import moving_face_frames, write_frames_folder

    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        write_frames_folder(root / f"f{i:03d}", moving_face_frames(int(rng.integers(3, 21))))
        lines.append({"id": f"utt{i:03d}", "label": "neu", "frames": f"f{i:03d}"})
    return write_manifest(lines, root / "manifest.jsonl")


def make_encoder(kind: str, tmp: Path) -> str:
    if kind == "fabnet":
        from extractors.fabnet import FabNetEncoder

        torch.manual_seed(0)
        torch.save({"state_dict": FabNetEncoder().state_dict()}, tmp / "fabnet.pth")
        return f"fabnet:{tmp / 'fabnet.pth'}"
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    folder = tmp / "vit-small"
    ViTModel(ViTConfig(hidden_size=384, num_attention_heads=6, intermediate_size=1536),
             add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor().save_pretrained(folder)
    return str(folder)


def run_naive(ext, manifest, out: Path, threads: int | None = None) -> float:
    """One frame at a time through the same preprocessing and model, one .npy per utterance."""
    from imo_pipeline.media.video import frame_files, load_image

    old = torch.get_num_threads()
    torch.set_num_threads(threads or old)
    out.mkdir()
    t0 = time.perf_counter()
    for u in manifest:
        rows = []
        for f in frame_files(manifest.resolve(u.frames)):
            crop = ext.cropper(load_image(f))
            if crop is not None:
                with torch.no_grad():
                    rows.append(ext._encode(crop[None])[0])
        np.save(out / f"{u.id}.npy", torch.stack(rows).numpy().astype(np.float16))
    seconds = time.perf_counter() - t0
    torch.set_num_threads(old)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--encoders", default="fabnet,vit")
    args = ap.parse_args()

    from extractors import build_extractor
    from imo_pipeline.extract import default_streams, extract
    from imo_pipeline.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = load_manifest(make_manifest(tmp / "data", args.n))
        for kind in args.encoders.split(","):
            ext = build_extractor(make_encoder(kind, tmp), "video", device="cpu")
            frames = sum(ext.measure(u, manifest) for u in manifest)
            streams, threads = default_streams(ext)
            print(f"\n{kind}: {len(manifest)} utterances, {frames:.0f} frames; {torch.get_num_threads()} torch threads; "
                  f"budget {ext.default_budget:.0f} frames, streams={streams} x {threads} thread(s). "
                  f"The CPU is shared with other jobs: compare the ratios, not the absolute rates.")
            r = extract(manifest, ext, tmp / f"{kind}.zarr", progress=False)
            naive = run_naive(ext, manifest, tmp / f"naive-{kind}")
            naive1 = run_naive(ext, manifest, tmp / f"naive1-{kind}", threads=1)
            print(f"(a) pipeline : {frames / r.seconds:7.1f} frames/s  ({r.seconds:.1f} s)")
            print(f"(b) naive    : {frames / naive:7.1f} frames/s  ({naive:.1f} s)  per-frame loop + .npy")
            print(f"(c) naive-1t : {frames / naive1:7.1f} frames/s  ({naive1:.1f} s)  same loop, one torch thread")
            print(f"a/b = {naive / r.seconds:.2f}   a/c = {naive1 / r.seconds:.2f}")


if __name__ == "__main__":
    main()
