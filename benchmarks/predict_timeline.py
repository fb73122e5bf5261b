"""Peak memory and speed of `imo predict RUN --timeline` on recordings of several lengths (not run by CI).

Trains two small runs on the demo's generated set (``audio``: a probe on fbank; ``text``: concat on fbank +
all-MiniLM-L6-v2, which makes the timeline transcribe every segment with Whisper base), builds
recordings from the real speech clips of Debian's pocketsphinx-testdata (random 0.5-2 s pauses, 44.1 kHz
stereo WAV, as benchmarks/prepare_media.py), and runs the command on each in a fresh process, printing
its peak RSS (ru_maxrss), wall time, recording seconds per second and segment count. Flat memory means
the peak does not grow with the recording's length.

    python benchmarks/predict_timeline.py --minutes 1 8 [--run audio|text] [--window 4 --hop 2]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from prepare_media import build  # noqa: E402  (the same recordings as the prepare media benchmark)

CHILD = """
import resource, sys, time
from imo_pipeline.cli import app
t = time.time()
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "WALL", time.time() - t)
"""


def train_run(root: Path, kind: str) -> Path:
    """A 2-epoch run on 24 generated utterances: ``audio`` (fbank probe) or ``text`` (fbank + MiniLM concat)."""
    from extractors import build_extractor
    from imo_pipeline.demo.run import minilm_path
    from imo_pipeline.demo.synth import generate
    from imo_pipeline.extract import extract
    from imo_pipeline.manifest import load_manifest
    from imo_pipeline.training.trainer import TrainConfig, train

    data = generate(root / "data", per_class=6)
    man = load_manifest(data.manifest)
    mods = ["audio"] if kind == "audio" else ["audio", "text"]
    stores = {}
    for m in mods:
        ext = build_extractor("fbank", "audio", device="cpu") if m == "audio" else \
            build_extractor(minilm_path(), "text", device="cpu")
        stores[m] = str(root / "cache" / f"{m}.zarr")
        extract(man, ext, stores[m], progress=False)
    cfg = TrainConfig(modalities=mods, stores=stores, manifest=str(data.manifest),
                      head="probe" if kind == "audio" else "concat", epochs=2, batch_size=8, lr=5e-3)
    train(cfg, root / "run", progress=False, log=lambda *a: None)
    return root / "run"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 8])
    ap.add_argument("--run", choices=("audio", "text"), default="audio")
    ap.add_argument("--language", default="en")
    ap.add_argument("--window", type=float)
    ap.add_argument("--hop", type=float)
    ap.add_argument("--keep", type=Path, help="copy each recording's CSV, JSON and PNG into this folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run = train_run(tmp / "train", args.run)
        print(f"run: {args.run} ({run})")
        print(f"{'minutes':>8s} {'segments':>9s} {'peak MB':>8s} {'wall s':>7s} {'x real time':>12s}")
        for minutes in args.minutes:
            wav = tmp / f"rec{minutes:g}.wav"
            build(wav, minutes)
            out = args.keep or tmp / "out"
            cmd = ["predict", str(run), "--timeline", str(wav), "--out", str(out), "--no-progress",
                   "--language", args.language]
            if args.window:
                cmd += ["--window", str(args.window)] + (["--hop", str(args.hop)] if args.hop else [])
            res = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True, env=os.environ)
            m = re.search(r"PEAK_MB (\S+) WALL (\S+)", res.stdout)
            if res.returncode != 0 or m is None:
                sys.exit(f"failed on {minutes} min: {res.stderr[-2000:]}")
            doc = json.loads((out / f"{wav.stem}.timeline.json").read_text())
            peak, wall = float(m.group(1)), float(m.group(2))
            print(f"{minutes:8g} {len(doc['segments']):9d} {peak:8.0f} {wall:7.1f} {doc['duration'] / wall:12.1f}")


if __name__ == "__main__":
    main()
