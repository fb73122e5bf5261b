"""Peak memory and speed of `imo prepare media` on recordings of several lengths (not run by CI).

Builds recordings from the real speech clips of Debian's pocketsphinx-testdata (LibriVox
sentences and card phrases, random 0.5-2 s pauses), written as 44.1 kHz stereo WAV, and runs
`imo prepare media` on each in a fresh process, printing its peak RSS (ru_maxrss), wall time,
audio minutes per minute, and segment count. Flat memory means the peak does not grow with
the recording's length.

    python benchmarks/prepare_media.py --minutes 1 5 [--no-asr] [--language en]
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

import numpy as np
import soundfile as sf
import soxr

TESTDATA = Path("/usr/share/pocketsphinx/test/data")


def clips() -> list[Path]:
    out = []
    for folder, name in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (TESTDATA / folder / name).read_text().splitlines():
            m = re.search(r"\((.+)\)\s*$", line)
            if m:
                out.append(TESTDATA / folder / f"{m.group(1)}.wav")
    return out


def build(path: Path, minutes: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    files = clips()
    with sf.SoundFile(path, "w", 44100, 2, "PCM_16") as f:
        written = 0
        while written < minutes * 60 * 44100:
            x, _ = sf.read(files[int(rng.integers(len(files)))], dtype="float32")
            x = np.concatenate([x, np.zeros(int(rng.uniform(0.5, 2.0) * 16000), np.float32)])
            x = soxr.resample(x, 16000, 44100)
            f.write(np.repeat(x[:, None], 2, 1))
            written += len(x)


CHILD = """
import resource, sys, time
from imo_pipeline.cli import app
t = time.time()
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    print("PEAK_MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "WALL", time.time() - t)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, nargs="+", default=[1, 5])
    ap.add_argument("--no-asr", action="store_true")
    ap.add_argument("--language", default="en")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for minutes in args.minutes:
            wav = tmp / f"rec{minutes:g}.wav"
            build(wav, minutes)
            out = tmp / f"rec{minutes:g}.jsonl"
            cmd = ["prepare", "media", str(wav), "--out", str(out), "--no-progress", "--language", args.language]
            if args.no_asr:
                cmd.append("--no-asr")
            res = subprocess.run([sys.executable, "-c", CHILD, *cmd], capture_output=True, text=True, env=os.environ)
            m = re.search(r"PEAK_MB (\S+) WALL (\S+)", res.stdout)
            if res.returncode or not m:
                sys.exit(res.stdout[-2000:] + res.stderr[-2000:])
            peak, wall = float(m.group(1)), float(m.group(2))
            n = sum(1 for _ in out.open())
            audio = sf.info(wav).duration / 60
            print(json.dumps({"minutes": round(audio, 2), "asr": not args.no_asr, "segments": n,
                              "peak_rss_mb": round(peak), "wall_s": round(wall, 1),
                              "audio_min_per_min": round(audio / (wall / 60), 2)}))


if __name__ == "__main__":
    main()
