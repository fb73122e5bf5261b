"""`imo sweep` on the IEMOCAP-sized cache: trials per hour and total time, against plain `imo train` per trial.

Builds (once, then reuses) the synthetic IEMOCAP-sized cache of benchmarks/train_head.py (``make_cache``:
5,531 utterances, audio 50 frames/s x 768, text ~20 x 768, video 5 frames/s x 256, five sessions in the
``fold`` field), then in one run:

  1. ``imo sweep`` of the default cross_attention head on a,t,v over the default space, leave-one-session-out
     (``--folds fold``), ``--trials`` trials of ``--epochs`` epochs, median pruning after each fold, trials of
     one architecture stacked (``--stack``, where the trainer can stack them), then the best retrained with
     ``--final-seeds`` seeds; as a subprocess, exactly as a user runs it;
  2. the first ``--baseline`` of the same trials (their parameters read from the study) each run with plain
     ``imo train --folds fold`` one after another (every fold, no pruning, no stacking, its own store load);

and prints: search time, final time, total time, trials per hour, seconds per trial in the sweep vs in plain
`imo train`, and their ratio (how much faster one sweep trial costs than one hand-run CV). The aim on 2
cores is a 20-trial sweep in <= 30 minutes, which needs pruning and stacking to pay.

Usage: python benchmarks/sweep.py [--trials 20] [--epochs 20] [--baseline 3] [--workers N]
Quick check (small cache): python benchmarks/sweep.py --utterances 300 --trials 4 --epochs 2 --baseline 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_head import N, make_cache  # noqa: E402


def imo(*args: str, cwd: Path) -> float:
    """Run `imo ARGS` as a subprocess (as a user would); its wall-clock seconds. Exits on failure."""
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "imo_pipeline", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"imo {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def trial_flags(params: dict) -> list[str]:
    """A trial's parameters as `imo train` options."""
    out = []
    for k, v in params.items():
        if k.startswith("head."):
            out += ["--head-opt", f"{k[5:]}={v}"]
        else:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/imo_bench_iemocap"))
    ap.add_argument("--utterances", type=int, default=N, help=f"cache size (default {N}, IEMOCAP's)")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--stack", type=int, default=4)
    ap.add_argument("--final-seeds", type=int, default=3)
    ap.add_argument("--baseline", type=int, default=3, help="trials also run with plain `imo train --folds fold`")
    ap.add_argument("--workers", type=int, default=None, help="a local dask cluster (default: in the sweep process)")
    ap.add_argument("--head", default="cross_attention")
    ap.add_argument("--threads", type=int, default=2, help="imo train --threads of every run (2: two stacks at once)")
    args = ap.parse_args()

    import optuna

    root = args.root if args.utterances == N else args.root.with_name(f"{args.root.name}-{args.utterances}")
    manifest, stores = make_cache(root, n=args.utterances)
    work = root / "sweep-bench" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    fixed = ["-m", "a,t,v", "--head", args.head, "--manifest", str(manifest), "--epochs", str(args.epochs),
             "--folds", "fold", "--threads", str(args.threads), "--no-progress", *[x for m, p in stores.items() for x in ("--store", f"{m}={p}")]]
    print(f"CPU: {os.cpu_count()} cores (shared with other jobs: one run's figures, measured side by side); cache "
          f"{root} ({args.utterances} utterances, 5 folds); head {args.head}, default space, {args.epochs} epochs, "
          f"{args.trials} trials, --stack {args.stack}, --threads {args.threads}, final seeds {args.final_seeds}, "
          f"{f'{args.workers} dask workers' if args.workers else 'in process'}", flush=True)
    extra = ["--workers", str(args.workers)] if args.workers else []
    total = imo("sweep", *fixed, "--trials", str(args.trials), "--stack", str(args.stack), "--final-seeds",
                str(args.final_seeds), *extra, "--out", str(work / "sweep"), cwd=work)
    result = json.loads((work / "sweep" / "result.json").read_text())
    search = result["search_seconds"]
    study = optuna.load_study(study_name="imo-sweep", storage=f"sqlite:///{work / 'sweep' / 'study.db'}")
    states = result["trials"]
    folds_run = sum(len(t.user_attrs.get("fold_values", {})) for t in study.trials)
    print(f"sweep: {total / 60:.1f} min in all ({search / 60:.1f} min search, {(total - search) / 60:.1f} min loading, "
          f"final runs and report); trials {states}; {folds_run} fold runs of {5 * args.trials} without pruning",
          flush=True)
    print(f"  {args.trials / (search / 3600):.1f} trials per hour (search); {search / args.trials:.1f} s per trial",
          flush=True)
    done = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")][: args.baseline]
    base = []
    for t in done:
        s = imo("train", *fixed, *trial_flags(t.params), "--out", str(work / f"train-trial-{t.number}"), cwd=work)
        base.append(s)
        print(f"  plain `imo train --folds fold` of trial {t.number} ({t.state.name.lower()} in the sweep): "
              f"{s:.1f} s", flush=True)
    if base:
        per = sum(base) / len(base)
        print(f"per trial: sweep {search / args.trials:.1f} s vs plain imo train {per:.1f} s -> "
              f"{per / (search / args.trials):.2f}x (a 20-trial sweep by hand: ~{20 * per / 60:.0f} min)")
    print(f"best: trial {result['final']['trial']}, valid {result['metric']} {result['final']['search_value']:.4f}; "
          f"final test {result['metric']} {result['final']['test']['mean'][result['metric']]:.4f}; report "
          f"{work / 'sweep' / 'report.md'}")


if __name__ == "__main__":
    main()
