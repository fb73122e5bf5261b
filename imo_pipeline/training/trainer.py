"""Training a fusion head on cached embeddings: options, splits, the loop, exact resume, cross-validation.

Every option is checked up front (``TrainConfig.check``). Each epoch ends in one
atomic commit of the run folder (``RunDir``: metrics, best and last checkpoints
together), so re-running the same training into the same ``out`` folder
resumes after the last committed epoch, even after a kill in the middle of a
commit, and ends with the same weights and metrics as a run that was never
interrupted (same seed): weights, optimizer moments, the step count and the RNG
state are restored, and batch order is a function of (seed, epoch). A resume
refuses stores that changed since the run began, and a non-finite loss,
weight or validation metric stops the run with its last good commit kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, ManifestError, StoreError
from ..manifest import Manifest, Utterance, load_manifest
from .config import IN_MEMORY, NOT_IDENTITY, SCHEDULES, TrainConfig
from .data import Corpus, all_failed, epoch_batches, open_corpus, prefetch
from .missing import ModalityDropout
from .plots import plot_confusion, plot_curves
from .runs import RUN_FORMAT, RunDir, check_run_stores, forward_items, load_weights_into, verify_hint
from .speedups import SPEEDUPS
from .tasks import Task, build_task, require_labels

__all__ = ["TrainConfig", "NOT_IDENTITY", "SCHEDULES", "IN_MEMORY", "train", "train_runs", "cross_validate",
           "split_indices", "load_corpus", "Trainer"]


def group_of(u: Utterance, key: str) -> str:
    value = getattr(u, key, None) if key in ("fold", "speaker", "split") else u.extra.get(key, u.targets.get(key))
    if value is None:
        raise ManifestError(f"utterance {u.id!r} has no {key!r} field; --folds {key} needs it on every line")
    return str(value)


def split_indices(utts: list[Utterance], cfg: TrainConfig, log: Callable = print) -> dict[str, np.ndarray]:
    """train/valid/test corpus indices.

    Single split: the manifest's train/valid/test; without a valid split, ``hold_out_valid`` carves one from
    train. Cross-validation (``fold_key``/``test_group``): the group is test, and validation follows one rule in
    every fold, ``hold_out_valid`` on the other groups (a manifest's valid split is not used, so no fold gets a
    whole session and another a random share).
    """
    idx = np.arange(len(utts))
    if cfg.fold_key:
        groups = np.array([group_of(u, cfg.fold_key) for u in utts])
        test = idx[groups == cfg.test_group]
        train, valid = hold_out_valid(utts, idx[groups != cfg.test_group], cfg, log)
        return {"train": train, "valid": valid, "test": test}
    splits = np.array([u.split or "" for u in utts])
    if not (splits == "train").any():
        raise ConfigError("the manifest has no split=train utterances; add train/valid/test splits or "
                          "use --folds FIELD for cross-validation")
    unused = int((splits == "").sum())
    if unused:
        log(f"note: {unused} utterance(s) without a split are not used (e.g. {utts[int(idx[splits == ''][0])].id!r})")
    test = idx[splits == "test"]
    valid = idx[splits == "valid"].astype(np.int64)
    train = idx[splits == "train"].astype(np.int64)
    if len(valid) == 0 and len(train) > 1:
        train, valid = hold_out_valid(utts, train, cfg, log)
    return {"train": train, "valid": valid, "test": test}


def hold_out_valid(utts: list[Utterance], pool: np.ndarray, cfg: TrainConfig,
                   log: Callable = print) -> tuple[np.ndarray, np.ndarray]:
    """(train, valid) corpus indices from ``pool``: the validation rule of every fold and of a split without valid.

    ``valid_rule=speakers`` (default): when every utterance of ``pool`` names a speaker and there are at least two,
    ``round(valid_fraction x speakers)`` of them (at least one, never all) are drawn with ``seed`` and all their
    utterances validate: speaker-disjoint, like the test group. Otherwise (``utterances``, or no speakers) that
    share of the utterances is drawn with ``seed``.
    """
    pool = np.asarray(pool, dtype=np.int64)
    rng = np.random.default_rng(cfg.seed)
    speakers = [utts[i].speaker for i in pool]
    names = sorted({s for s in speakers if s is not None})
    if cfg.valid_rule == "speakers" and len(names) >= 2 and None not in speakers:
        k = min(len(names) - 1, max(1, int(round(cfg.valid_fraction * len(names)))))
        chosen = set(rng.choice(names, k, replace=False).tolist())
        held = np.array([s in chosen for s in speakers])
        log(f"validation: {k} of the {len(names)} training speakers ({', '.join(sorted(chosen))}; "
            f"{int(held.sum())} utterances, seed {cfg.seed})")
        return pool[~held], pool[held]
    if len(pool) < 2:
        return pool, pool[:0]
    k = max(1, int(round(cfg.valid_fraction * len(pool))))
    pick = np.sort(rng.choice(len(pool), k, replace=False))
    why = "" if cfg.valid_rule == "utterances" else " (the training utterances do not all name a speaker)"
    log(f"validation: {k} of the {len(pool)} training utterances (seed {cfg.seed}){why}")
    return np.delete(pool, pick), pool[pick]


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate at optimizer step ``step`` (0-based): linear warmup, then poly/cosine/constant."""
    warm = int(cfg.warmup * total) if cfg.warmup < 1 else int(cfg.warmup)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant" or total <= warm:
        return cfg.lr
    progress = min(1.0, (step - warm) / max(1, total - warm))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (1 - progress) ** cfg.power


@torch.no_grad()
def predict_split(model: torch.nn.Module, corpus: Corpus, idx: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits ``(N, C)`` of ``model`` on corpus rows ``idx``: the batches ``forward_items`` (``Run.predict``) makes
    of the same items, gathered from the tables (``Corpus.gather``: the same values); a modality the corpus
    lacks reaches the head as absent (``Head.complete_batch``)."""
    if not SPEEDUPS.fast_batches:
        return forward_items(model, [corpus.item(int(i)) for i in idx], batch_size)
    model.eval()
    idx = np.asarray(idx, np.int64)
    out = np.zeros((len(idx), model.n_outputs), np.float32)
    order = np.argsort(corpus.lengths()[idx], kind="stable")        # as forward_items orders its items
    for lo in range(0, len(idx), batch_size):
        pick = order[lo:lo + batch_size]
        batch = {m: (x[0], mask[0]) for m, (x, mask) in corpus.gather([idx[pick]]).items()}
        out[pick] = model(model.complete_batch(batch)).float().numpy()
    return out


def score(task: Task, logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, dict, float | None]:
    """(outputs, metrics, loss) for finite ``logits`` and their ``targets`` (empty metrics, no loss for none)."""
    if not len(logits):
        return task.outputs(torch.from_numpy(logits)).numpy(), {}, None
    lt = torch.from_numpy(logits)
    loss = float(task.loss(lt, torch.from_numpy(np.asarray(targets))))
    out = task.outputs(lt).numpy()
    return out, task.metrics(np.asarray(targets), out), loss


def nonfinite_rows(logits: np.ndarray) -> np.ndarray:
    """Row indices of ``logits`` holding NaN or infinity."""
    return np.flatnonzero(~np.isfinite(logits).all(axis=1)) if len(logits) else np.zeros(0, np.int64)


def confusion_for(task: Task, metrics: dict, y: np.ndarray, out: np.ndarray) -> tuple[list, list[str]]:
    """A confusion matrix and its class names for any task (binary: top emotion; regression: rounded values)."""
    from sklearn.metrics import confusion_matrix
    if task.name == "classification":
        return metrics["confusion"], task.labels
    if task.name == "binary":
        return confusion_matrix(y.argmax(1), out.argmax(1), labels=range(len(task.labels))).tolist(), task.labels
    bins = list(range(-3, 4))
    cm = confusion_matrix(np.round(np.clip(y, -3, 3)), np.round(np.clip(out, -3, 3)), labels=bins)
    return cm.tolist(), [str(b) for b in bins]


def _scalars(metrics: dict, prefix: str) -> dict:
    return {f"{prefix}_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}


@dataclass
class RunState:
    """The counters committed with every checkpoint (``last.json``): where a resumed run goes on from."""

    epoch: int = 0
    step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0
    done: bool = False

    @classmethod
    def from_record(cls, record: dict, where: Path) -> "RunState":
        try:
            return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls)})
        except (KeyError, TypeError):
            raise ConfigError(f"{where} lacks the run counters; delete the run folder or pass a new --out") from None


class BestTracker:
    """Which epoch is best by the chosen metric (lower is better for the task's error metrics)."""

    def __init__(self, metric: str, lower_is_better: bool):
        self.metric, self.lower = metric, lower_is_better

    def update(self, state: RunState, value: float, epoch: int) -> bool:
        """Record ``value`` of ``epoch``; True when it is the best so far."""
        best = state.best_value
        if best is None or (value < best if self.lower else value > best):
            state.best_value, state.best_epoch, state.bad_epochs = value, epoch, 0
            return True
        state.bad_epochs += 1
        return False


class Stopping:
    """When a run ends (all epochs, or early stopping) and when it pauses (``--stop-after``)."""

    def __init__(self, cfg: TrainConfig):
        self.epochs, self.patience, self.stop_after = cfg.epochs, cfg.patience, cfg.stop_after

    def after_epoch(self, state: RunState) -> str | None:
        """Mark ``state`` done and say why (``early`` or ``epochs``), or None to go on."""
        reason = ("early" if self.patience and state.bad_epochs >= self.patience
                  else "epochs" if state.epoch >= self.epochs else None)
        state.done = reason is not None
        return reason

    def pause(self, state: RunState) -> bool:
        return not state.done and bool(self.stop_after) and state.epoch >= self.stop_after


class Trainer:
    """One run: builds task, head and optimizer, trains with one commit per epoch, resumes from ``out``.

    Its jobs: ``train_epoch`` (the optimizer steps), ``validate``, ``BestTracker`` (which epoch is best),
    ``Stopping`` (end, early stop, pause), ``_checkpoint`` (one atomic commit per epoch through ``RunDir``)
    and ``finish`` (the best checkpoint on test, plots, summary).
    """

    def __init__(self, cfg: TrainConfig, out: str | Path, corpus: Corpus, progress: bool = True,
                 log: Callable = print):
        from heads import InputSpec, build_head

        cfg.check()
        self.cfg, self.corpus, self.progress, self.log = cfg, corpus, progress, log
        self.dir = RunDir(out)
        self.out = self.dir.path
        self.dir.refuse_file()
        utts = corpus.utterances
        self._refuse_all_train_failed()
        self.split = split_indices(utts, cfg, log)
        used = [utts[i] for k in ("train", "valid", "test") for i in self.split[k]]
        require_labels(used, "of train/valid/test")
        train_utts = [utts[i] for i in self.split["train"]]
        other = [utts[i] for k in ("valid", "test") for i in self.split[k]]
        self.task = build_task(cfg.task, train_utts, other, cfg.class_weights)
        used_idx = np.concatenate([self.split[k] for k in ("train", "valid", "test")]).astype(np.int64)
        t = self.task.targets(used)
        self.targets = np.zeros((len(utts), *t.shape[1:]), t.dtype)   # by corpus index; unused rows stay 0
        self.targets[used_idx] = t
        self.metric = cfg.best_metric or self.task.best_metric
        self.task.check_metric(self.metric, self.task.labels)
        self.best = BestTracker(self.metric, self.metric in self.task.lower_is_better)
        self.stopping = Stopping(cfg)
        torch.manual_seed(cfg.seed)
        inputs = {m: InputSpec(len(corpus.tables[m].prep.layers), corpus.metas[m].dim) for m in cfg.modalities}
        self.model = build_head(cfg.head, inputs, self.task.n_outputs, cfg.head_options)
        self.dropper = ModalityDropout(cfg.modality_dropout, cfg.modalities, cfg.seed)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                     weight_decay=cfg.weight_decay, fused=True if SPEEDUPS.fused_adamw else None)
        self.n_batches = -(-len(self.split["train"]) // cfg.batch_size)
        self.steps_per_epoch = -(-self.n_batches // cfg.accum)
        self.total_steps = cfg.total_updates or self.steps_per_epoch * cfg.epochs   # the schedule's length
        self.lengths = corpus.lengths()
        self.state = RunState()
        self.rows: list[dict] = []
        self.data_wait = 0.0
        self.train_time = 0.0
        self.tag = ""                          # prefix of the log lines (runs trained side by side)

    def _refuse_all_train_failed(self) -> None:
        man = self.corpus.manifest
        if man is None or self.cfg.fold_key:
            return
        train = [u for u in man if u.split == "train"]
        if train and all(u.id in self.corpus.excluded for u in train):
            raise StoreError(all_failed(train, self.corpus.stores, "split=train utterances"))

    # --- run folder -----------------------------------------------------------
    def resolved_config(self) -> dict:
        c = self.corpus
        return {
            "run_format": RUN_FORMAT,
            "train": dataclasses.asdict(self.cfg), "head": self.model.describe(), "task": self.task.describe(),
            "modalities": self.cfg.modalities, "best_metric": self.metric,
            "stores": {m: c.paths[m] for m in self.cfg.modalities},
            "store_meta": {m: dataclasses.asdict(c.metas[m]) for m in self.cfg.modalities},
            "store_content": {m: c.tables[m].store.content_fingerprint() for m in self.cfg.modalities},
            "preprocess": {m: c.tables[m].prep.to_dict() for m in self.cfg.modalities},
            "manifest_fingerprint": c.metas[self.cfg.modalities[0]].manifest_fingerprint,
            "splits": {k: int(len(v)) for k, v in self.split.items()},
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def _start_or_resume(self) -> None:
        """Resume from the folder's last commit, or start afresh (writing config.json and excluded.json)."""
        if self.dir.has("last"):
            self._resume()
            return
        self.dir.reset()
        self.dir.write_config(self.resolved_config())
        if self.corpus.excluded:
            self.dir.write_excluded(self.corpus.excluded)
        self.state, self.rows = RunState(), []

    def _resume(self) -> None:
        old = self.dir.read_config()
        before = {k: v for k, v in {**TrainConfig.defaults(), **old["train"]}.items()   # options added since the
                  if k not in NOT_IDENTITY}                                               # run began: their defaults
        new = self.cfg.identity()
        diff = sorted(k for k in set(before) | set(new) if before.get(k) != new.get(k))
        if diff:
            k = diff[0]
            raise ConfigError(f"{self.out} holds a run with {k}={before.get(k)!r}, this one has {k}={new.get(k)!r}; "
                              f"re-run with the same options to resume it, or pass a new --out")
        if old.get("run_format") != RUN_FORMAT:
            raise ConfigError(f"{self.out} was written by an older imo (run format {old.get('run_format', 1)}); it "
                              f"cannot be resumed safely: pass a new --out")
        now = {k: int(len(v)) for k, v in self.split.items()}
        if old.get("splits") not in (None, now):
            raise ConfigError(f"{self.out} was trained on splits {old['splits']}, the same options now give {now} "
                              f"(the manifest, the excluded utterances or imo's validation rule changed); it cannot "
                              f"be resumed: pass a new --out")
        check_run_stores(self.dir, old, self.corpus.stores)
        record, weights, st = self.dir.read_checkpoint("last", with_state=True, strict=True)
        self.state = RunState.from_record(record, self.dir.file(self.dir.record_name("last")))
        load_weights_into(self.model, weights, self.dir.file(self.dir.weights_name("last")))
        try:
            self.opt.load_state_dict(st["optimizer"])
            torch.set_rng_state(st["torch_rng"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ConfigError(f"{self.dir.file(self.dir.STATE)} does not fit this run's optimizer ({e}); delete "
                              f"the run folder or pass a new --out") from None
        self.rows = self.dir.read_metrics()
        if [r.get("epoch") for r in self.rows] != list(range(1, self.state.epoch + 1)):
            raise ConfigError(f"{self.dir.file(self.dir.METRICS)} does not hold epochs 1..{self.state.epoch} of "
                              f"last.json; delete the run folder or pass a new --out")
        if not self.state.done:
            self.log(f"resuming {self.out} after epoch {self.state.epoch}")

    def history(self) -> list[dict]:
        return self.dir.read_metrics()

    def _checkpoint(self, improved: bool, valid_metrics: dict) -> None:
        """One commit: metrics.jsonl, best.* (if ``improved``) and last.*, visible together or not at all."""
        c = self.dir.commit()
        c.stage(self.dir.METRICS, "".join(json.dumps(r, allow_nan=False) + "\n" for r in self.rows).encode())
        if improved:
            c.stage_checkpoint("best", self.model, {"epoch": self.state.epoch, "metric": self.metric,
                                                    "value": self.state.best_value, "valid": valid_metrics,
                                                    "head": self.model.describe()})
        c.stage_checkpoint("last", self.model, dataclasses.asdict(self.state),
                           state={"optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state()},
                           covers=(self.dir.METRICS,))
        c.apply()

    # --- loop -------------------------------------------------------------------
    def _diverged(self, epoch: int, what: str) -> ConfigError:
        kept = (f"its last good checkpoint (epoch {self.state.epoch}) is kept" if self.state.epoch
                else "no epoch was committed")
        return ConfigError(
            f"run {self.out} stopped at epoch {epoch}: {what} became non-finite (NaN or infinity); {kept}. Lower "
            f"--lr (now {self.cfg.lr:g}) or set --clip, and train into a new --out; if it persists, "
            f"{verify_hint(self.corpus.paths.values())}")

    def schedule(self, epoch: int) -> list[list[np.ndarray]]:
        """This run's training batches of ``epoch`` (corpus rows), as length bands (``data.epoch_batches``)."""
        return epoch_batches(self.split["train"], self.lengths, self.cfg.batch_size, self.cfg.seed, epoch)

    def take(self, batch: dict[str, tuple[torch.Tensor, torch.Tensor]], rows: np.ndarray, epoch: int
             ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Training batch ``batch`` (of corpus ``rows``) as the model sees it in ``epoch``: the one place for
        per-batch changes (modality dropout). Runs trained stacked call it per run, with that run's random state."""
        return self.dropper(batch, rows, epoch)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training split; returns the mean loss (ConfigError at a non-finite loss)."""
        cfg = self.cfg
        self.model.train()
        order = [b for band in self.schedule(epoch) for b in band]
        n_batches = len(order)

        def gen():
            for b in order:
                x = {m: (v[0], mask[0]) for m, (v, mask) in self.corpus.gather([b]).items()}   # (B, T, L, D), (B, T)
                yield b, x, torch.from_numpy(np.asarray(self.targets[b]))

        it = prefetch(gen())
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not self.progress,
                   file=sys.stderr, leave=False)
        total, count, k = 0.0, 0, 0
        t_start = time.perf_counter()
        try:
            while True:
                t0 = time.perf_counter()
                try:
                    b, x, y = next(it)
                except StopIteration:
                    break
                self.data_wait += time.perf_counter() - t0
                group = min(cfg.accum, n_batches - (k // cfg.accum) * cfg.accum)
                loss = self.task.loss(self.model(self.take(x, b, epoch)), y)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise self._diverged(epoch, f"the training loss (batch {k + 1} of {n_batches})")
                (loss / group).backward()
                total, count, k = total + value * len(y), count + len(y), k + 1
                if k % cfg.accum == 0 or k == n_batches:
                    if cfg.clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                    for g in self.opt.param_groups:
                        g["lr"] = lr_at(self.state.step, self.total_steps, cfg)
                    try:
                        self.opt.step()
                    except RuntimeError as e:          # AdamW's step size overflows float32 at absurd rates
                        if "overflow" not in str(e):
                            raise
                        raise self._diverged(epoch, f"the optimizer step (batch {k} of {n_batches})") from None
                    self.opt.zero_grad(set_to_none=True)
                    self.state.step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{total / count:.4f}")
        finally:
            bar.close()
            it.close()
        self.train_time += time.perf_counter() - t_start
        self.check_weights(epoch)
        return total / max(count, 1)

    def check_weights(self, epoch: int) -> None:
        """ConfigError when a weight became non-finite during ``epoch``."""
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise self._diverged(epoch, f"the weights ({bad[0]})")

    def validate(self, epoch: int) -> tuple[dict, float | None]:
        """(metrics, loss) on the valid split; ConfigError when an output or a metric is not finite."""
        logits = predict_split(self.model, self.corpus, self.split["valid"], self.cfg.batch_size)
        bad = nonfinite_rows(logits)
        if len(bad):
            uid = self.corpus.utterances[int(self.split["valid"][bad[0]])].id
            raise self._diverged(epoch, f"the validation outputs ({len(bad)} utterance(s), e.g. {uid!r})")
        _, vm, vloss = score(self.task, logits, self.targets[self.split["valid"]])
        if vm:
            vm = {**vm, "loss": vloss}                             # selectable: --best-metric loss
        if vm and self.metric not in vm:
            raise ConfigError(f"--best-metric {self.metric!r} is not defined on this valid split (it has "
                              f"{', '.join(k for k, v in vm.items() if isinstance(v, (int, float)))}); pick another")
        odd = [k for k, v in {"loss": vloss, **vm}.items() if isinstance(v, float) and not math.isfinite(v)]
        if odd:
            raise self._diverged(epoch, f"the validation {odd[0]}")
        return vm, vloss

    def run(self) -> dict:
        """Train (or resume) to the end; returns the summary (also written to summary.json)."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            with self.dir.training():
                return self._run()
        finally:
            torch.set_num_threads(before)

    def _run(self) -> dict:
        summary = self.begin()
        while summary is None:
            epoch = self.state.epoch + 1
            t0 = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            summary = self.end_epoch(epoch, train_loss, t0)
        return summary

    def begin(self) -> dict | None:
        """Start or resume (the folder must be held, ``RunDir.training``); the summary of a run that is already
        trained, else None."""
        self._start_or_resume()
        cfg = self.cfg
        if self.state.done:
            if not (self.out / RunDir.SUMMARY).is_file():  # stopped between the last commit and the summary
                return self.finish()
            self.log(f"{self.tag}{self.out} is already trained; delete it or pass a new --out to train again")
            return self.dir.read_json(RunDir.SUMMARY)
        self.log(f"{self.tag}training {cfg.head} on {'+'.join(cfg.modalities)} "
                 f"({self.resolved_config()['parameters']:,} parameters): {len(self.split['train'])} train, "
                 f"{len(self.split['valid'])} valid, {len(self.split['test'])} test; {cfg.epochs} epochs -> {self.out}")
        return None

    def end_epoch(self, epoch: int, train_loss: float, started: float) -> dict | None:
        """Validate, commit and log ``epoch`` (trained since ``started``, a ``perf_counter`` time); returns the
        summary when the run ends, ``{"stopped_after": epoch}`` when it pauses, else None."""
        cfg = self.cfg
        vm, vloss = self.validate(epoch)
        value = vm.get(self.metric, train_loss if self.best.lower else -train_loss)
        self.state.epoch = epoch
        improved = self.best.update(self.state, value, epoch)
        reason = self.stopping.after_epoch(self.state)
        self.rows.append({"epoch": epoch, "step": self.state.step, "lr": self.opt.param_groups[0]["lr"],
                          "train_loss": train_loss, "valid_loss": vloss, **_scalars(vm, "valid"),
                          "seconds": time.perf_counter() - started})
        self._checkpoint(improved, vm)
        if reason == "early":
            self.log(f"{self.tag}early stop after epoch {epoch}: valid {self.metric} did not improve for "
                     f"{cfg.patience} epochs")
        self.log(f"{self.tag}epoch {epoch}: train loss {train_loss:.4f}, valid loss "
                 f"{'-' if vloss is None else f'{vloss:.4f}'}, valid {self.metric} {value:.4f} "
                 f"(best {self.state.best_value:.4f} @ {self.state.best_epoch})")
        if self.state.done:
            return self.finish()
        if self.stopping.pause(self.state):
            self.log(f"{self.tag}stopping after epoch {epoch} (--stop-after); re-run the same command to resume")
            return {"stopped_after": epoch}
        return None

    def finish(self) -> dict:
        """Best weights -> test (else valid) metrics, plots and summary.json."""
        _, weights, _ = self.dir.read_checkpoint("best")
        load_weights_into(self.model, weights, self.dir.file(self.dir.weights_name("best")))
        split = "test" if len(self.split["test"]) else "valid"
        logits = predict_split(self.model, self.corpus, self.split[split], self.cfg.batch_size)
        bad = nonfinite_rows(logits)
        if len(bad):
            uid = self.corpus.utterances[int(self.split[split][bad[0]])].id
            raise ConfigError(f"run {self.out}: the best checkpoint gives non-finite outputs on {len(bad)} {split} "
                              f"utterance(s) (e.g. {uid!r}); their features are out of range: "
                              f"{verify_hint(self.corpus.paths.values())}")
        out, m, loss = score(self.task, logits, self.targets[self.split[split]])
        odd = [k for k, v in {"loss": loss, **m}.items() if isinstance(v, float) and not math.isfinite(v)]
        if odd:
            raise ConfigError(f"run {self.out}: the {split} {odd[0]} of the best checkpoint is not finite; "
                              f"{verify_hint(self.corpus.paths.values())}")
        history = self.dir.read_metrics()
        self.dir.plot(RunDir.CURVES, lambda p: plot_curves(history, self.metric, p))
        if m:
            cm, names = confusion_for(self.task, m, self.targets[self.split[split]], out)
            self.dir.plot(RunDir.CONFUSION, lambda p: plot_confusion(
                cm, names, p, f"{split} (best epoch {self.state.best_epoch})"))
        summary = {"best_epoch": self.state.best_epoch, "best_metric": self.metric,
                   "best_valid": self.state.best_value, "eval_split": split, split: m, f"{split}_loss": loss,
                   "epochs_run": self.state.epoch, "train_seconds": self.train_time,
                   "data_wait_share": self.data_wait / self.train_time if self.train_time else None}
        self.dir.write_summary(summary)
        return summary


def load_corpus(cfg: TrainConfig, progress: bool = True, log: Callable = print) -> tuple[Manifest, Corpus]:
    """The manifest and the aligned stores of ``cfg``."""
    from heads import HEADS

    manifest = load_manifest(cfg.manifest, cfg.data_root)
    corpus = open_corpus(manifest, {m: cfg.stores[m] for m in cfg.modalities}, HEADS.get(cfg.head).layers,
                         cfg.downsample, cfg.in_memory, progress, log, max_frames=cfg.max_frames)
    return manifest, corpus


def train(cfg: TrainConfig, out: str | Path, corpus: Corpus | None = None, progress: bool = True,
          log: Callable = print) -> dict:
    """Train one run into ``out`` (resuming if it holds one); returns its summary."""
    cfg.check()
    RunDir(out).refuse_file()
    if corpus is None:
        _, corpus = load_corpus(cfg, progress, log)
    return Trainer(cfg, out, corpus, progress, log).run()


def train_runs(jobs: list[tuple[TrainConfig, Path]], corpus: Corpus, progress: bool = True,
               log: Callable = print, stack: bool = True, max_stack: int = 8, keep_going: bool = False) -> list[dict]:
    """Train several runs on one corpus (folds, seeds, sweep trials), each into its own run folder; their
    summaries in job order. The one entry point for many runs.

    Runs of one architecture (equal ``stacked.stack_key``: same head structure, batch size and accumulation;
    seeds, folds, learning rates, schedules and the head's ``per_run_options`` may differ) train side by side,
    up to ``max_stack`` at a time (``training.stacked``): each still writes its own complete run folder and
    ends with the metrics it would have alone, within float tolerance. A head that cannot be stacked, and
    ``stack=False``, train one run at a time, as ``train`` does. A run stopped by ``stop_after`` ends the
    list there (runs trained beside it stop too). ``keep_going``: a run that fails (non-finite loss, weights
    or metrics) gives ``{"failed": message}`` and the others go on; else its error is raised.
    """
    from .stacked import StackedGroup, stack_key

    trainers, groups, unstackable = [], {}, set()
    for k, (cfg, out) in enumerate(jobs):
        tr = Trainer(cfg, out, corpus, progress, log)
        trainers.append((tr, torch.get_rng_state()))   # the random state this run starts from, alone or stacked
        key = stack_key(tr) if stack and len(jobs) > 1 else None
        if key is None and stack and len(jobs) > 1:
            unstackable.add(cfg.head)
        if len(jobs) > 1:
            tr.tag = f"[run {k + 1}/{len(jobs)}: {f'{cfg.fold_key}={cfg.test_group}, ' if cfg.fold_key else ''}seed {cfg.seed}] "
        groups.setdefault(key if key is not None else f"alone-{k}", []).append(k)
    if unstackable:
        log(f"head {', '.join(sorted(unstackable))} cannot be trained stacked: training its runs one at a time")
    summaries: dict[int, dict] = {}

    def alone(k: int) -> dict:
        tr, rng = trainers[k]
        if len(jobs) > 1:
            cfg = jobs[k][0]
            where = f"{cfg.fold_key}={cfg.test_group}, " if cfg.fold_key else ""
            log(f"--- run {k + 1}/{len(jobs)} ({where}seed {cfg.seed}) -> {tr.out}")
            tr.tag = ""
        torch.set_rng_state(rng)
        return tr.run()

    for ks in groups.values():
        for lo in range(0, len(ks), max_stack):
            chunk = ks[lo:lo + max_stack]
            if len(chunk) == 1:
                try:
                    summaries[chunk[0]] = alone(chunk[0])
                except ConfigError as e:
                    if not keep_going:
                        raise
                    log(f"--- run {chunk[0] + 1}/{len(jobs)} failed: {e}")
                    summaries[chunk[0]] = {"failed": str(e)}
            else:
                log(f"--- runs {', '.join(str(k + 1) for k in chunk)} of {len(jobs)} train stacked "
                    f"({jobs[chunk[0]][0].head}, {len(chunk)} runs side by side)")
                group = StackedGroup([trainers[k][0] for k in chunk], progress, log, keep_going)
                for k in chunk:
                    group.rng[id(trainers[k][0])] = trainers[k][1]
                for k, summary in zip(chunk, group.run()):
                    summaries[k] = summary
            if any("stopped_after" in summaries[k] for k in chunk):
                break
        else:
            continue
        break
    out = []
    for k in range(len(jobs)):
        if k not in summaries:
            break
        out.append(summaries[k])
        if "stopped_after" in summaries[k]:
            break
    return out


def cross_validate(cfg: TrainConfig, out: str | Path, fold_key: str, progress: bool = True,
                   log: Callable = print, seeds: list[int] | None = None) -> dict:
    """Leave-one-group-out over manifest field ``fold_key``: a run per group in ``out/fold-<name>`` (``name``: the
    group made a safe folder name; ``out/fold-<name>/seed-<s>`` per seed with ``seeds``), each run's test metrics,
    per-fold/per-seed/overall mean and sample std (ddof=1) in ``out/cv.json`` (``experiment.run_experiment``)."""
    from .experiment import run_experiment

    return run_experiment(cfg, out, fold_key, seeds, progress, log)
