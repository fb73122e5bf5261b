"""Training several runs of one architecture at once, stacked on a leading run dimension.

Folds, seeds or sweep trials of one head train side by side: every parameter of the ``K`` runs becomes one
``(K, *shape)`` tensor, each step gathers one batch per run into a ``(K, B, T, ...)`` tensor (padded to the
largest) and one ``Head.stacked_forward`` / backward computes all runs, so many small matrix products become
a few large ones. Nothing is shared between runs but the arithmetic:

- each run keeps its own ``Trainer``: split, task, targets, run folder, counters, checkpoints, validation,
  early stopping and resume are exactly those of the run trained alone (``Trainer.begin``/``end_epoch``);
- each run takes the batches it would take alone (``Trainer.schedule``; the length bands of
  ``data.epoch_batches`` keep the runs' lengths close at every step; a run with fewer batches in a band
  sits out some of its steps);
- each run keeps its own torch random state (swapped in for its per-step random work: ``Trainer.take`` and
  its dropout seed), its own learning-rate schedule, gradient clipping and AdamW state (torch's fused AdamW
  kernel on the run's row of the stacked weights, as ``torch.optim.AdamW(fused=True)`` does alone).

So a run trained stacked ends with the same metrics as alone, within float tolerance (dropout included:
``heads.base.Stack`` draws each run's masks from its own seed over its own extent; ``Trainer.take`` must not
draw from torch's global generator, which the runs do not own while they train: modality dropout is a pure
function of seed, epoch and utterance).

Threads: a group computes with one torch thread per stack and, when its runs ask for ``threads`` > 1, splits
into that many stacks trained at once, each in its own thread (on a 2-core CPU two stacks side by side use
both cores without the per-operation synchronisation of torch's intra-op threads, which costs more than it
gains for a head this small on a busy machine). Between epochs a run's
state lives in its ``Trainer`` (model, optimizer, random state), where the per-run commit writes it: a
stacked group resumes exactly, and a run may resume stacked or alone. Runs leave the group when they end
(epochs, early stopping, ``stop_after``) or fail; a head without ``stacked_forward`` trains one run at a time.
"""

from __future__ import annotations

import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError
from .data import prefetch


def stack_key(trainer) -> str | None:
    """Runs with equal keys can train stacked (None: this run's head cannot): the head's structure and the
    options that shape the steps (batch size, accumulation, attention dropout); everything else may differ."""
    head = trainer.model
    if not getattr(head, "stackable", False):
        return None
    cfg = trainer.cfg
    return f"{head.stack_key()}|{cfg.batch_size}|{cfg.accum}|{','.join(cfg.modalities)}"


@contextmanager
def own_rng(states: dict, key) -> Iterator[None]:
    """Run the block with ``states[key]`` as torch's global random state, and keep where it ends."""
    outer = torch.get_rng_state()
    torch.set_rng_state(states[key])
    try:
        yield
    finally:
        states[key] = torch.get_rng_state()
        torch.set_rng_state(outer)


def align(plans: list[list[list[np.ndarray]]]) -> list[list[np.ndarray | None]]:
    """The group's steps from each run's bands (``Trainer.schedule``): band by band, as many steps as the run
    with most batches in it; a run with fewer spreads its batches evenly over the band's steps (None: it sits
    that step out). Each run's batches keep their order."""
    steps: list[list[np.ndarray | None]] = []
    for j in range(max(len(p) for p in plans)):
        bands = [p[j] if j < len(p) else [] for p in plans]
        width = max(len(b) for b in bands)
        block: list[list[np.ndarray | None]] = [[None] * len(plans) for _ in range(width)]
        for k, band in enumerate(bands):
            for i, b in enumerate(band):
                block[i * width // len(band)][k] = b
        steps += block
    return steps


class StackedGroup:
    """Trains ``trainers`` (runs of one architecture, equal ``stack_key``) side by side; see the module doc."""

    def __init__(self, trainers: list, progress: bool = True, log: Callable = print, keep_going: bool = False):
        self.trainers, self.progress, self.log, self.keep_going = trainers, progress, log, keep_going
        #: each run's torch random state (the caller sets the state each run had right after it was built)
        self.rng = {id(tr): torch.get_rng_state() for tr in trainers}
        self.failed: dict[int, ConfigError] = {}

    def run(self) -> list[dict]:
        """Train every run to its end (or pause); their summaries in order (``{"failed": message}`` for a run
        that failed when ``keep_going``; else the first failure is raised once the others are done)."""
        before = torch.get_num_threads()
        torch.set_num_threads(1)                 # the group's cores go to its workers (see the module doc)
        try:
            with ExitStack() as held:
                for tr in self.trainers:
                    held.enter_context(tr.dir.training())
                return self._run()
        finally:
            torch.set_num_threads(before)

    def _fail(self, tr, error: ConfigError) -> None:
        self.failed[id(tr)] = error
        self.log(f"{tr.tag}failed: {error}")

    def _run(self) -> list[dict]:
        summaries: dict[int, dict] = {}
        active = []
        for tr in self.trainers:
            with own_rng(self.rng, id(tr)):
                summary = tr.begin()
            if summary is None:
                active.append(tr)
            else:
                summaries[id(tr)] = summary
        while active:
            t0 = time.perf_counter()
            e = min(tr.state.epoch + 1 for tr in active)
            training = [tr for tr in active if tr.state.epoch + 1 == e]
            # Runs that already committed epoch e (a crash fell between the group's commits) take part again
            # as ghosts: their batches fill the stack as before, nothing of theirs changes, and the others
            # compute exactly what they computed beside them.
            stacked = [tr for tr in self.trainers if tr in training or (tr.state.epoch >= e and id(tr) not in
                                                                         self.failed)]
            ghosts = {id(tr) for tr in stacked if tr not in training}
            losses = self._epochs(stacked, e, ghosts)
            share = (time.perf_counter() - t0) / len(training)
            still = [tr for tr in active if tr not in training]
            for tr in training:
                if id(tr) in self.failed:
                    continue
                try:
                    with own_rng(self.rng, id(tr)):
                        summary = tr.end_epoch(e, losses[id(tr)], time.perf_counter() - share)
                except ConfigError as err:
                    self._fail(tr, err)
                    continue
                if summary is None:
                    still.append(tr)
                else:
                    summaries[id(tr)] = summary
            active = [tr for tr in self.trainers if tr in still]
        if self.failed and not self.keep_going:
            raise next(iter(self.failed.values()))
        return [summaries.get(id(tr)) or {"failed": str(self.failed[id(tr)])} for tr in self.trainers]

    def _epochs(self, runs: list, epoch: int, ghosts: set[int]) -> dict[int, float]:
        """Epoch ``epoch`` of ``runs``: split into as many stacks as the runs ask for threads, trained at once,
        one thread each; the mean training loss per run."""
        workers = min(len(runs), max(tr.cfg.threads for tr in runs))
        size = -(-len(runs) // workers)
        parts = [p for p in (runs[i:i + size] for i in range(0, len(runs), size))
                 if any(id(tr) not in ghosts for tr in p)]
        plans = [align([tr.schedule(epoch) for tr in p]) for p in parts]
        bar = tqdm(total=sum(len(steps) for steps in plans), unit="step", disable=not self.progress, file=sys.stderr,
                   leave=False, desc=f"epoch {epoch} ({len(runs) - len(ghosts)} runs stacked"
                                     f"{f', {len(parts)} threads' if len(parts) > 1 else ''})")
        try:
            if len(parts) == 1:
                return self._epoch(parts[0], epoch, ghosts, plans[0], bar)
            losses: dict[int, float] = {}
            with ThreadPoolExecutor(len(parts)) as pool:
                for out in pool.map(lambda part, steps: self._epoch(part, epoch, ghosts, steps, bar), parts, plans):
                    losses.update(out)
            return losses
        finally:
            bar.close()

    def _epoch(self, runs: list, epoch: int, ghosts: set[int], steps: list[list[np.ndarray | None]],
               bar: tqdm) -> dict[int, float]:
        """Epoch ``epoch`` of every run in ``runs`` stacked, taking ``steps`` (``align``); the mean training loss
        per run. Leaves each run's weights, AdamW state and step count in its Trainer and its random state in
        ``self.rng``; ``ghosts`` (run ids) only fill their place."""
        K = len(runs)
        head = runs[0].model
        named = [list(tr.model.named_parameters()) for tr in runs]

        def stacked(key: str | None, i: int) -> torch.Tensor:
            """Parameter ``i`` of every run (``key`` None) or its AdamW moment ``key``, as ``(K, *shape)``."""
            rows = []
            for k, tr in enumerate(runs):
                p = named[k][i][1]
                st = tr.opt.state.get(p, {})
                rows.append(p.detach() if key is None else st[key] if key in st else torch.zeros_like(p))
            return torch.stack(rows)

        params, moments = {}, []
        for i, (name, _) in enumerate(named[0]):
            leaf = stacked(None, i).requires_grad_()                       # (K, *shape)
            leaf.grad = torch.zeros_like(leaf)                             # kept: autograd adds into it
            params[name] = leaf
            moments.append((stacked("exp_avg", i), stacked("exp_avg_sq", i)))
        leaves = list(params.values())
        rows_of = [dict(p=[t[k] for t in leaves], g=[t.grad[k] for t in leaves], m=[m[k] for m, _ in moments],
                        v=[v[k] for _, v in moments]) for k in range(K)]   # run k's slices (views)
        counts = []
        for k, tr in enumerate(runs):
            st = tr.opt.state.get(named[k][0][1], {})
            counts.append(torch.tensor(float(st["step"]) if "step" in st else 0.0))

        tables = runs[0].corpus.tables
        n_batches = [sum(b is not None for b in col) for col in zip(*steps)]

        def gen():
            for step in steps:
                groups = [np.zeros(0, np.int64) if b is None else b for b in step]
                batch = runs[0].corpus.gather(groups)
                frames = {m: [max(1, int(t.lengths[g].max())) if len(g) else 1 for g in groups]
                          for m, t in tables.items()}
                ys = [None if b is None else torch.from_numpy(np.asarray(tr.targets[b]))
                      for tr, b in zip(runs, step)]
                yield step, batch, frames, ys

        from heads.base import Stack, dropout_seed

        gens = []                                  # each run's torch random state, as a generator of its own
        for tr in runs:
            gens.append(torch.Generator())
            gens[-1].set_state(self.rng[id(tr)])
        totals, seen, done = [0.0] * K, [0] * K, [0] * K
        lrs = [tr.opt.param_groups[0]["lr"] for tr in runs]
        head.train()
        it = prefetch(gen())
        t_start = time.perf_counter()
        wait = 0.0
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    step, batch, frames, ys = next(it)
                except StopIteration:
                    break
                wait += time.perf_counter() - t0
                live = [k for k in range(K) if step[k] is not None and id(runs[k]) not in self.failed
                        and id(runs[k]) not in ghosts]
                rows = [len(b) if b is not None else 0 for b in step]
                seeds: list[int | None] = [None] * K
                for k in live:
                    tr = runs[k]
                    own = {m: (x[k, :rows[k], :frames[m][k]], mask[k, :rows[k], :frames[m][k]])
                           for m, (x, mask) in batch.items()}
                    taken = tr.take(own, step[k], epoch)
                    if taken is not own:
                        for m, (x, mask) in taken.items():
                            batch[m][0][k, :rows[k], :frames[m][k]] = x
                            batch[m][1][k, :rows[k], :frames[m][k]] = mask
                    seeds[k] = dropout_seed(tr.model.config, True, gens[k])
                stack = Stack([tr.model.config for tr in runs], rows, frames, seeds)
                logits = head.stacked_forward(params, batch, stack)                # (K, B, C)
                total = None
                for k in live:
                    tr = runs[k]
                    loss = tr.task.loss(logits[k, :rows[k]], ys[k])
                    value = float(loss.detach())
                    if not math.isfinite(value):
                        self._fail(tr, tr._diverged(epoch, f"the training loss (batch {done[k] + 1} of "
                                                                    f"{n_batches[k]})"))
                        continue
                    accum = tr.cfg.accum
                    group = min(accum, n_batches[k] - (done[k] // accum) * accum)
                    total = loss / group if total is None else total + loss / group
                    totals[k] += value * rows[k]
                    seen[k] += rows[k]
                    done[k] += 1
                if total is not None:
                    total.backward()
                with torch.no_grad():
                    for k in live:
                        tr, cfg = runs[k], runs[k].cfg
                        if id(tr) in self.failed or not (done[k] % cfg.accum == 0 or done[k] == n_batches[k]):
                            continue
                        r = rows_of[k]
                        if cfg.clip > 0:                            # as torch.nn.utils.clip_grad_norm_
                            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(r["g"], 2)), 2)
                            torch._foreach_mul_(r["g"], torch.clamp(cfg.clip / (norm + 1e-6), max=1.0))
                        lrs[k] = lr_k = _lr(tr)
                        counts[k] += 1                              # as torch.optim.AdamW(fused=True)
                        torch._fused_adamw_(r["p"], r["g"], r["m"], r["v"], [], [counts[k]] * len(r["p"]),
                                            amsgrad=False, lr=lr_k, beta1=cfg.betas[0], beta2=cfg.betas[1],
                                            weight_decay=cfg.weight_decay, eps=cfg.eps, maximize=False,
                                            grad_scale=None, found_inf=None)
                        torch._foreach_zero_(r["g"])
                        tr.state.step += 1
                bar.update(1)
        finally:
            it.close()
        spent = time.perf_counter() - t_start
        out = {}
        with torch.no_grad():
            for k, tr in enumerate(runs):
                if id(tr) in ghosts:
                    continue
                self.rng[id(tr)] = gens[k].get_state()
                tr.train_time += spent / (K - len(ghosts))
                tr.data_wait += wait / (K - len(ghosts))
                if id(tr) in self.failed:
                    continue
                r = rows_of[k]
                for i, (_, p) in enumerate(named[k]):
                    p.copy_(r["p"][i])
                    tr.opt.state[p] = {"step": counts[k].clone(), "exp_avg": r["m"][i].clone(),
                                       "exp_avg_sq": r["v"][i].clone()}
                for g in tr.opt.param_groups:
                    g["lr"] = lrs[k]
                try:
                    tr.check_weights(epoch)
                except ConfigError as e:
                    self._fail(tr, e)
                    continue
                out[id(tr)] = totals[k] / max(seen[k], 1)
        return out


def _lr(trainer) -> float:
    from .trainer import lr_at

    return lr_at(trainer.state.step, trainer.total_steps, trainer.cfg)
