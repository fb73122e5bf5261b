"""Scale-out extraction: peak memory at 1x and 4x the utterances, and wall time on 1 vs 2 dask workers.

Generates a manifest of segments cut from a few long 16 kHz wav files (1x = --n
utterances, 4x = 4 * --n over the same files), and a random-init wav2vec2 with a
wide output (768 dims, all 2 hidden states kept, ~150 KB of float16 per audio
second) so the embeddings of the 4x run (~--n * 4 * 4.5 s * 150 KB) are far larger
than the commit block (--shard-mb). Then it measures, each in a fresh process:

  memory   `imo extract` on 1x and on 4x: peak resident memory (ru_maxrss of the
           process); extraction memory must not grow with the number of utterances
  workers  `imo extract --workers 1 --parts 4` and `--workers 2 --parts 4` on 1x: wall time
           of the whole command (cluster start + model load + extraction); each dask worker
           runs one single-threaded model stream (dask sets OMP_NUM_THREADS=1)

Usage: python benchmarks/extract_scale.py [--n 150] [--shard-mb 32] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import soundfile as sf


def make_data(root: Path, n: int, files: int = 8, seed: int = 0) -> dict[str, Path]:
    """Long wav files plus manifests ``m1.jsonl`` (n segments) and ``m4.jsonl`` (4n segments)."""
    from imo_pipeline.manifest import write_manifest

    rng = np.random.default_rng(seed)
    (root / "wav").mkdir(parents=True, exist_ok=True)
    # IEMOCAP-like (mean ~4.5 s); 4x repeats the 1x durations so the longest utterance (which sets the
    # model's activation memory) is the same and only the count differs
    one = np.clip(rng.gamma(2.0, 2.3, n), 0.5, 20.0)
    durations = np.tile(one, 4)
    per_file = -(-len(durations) // files)
    lines = []
    for f in range(files):
        segs = durations[f * per_file:(f + 1) * per_file]
        total = float(segs.sum()) + 1.0
        t = np.arange(int(total * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (110 + 20 * f) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(root / "wav" / f"long{f}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
        start = 0.0
        for d in segs:
            lines.append({"id": f"utt{len(lines):05d}", "label": "neu",
                          "audio": {"path": f"wav/long{f}.wav", "start": round(start, 3), "end": round(start + d, 3)}})
            start += float(d)
    first = lines[:n]  # the 1x set: one of each duration (all from the first files)
    return {"1x": write_manifest(first, root / "m1.jsonl"), "4x": write_manifest(lines, root / "m4.jsonl"),
            "audio_1x": float(one.sum()), "audio_4x": float(durations.sum())}


def make_model(folder: Path) -> Path:
    """wav2vec2 with a 768-wide output but a cheap front end and one layer: fast, yet big embeddings."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=768, num_hidden_layers=1, num_attention_heads=12, intermediate_size=1024,
                         conv_dim=(32,) * 7, feat_extract_norm="layer")
    Wav2Vec2Model(cfg).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(return_attention_mask=True).save_pretrained(folder)
    return folder


def child(argv: list[str]) -> None:
    """Run `imo extract ARGS` in this process, then print its peak RSS (MB) as JSON."""
    from imo_pipeline.cli import app

    t0 = time.perf_counter()
    try:
        app(argv, standalone_mode=False)
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
        print(json.dumps({"peak_mb": peak, "seconds": time.perf_counter() - t0}), flush=True)


def run_child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"imo extract {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(cmd: list[str]) -> tuple[float, str]:
    """(wall seconds, the summary line) of one command."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - t0, out.stdout.strip().splitlines()[-1]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=150, help="utterances at 1x")
    ap.add_argument("--shard-mb", type=float, default=32, help="commit block size (Zarr shard) in MB")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it")
    a = ap.parse_args()

    root = a.keep or Path(tempfile.mkdtemp(prefix="imo-scale-"))
    try:
        data = make_data(root, a.n)
        model = make_model(root / "model")
        base = ["extract", "-m", "audio", "--encoder", str(model), "--layers", "all", "--device", "cpu",
                "--data-root", str(root), "--shard-mb", str(a.shard_mb), "--no-progress"]
        print(f"data: 1x = {a.n} utterances ({data['audio_1x']:.0f} s audio), 4x = {4 * a.n} "
              f"({data['audio_4x']:.0f} s); model 768-d x 2 hidden states; commit block {a.shard_mb} MB")
        print("note: the 2-core CPU of this machine is shared with other jobs right now; wall times are noisy")

        mem = {}
        for k in ("1x", "4x"):
            r = run_child([*base, "--manifest", str(data[k]), "--out", str(root / f"mem{k}.zarr")])
            from imo_pipeline.store import open_store
            st = open_store(root / f"mem{k}.zarr")
            mem[k] = r["peak_mb"]
            print(f"memory {k}: {len(st)} utterances, embeddings {st.nbytes / 2**20:.0f} MB, "
                  f"peak RSS {r['peak_mb']:.0f} MB ({r['seconds']:.1f} s)")
        print(f"memory ratio 4x/1x: {mem['4x'] / mem['1x']:.2f} (aim <= 1.2)")

        imo = [sys.executable, "-m", "imo_pipeline"]
        wall = {}
        for w in (1, 2):
            wall[w], line = timed([*imo, *base, "--manifest", str(data["1x"]), "--out", str(root / f"w{w}.zarr"),
                                   "--workers", str(w), "--parts", "4"])
            print(f"workers {w}: {wall[w]:.1f} s wall for {a.n} utterances in 4 parts, incl. cluster start "
                  f"[{line}]")
        print(f"speed-up 2 vs 1 workers: {wall[1] / wall[2]:.2f}x")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
