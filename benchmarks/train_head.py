"""Fusion-head training speed on an IEMOCAP-sized cache: each speed-up, stacked runs, a whole cross-validation.

Writes (once, then reused) a synthetic cache of 5,531 utterances under --root
(default /tmp/imo_bench_iemocap): audio 50 frames/s x 768 with IEMOCAP-like
durations (gamma, clipped to 0.5-30 s, mean ~4.5 s), text ~20 tokens x 768,
video 5 frames/s x 256, five sessions (folds); float16 Zarr stores written with
the real PartWriter. Then, for the default cross-attention head on a,t,v with
imo's trainer (default options, as `imo train` uses them), it prints:

  - seconds per epoch (training steps + validation) with the speed-ups of
    ``imo_pipeline.training.speedups`` switched on one by one from the original
    code path, then with 2 torch threads;
  - the 5 folds trained one run after another vs. stacked side by side
    (``train_runs``), with --threads 1 and 2 (--stack-epochs epochs each; on 2
    threads a stacked group trains two stacks at once, one thread each);
  - the wall time of a real 5-fold x 20-epoch cross-validation (as
    `imo train --folds fold` runs it; --cv-epochs, 0 to skip);
  - the speed-up against the original design, where a base-size audio encoder
    (random-init wav2vec2-base config) runs inside every training step: the
    encoder is timed on a few of the same batches (raw 16 kHz audio of the same
    durations, frozen, no_grad) and extrapolated to a whole epoch by padded
    audio seconds.

Usage: python benchmarks/train_head.py [--stack-epochs 1] [--cv-epochs 20] [--root /tmp/imo_bench_iemocap]

Per-head mode (``--heads all`` or ``--heads mult,tfn``): trains every named
registered head with its default options (single-modality heads on audio, the
others on a,t,v) for ``--epochs`` epochs on the same cache and prints a table of
seconds per epoch (training steps alone and with the validation pass) and
parameters; no encoder comparison. ``--utterances N`` builds a smaller cache of
the same shape (under ``<root>-N``) for a quick check, e.g.
``python benchmarks/train_head.py --heads all --utterances 200 --epochs 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np
import torch

N = 5531
CLASSES = ["ang", "hap", "neu", "sad"]
SPECS = {"audio": (768, 50.0), "text": (768, None), "video": (256, 5.0)}


def make_cache(root: Path, seed: int = 0, n: int = N) -> tuple[Path, dict[str, Path]]:
    """The synthetic IEMOCAP-sized manifest and stores of ``n`` utterances (skipped when already complete)."""
    from imo_pipeline.manifest import ShardSpec, load_manifest, write_manifest
    from imo_pipeline.store import PartWriter, StoreMeta, open_store

    stores = {m: root / f"{m}.zarr" for m in SPECS}
    manifest = root / "manifest.jsonl"
    if manifest.is_file() and all(s.exists() and open_store(s).complete and len(open_store(s)) == n
                                  for s in stores.values()):
        return manifest, stores
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    durations = np.clip(rng.gamma(2.0, 2.3, n), 0.5, 30.0)
    labels = rng.integers(0, 4, n)
    lines = [{"id": f"Ses{i % 5 + 1:02d}_{i:05d}", "label": CLASSES[c], "fold": f"Ses{i % 5 + 1:02d}",
              "split": "test" if i % 5 == 4 else "valid" if i % 10 == 3 else "train",
              "audio": {"path": f"wav/{i:05d}.wav", "start": 0.0, "end": round(float(d), 3)}}
             for i, (d, c) in enumerate(zip(durations, labels))]
    write_manifest(lines, manifest)
    fp = load_manifest(manifest).fingerprint
    pool = rng.standard_normal((1 << 16, 768)).astype(np.float16)  # noise frames, sliced per utterance
    for m, (dim, rate) in SPECS.items():
        direction = rng.standard_normal((4, dim)).astype(np.float16)
        meta = StoreMeta(modality=m, encoder={"type": "synthetic-bench", "dim": dim}, encoder_fingerprint=f"bench-{m}",
                         layers=[12], dim=dim, frame_rate=rate, manifest_fingerprint=fp)
        t0 = time.perf_counter()
        with PartWriter(stores[m], ShardSpec(0, 1), meta, [x["id"] for x in lines]) as w:
            for x, d, c in zip(lines, durations, labels):
                T = max(1, int(round(d * rate))) if rate else max(3, int(rng.poisson(20)))
                lo = int(rng.integers(0, len(pool) - T))
                w.add(x["id"], (pool[lo:lo + T, :dim] + np.float16(0.05) * direction[c])[:, None, :])
                w.commit()
            w.finish({})
        print(f"wrote {stores[m]} in {time.perf_counter() - t0:.1f} s")
    return manifest, stores


def encoder_seconds_per_epoch(trainer, durations: dict[str, float], n_batches: int) -> tuple[float, float, float]:
    """(measured s, measured padded audio s, extrapolated s per epoch) of wav2vec2-base on the epoch's batches."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config()).eval()  # base size: 12 layers x 768, ~95M parameters
    ids = [u.id for u in trainer.corpus.utterances]
    order = [b for band in trainer.schedule(1) for b in band]
    padded = [len(b) * max(durations[ids[k]] for k in b) for b in order]  # padded audio seconds per batch
    pick = np.random.default_rng(1).choice(len(order), n_batches, replace=False)
    best = None
    before = torch.get_num_threads()
    for threads in (1, 2):
        torch.set_num_threads(threads)
        spent, seconds = 0.0, 0.0
        with torch.inference_mode():
            model(torch.randn(1, 16000))  # warm-up
            for j in pick:
                b = order[j]
                longest = max(durations[ids[k]] for k in b)
                wave = torch.randn(len(b), int(longest * 16000))
                t0 = time.perf_counter()
                model(wave)
                spent += time.perf_counter() - t0
                seconds += padded[j]
        print(f"  encoder on {threads} thread(s): {spent:.1f} s for {seconds:.0f} s of padded audio")
        if best is None or spent < best[0]:
            best = (spent, seconds)
    torch.set_num_threads(before)
    spent, seconds = best
    return spent, seconds, spent / seconds * sum(padded)


def per_head(names: list[str], manifest: Path, stores: dict[str, Path], root: Path, epochs: int) -> None:
    """Seconds per epoch of every head in ``names`` (default options) on the same cache, printed as a table."""
    from heads import HEADS
    from imo_pipeline.training.trainer import TrainConfig, Trainer, load_corpus

    corpora = {}
    rows = []
    for name in names:
        cls = HEADS.get(name)
        mods = ["audio", "text", "video"][: cls.max_modalities or 3]
        key = (cls.layers, tuple(mods))
        cfg = TrainConfig(modalities=mods, stores={m: str(stores[m]) for m in mods}, manifest=str(manifest),
                          epochs=epochs, head=name)
        if key not in corpora:                                   # stores loaded once per layer choice and subset
            t0 = time.perf_counter()
            corpora[key] = (load_corpus(cfg, progress=False, log=lambda *a: None)[1], time.perf_counter() - t0)
        corpus, load_s = corpora[key]
        trainer = Trainer(cfg, root / "runs" / f"bench-{name}-{int(time.time())}", corpus, progress=False,
                          log=lambda *a: None)
        trainer.run()
        hist = trainer.history()
        steps = trainer.train_time / len(hist)
        rows.append((name, "+".join(m[0] for m in mods), trainer.resolved_config()["parameters"], steps,
                     float(np.mean([r["seconds"] for r in hist])), load_s))
        print(f"  {name}: {steps:.2f} s per epoch (training steps)", flush=True)
    print(f"\n{'head':<16}{'inputs':<8}{'parameters':>12}{'s/epoch':>10}{'+valid':>10}{'load s':>8}")
    for name, mods, params, steps, total, load_s in rows:
        print(f"{name:<16}{mods:<8}{params:>12,}{steps:>10.2f}{total:>10.2f}{load_s:>8.1f}")
    print(f"(default options of each head; {epochs} epoch(s) each; audio downsampled to ~12.5 frames/s as `imo train` "
          f"does; 'load s' is loading the stores into memory, once per run)")


STEPS = [  # (label, what switching it on changes); cumulative, in this order
    ("original", None),
    ("+ gathered batches", "fast_batches"),
    ("+ fused attention (SDPA)", "sdpa"),
    ("+ start-token-only blocks", "start_only"),
    ("+ numpy dropout masks", "fast_dropout"),
    ("+ fused AdamW", "fused_adamw"),
    ("+ input norm folded", "fold_input_norm"),
]


def one_epoch(cfg, corpus, root: Path) -> tuple[float, float]:
    """(training steps s, validation s) of the first epoch of a fresh run of ``cfg``."""
    from imo_pipeline.training.trainer import Trainer

    trainer = Trainer(cfg, root / "runs" / f"epoch-{time.time_ns()}", corpus, progress=False, log=lambda *a: None)
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        t0 = time.perf_counter()
        trainer.train_epoch(1)
        t1 = time.perf_counter()
        trainer.validate(1)
        return t1 - t0, time.perf_counter() - t1
    finally:
        torch.set_num_threads(before)


def speedups(cfg, corpus, root: Path) -> dict[int, float]:
    """Seconds per epoch with the speed-ups switched on one by one (then 2 threads); returns s/epoch by threads."""
    import dataclasses

    from imo_pipeline.training.speedups import SPEEDUPS

    print("\nseconds per epoch (training steps + validation), each speed-up switched on in turn:", flush=True)
    names = [k for _, k in STEPS if k]
    for k in names:
        setattr(SPEEDUPS, k, False)
    first = last = None
    try:
        for label, key in STEPS:
            if key:
                setattr(SPEEDUPS, key, True)
            train_s, valid_s = one_epoch(cfg, corpus, root)
            first = first or train_s
            print(f"  {label:<28s}{train_s:7.1f} s + {valid_s:4.1f} s   {first / train_s:5.2f}x"
                  f"{'' if last is None else f'  (this step {last / train_s:.2f}x)'}", flush=True)
            last = train_s
    finally:
        for k in names:
            setattr(SPEEDUPS, k, True)
    per_thread = {1: last}
    for threads in (2,):
        train_s, valid_s = one_epoch(dataclasses.replace(cfg, threads=threads), corpus, root)
        per_thread[threads] = train_s
        print(f"  {'+ ' + str(threads) + ' torch threads':<28s}{train_s:7.1f} s + {valid_s:4.1f} s   "
              f"{first / train_s:5.2f}x  (this step {last / train_s:.2f}x)", flush=True)
    return per_thread


def fold_jobs(cfg, root: Path, tag: str, epochs: int, threads: int) -> list:
    import dataclasses

    out = root / "runs" / f"{tag}-{time.time_ns()}"
    return [(dataclasses.replace(cfg, fold_key="fold", test_group=g, epochs=epochs, threads=threads),
             out / f"fold-{g}") for g in ("Ses01", "Ses02", "Ses03", "Ses04", "Ses05")]


def stacked_vs_sequential(cfg, corpus, root: Path, epochs: int) -> int:
    """The 5 folds for ``epochs`` epochs: one run after another vs. stacked, with --threads 1 and 2; returns the
    thread count under which the stacked runs were faster."""
    from imo_pipeline.training.trainer import train_runs

    print(f"\nthe 5 folds x {epochs} epoch(s), training + validation + commits (run-epochs per minute):", flush=True)
    times = {}
    for threads in (1, 2):
        for stack in (False, True):
            jobs = fold_jobs(cfg, root, "stack" if stack else "seq", epochs, threads)
            t0 = time.perf_counter()
            train_runs(jobs, corpus, progress=False, log=lambda *a: None, stack=stack)
            times[threads, stack] = spent = time.perf_counter() - t0
            how = ("stacked: 5 side by side" + (", 2 stacks in 2 threads" if threads == 2 else "") if stack else
                   "one run after another" + (" (2 torch threads)" if threads == 2 else ""))
            print(f"  --threads {threads}  {how:<48s}{spent:7.1f} s  {60 * 5 * epochs / spent:5.1f} run-epochs/min  "
                  f"{times[1, False] / spent:5.2f}x", flush=True)
    best = min((1, 2), key=lambda t: times[t, True])
    print(f"  stacked / one after another: {times[1, False] / times[1, True]:.2f}x on 1 thread, "
          f"{times[2, False] / times[2, True]:.2f}x on 2 threads; stacked on {best} thread(s) / one after another "
          f"on 1 (the default): {times[1, False] / times[best, True]:.2f}x (aim >= 3x)", flush=True)
    return best


def cv_time(cfg, root: Path, epochs: int, threads: int) -> None:
    """A real 5-fold cross-validation of the default head, as `imo train --folds fold` runs it."""
    import dataclasses

    from imo_pipeline.training.trainer import cross_validate

    out = root / "runs" / f"cv-{time.time_ns()}"
    t0 = time.perf_counter()
    result = cross_validate(dataclasses.replace(cfg, epochs=epochs, threads=threads), out, "fold", progress=False,
                            log=lambda *a: None)
    spent = time.perf_counter() - t0
    print(f"\n5-fold x {epochs}-epoch cross-validation, `imo train --folds fold --threads {threads}` (stacked; "
          f"loading the stores included): "
          f"{spent:.0f} s = {spent / 60:.1f} min (aim <= 5 min); test UA {result['mean']['ua']:.3f} "
          f"+- {result['std']['ua']:.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/imo_bench_iemocap"))
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the per-head mode")
    ap.add_argument("--stack-epochs", type=int, default=1, help="epochs of the stacked vs one-after-another runs")
    ap.add_argument("--cv-epochs", type=int, default=20, help="epochs of the timed cross-validation (0: skip it)")
    ap.add_argument("--encoder-batches", type=int, default=2)
    ap.add_argument("--heads", default=None, help="per-head mode: 'all' or a comma list of registered heads")
    ap.add_argument("--utterances", type=int, default=N, help=f"cache size (default {N}, IEMOCAP's)")
    args = ap.parse_args()

    from imo_pipeline.manifest import load_manifest
    from imo_pipeline.training.trainer import TrainConfig, Trainer, load_corpus

    print(f"CPU: {os.cpu_count()} cores, torch {torch.__version__}. The CPU may be shared with other jobs: figures "
          f"are one run's, compared side by side.")
    root = args.root if args.utterances == N else args.root.with_name(f"{args.root.name}-{args.utterances}")
    manifest, stores = make_cache(root, n=args.utterances)
    if args.heads:
        from heads import HEADS
        names = HEADS.names() if args.heads == "all" else [h.strip() for h in args.heads.split(",") if h.strip()]
        for h in names:
            HEADS.get(h)                                         # unknown names listed before any work
        per_head(names, manifest, stores, root, args.epochs)
        return
    cfg = TrainConfig(modalities=["audio", "text", "video"], stores={m: str(p) for m, p in stores.items()},
                      manifest=str(manifest), epochs=args.epochs)
    t0 = time.perf_counter()
    _, corpus = load_corpus(cfg, progress=False, log=lambda *a: None)
    load_s = time.perf_counter() - t0
    trainer = Trainer(cfg, root / "runs" / f"probe-{time.time_ns()}", corpus, progress=False, log=lambda *a: None)
    head = trainer.resolved_config()["head"]
    print(f"head: cross_attention {json.dumps({k: v for k, v in head['config'].items() if k != 'type'})}, "
          f"{trainer.resolved_config()['parameters']:,} parameters; preprocess "
          f"{ {m: t.prep.to_dict() for m, t in corpus.tables.items()} }")
    print(f"train split {len(trainer.split['train'])} utterances, batch {cfg.batch_size}; stores loaded into memory "
          f"in {load_s:.1f} s (once per run)")

    per_thread = speedups(cfg, corpus, root)
    per_epoch = min(per_thread.values())
    print(f"ten epochs of one run now: {10 * per_epoch / 60:.1f} min (+ {load_s:.0f} s loading)")
    threads = stacked_vs_sequential(cfg, corpus, root, args.stack_epochs) if args.stack_epochs else 1
    if args.cv_epochs:
        cv_time(cfg, root, args.cv_epochs, threads)

    durations = {u.id: u.audio.end for u in load_manifest(manifest)}
    spent, seconds, enc_epoch = encoder_seconds_per_epoch(trainer, durations, args.encoder_batches)
    print(f"wav2vec2-base in the loop: measured {spent:.1f} s on {args.encoder_batches} batches "
          f"({seconds:.0f} s of padded audio, {spent / seconds:.3f} s per audio second); "
          f"extrapolated to one epoch: {enc_epoch:.0f} s (encoder forward only, frozen, no backward)")
    print(f"speed-up of cached training: {(enc_epoch + per_epoch) / per_epoch:.0f}x per epoch "
          f"({enc_epoch + per_epoch:.0f} s vs {per_epoch:.1f} s)")


if __name__ == "__main__":
    main()
