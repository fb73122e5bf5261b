"""Training a fusion head on cached embeddings: splits, the loop, checkpoints, exact resume, cross-validation.

Re-running the same training into the same ``out`` folder resumes after the
last finished epoch and ends with the same weights and metrics as a run that
was never interrupted (same seed): weights, optimizer moments, the step count
and the RNG state are restored, and batch order is a function of (seed, epoch).
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm import tqdm

from ..errors import ConfigError, ManifestError
from ..manifest import Manifest, Utterance, load_manifest
from ..safe_load import load_checkpoint
from .data import Corpus, batches, open_corpus
from .metrics import per_class_table
from .plots import plot_confusion, plot_curves
from .runs import forward_items, load_weights, save_weights, write_json
from .tasks import Task, build_task

SCHEDULES = ("poly", "cosine", "constant")
LOWER_IS_BETTER = {"mae"}
NOT_IDENTITY = {"stop_after", "in_memory", "progress"}  # options that do not change the result


@dataclass
class TrainConfig:
    """Everything that determines a training run (written to config.json as ``train``)."""

    modalities: list[str]
    stores: dict[str, str]
    manifest: str
    data_root: str | None = None
    head: str = "cross_attention"
    head_options: dict[str, Any] = field(default_factory=dict)
    task: str = "classification"
    class_weights: str = "none"            # none | balanced
    downsample: dict[str, Any] = field(default_factory=dict)  # modality -> factor or "auto"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup: float = 0.1                    # < 1: fraction of all steps; >= 1: steps
    schedule: str = "poly"                 # poly | cosine | constant (after warmup)
    power: float = 1.0                     # of the polynomial decay
    clip: float = 1.0                      # max gradient norm (0: off)
    accum: int = 1                         # batches per optimizer step
    patience: int = 0                      # epochs without improvement before stopping (0: off)
    best_metric: str | None = None         # default: the task's (ua, f1_mean, mae)
    seed: int = 0
    fold_key: str | None = None            # cross-validation: manifest field holding the group
    test_group: str | None = None          # the held-out group of this fold
    valid_fraction: float = 0.1            # of train, held out when the manifest has no valid split
    threads: int = 1                       # torch CPU threads (1: small head ops gain nothing from more, and
                                           # a spare core assembles batches; more threads oversubscribe a shared CPU)
    in_memory: str = "auto"
    stop_after: int | None = None          # stop after this many epochs in total (resume later)

    def check(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "accum", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")
        if self.in_memory not in ("auto", "yes", "no"):
            raise ConfigError(f"--in-memory {self.in_memory!r}: use auto, yes or no")

    def identity(self) -> dict[str, Any]:
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        return {k: v for k, v in d.items() if k not in NOT_IDENTITY}


def group_of(u: Utterance, key: str) -> str:
    value = getattr(u, key, None) if key in ("fold", "speaker", "split") else u.extra.get(key, u.targets.get(key))
    if value is None:
        raise ManifestError(f"utterance {u.id!r} has no {key!r} field; --folds {key} needs it on every line")
    return str(value)


def split_indices(utts: list[Utterance], cfg: TrainConfig, log: Callable = print) -> dict[str, np.ndarray]:
    """train/valid/test corpus indices from the manifest's splits, or from ``fold_key``/``test_group``."""
    idx = np.arange(len(utts))
    if cfg.fold_key:
        groups = np.array([group_of(u, cfg.fold_key) for u in utts])
        test = idx[groups == cfg.test_group]
        pool = idx[groups != cfg.test_group]
    else:
        splits = np.array([u.split or "" for u in utts])
        if not (splits == "train").any():
            raise ConfigError("the manifest has no split=train utterances; add train/valid/test splits or "
                              "use --folds FIELD for cross-validation")
        unused = int((splits == "").sum())
        if unused:
            log(f"note: {unused} utterance(s) without a split are not used (e.g. {utts[int(idx[splits == ''][0])].id!r})")
        test = idx[splits == "test"]
        pool = idx[(splits == "train") | (splits == "valid")]
    valid = np.array([i for i in pool if utts[i].split == "valid"], dtype=np.int64)
    train = np.array([i for i in pool if utts[i].split != "valid"], dtype=np.int64)
    if len(valid) == 0 and len(train) > 1:
        rng = np.random.default_rng(cfg.seed)
        k = max(1, int(round(cfg.valid_fraction * len(train))))
        pick = np.sort(rng.choice(len(train), k, replace=False))
        valid, train = train[pick], np.delete(train, pick)
        log(f"no valid split: holding out {k} of the training utterances (seed {cfg.seed}) for model selection")
    return {"train": train, "valid": valid, "test": test}


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


def evaluate_split(model: torch.nn.Module, task: Task, corpus: Corpus, idx: np.ndarray, targets: np.ndarray,
                   batch_size: int) -> tuple[np.ndarray, dict, float]:
    """(outputs, metrics, loss) of ``model`` on corpus rows ``idx``, through ``forward_items`` like ``Run.predict``."""
    logits = forward_items(model, [corpus.item(int(i)) for i in idx], batch_size)
    t = torch.from_numpy(np.asarray(targets[idx]))
    lt = torch.from_numpy(logits)
    loss = float(task.loss(lt, t)) if len(idx) else float("nan")
    out = task.outputs(lt).numpy()
    return out, (task.metrics(np.asarray(targets[idx]), out) if len(idx) else {}), loss


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


class Trainer:
    """One run: builds task, head and optimizer, trains with checkpoints, resumes from ``out`` if present."""

    def __init__(self, cfg: TrainConfig, out: str | Path, corpus: Corpus, progress: bool = True,
                 log: Callable = print):
        from heads import InputSpec, build_head

        cfg.check()
        self.cfg, self.out, self.corpus, self.progress, self.log = cfg, Path(out), corpus, progress, log
        utts = corpus.utterances
        self.split = split_indices(utts, cfg, log)
        train_utts = [utts[i] for i in self.split["train"]]
        other = [utts[i] for k in ("valid", "test") for i in self.split[k]]
        self.task = build_task(cfg.task, train_utts, other, cfg.class_weights)
        self.targets = self.task.targets(utts)
        self.metric = cfg.best_metric or self.task.best_metric
        torch.manual_seed(cfg.seed)
        inputs = {m: InputSpec(len(corpus.tables[m].prep.layers), corpus.metas[m].dim) for m in cfg.modalities}
        self.model = build_head(cfg.head, inputs, self.task.n_outputs, cfg.head_options)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                     weight_decay=cfg.weight_decay)
        n_batches = -(-len(self.split["train"]) // cfg.batch_size)
        self.steps_per_epoch = -(-n_batches // cfg.accum)
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.state = {"epoch": 0, "step": 0, "best_value": None, "best_epoch": None, "bad_epochs": 0, "done": False}
        self.data_wait = 0.0
        self.train_time = 0.0

    # --- run folder -----------------------------------------------------------
    def resolved_config(self) -> dict:
        c = self.corpus
        return {
            "train": dataclasses.asdict(self.cfg), "head": self.model.describe(), "task": self.task.describe(),
            "modalities": self.cfg.modalities, "best_metric": self.metric,
            "stores": {m: c.paths[m] for m in self.cfg.modalities},
            "store_meta": {m: dataclasses.asdict(c.metas[m]) for m in self.cfg.modalities},
            "preprocess": {m: c.tables[m].prep.to_dict() for m in self.cfg.modalities},
            "manifest_fingerprint": c.metas[self.cfg.modalities[0]].manifest_fingerprint,
            "splits": {k: int(len(v)) for k, v in self.split.items()},
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    def _start_or_resume(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        cfg_file = self.out / "config.json"
        if (self.out / "last.json").is_file() and cfg_file.is_file():
            old = json.loads(cfg_file.read_text())["train"]
            old = {k: v for k, v in old.items() if k not in NOT_IDENTITY}
            new = self.cfg.identity()
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            if diff:
                k = diff[0]
                raise ConfigError(f"{self.out} holds a run with {k}={old.get(k)!r}, this one has {k}={new.get(k)!r}; "
                                  f"re-run with the same options to resume it, or pass a new --out")
            self.state = json.loads((self.out / "last.json").read_text())
            load_weights(self.model, self.out / "last.safetensors")
            st = load_checkpoint(self.out / "last.state.pt", "run state", fix="delete the run folder and train again")
            self.opt.load_state_dict(st["optimizer"])
            torch.set_rng_state(st["torch_rng"])
            self._truncate_log(self.state["epoch"])
            if not self.state["done"]:
                self.log(f"resuming {self.out} after epoch {self.state['epoch']}")
        else:
            for f in ("metrics.jsonl", "best.json", "best.safetensors"):
                (self.out / f).unlink(missing_ok=True)
        write_json(cfg_file, self.resolved_config())
        if self.corpus.excluded:
            write_json(self.out / "excluded.json", self.corpus.excluded)

    def _truncate_log(self, epoch: int) -> None:
        f = self.out / "metrics.jsonl"
        if f.is_file():
            keep = [ln for ln in f.read_text().splitlines() if ln.strip() and json.loads(ln)["epoch"] <= epoch]
            f.write_text("".join(ln + "\n" for ln in keep))

    def history(self) -> list[dict]:
        f = self.out / "metrics.jsonl"
        return [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()] if f.is_file() else []

    def _save_last(self) -> None:
        save_weights(self.model, self.out / "last.safetensors")
        tmp = self.out / "last.state.pt.tmp"
        torch.save({"optimizer": self.opt.state_dict(), "torch_rng": torch.get_rng_state()}, tmp)
        tmp.replace(self.out / "last.state.pt")
        write_json(self.out / "last.json", self.state)

    # --- loop -------------------------------------------------------------------
    def _better(self, value: float) -> bool:
        best = self.state["best_value"]
        if best is None:
            return True
        return value < best if self.metric in LOWER_IS_BETTER else value > best

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training split; returns the mean loss."""
        cfg = self.cfg
        self.model.train()
        it = batches(self.corpus, self.split["train"], cfg.batch_size, seed=cfg.seed * 100_003 + epoch,
                     targets=self.targets)
        n_batches = -(-len(self.split["train"]) // cfg.batch_size)
        bar = tqdm(total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not self.progress,
                   file=sys.stderr, leave=False)
        total, count, k = 0.0, 0, 0
        t_start = time.perf_counter()
        while True:
            t0 = time.perf_counter()
            try:
                _, x, y = next(it)
            except StopIteration:
                break
            self.data_wait += time.perf_counter() - t0
            group = min(cfg.accum, n_batches - (k // cfg.accum) * cfg.accum)
            loss = self.task.loss(self.model(x), y)
            (loss / group).backward()
            total, count, k = total + float(loss.detach()) * len(y), count + len(y), k + 1
            if k % cfg.accum == 0 or k == n_batches:
                if cfg.clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip)
                for g in self.opt.param_groups:
                    g["lr"] = lr_at(self.state["step"], self.total_steps, cfg)
                self.opt.step()
                self.opt.zero_grad(set_to_none=True)
                self.state["step"] += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
        bar.close()
        self.train_time += time.perf_counter() - t_start
        return total / max(count, 1)

    def run(self) -> dict:
        """Train (or resume) to the end; returns the summary (also written to summary.json)."""
        before = torch.get_num_threads()
        torch.set_num_threads(self.cfg.threads)
        try:
            return self._run()
        finally:
            torch.set_num_threads(before)

    def _run(self) -> dict:
        self._start_or_resume()
        cfg = self.cfg
        if self.state["done"]:
            if not (self.out / "summary.json").is_file():  # stopped between the last checkpoint and the summary
                return self.finish()
            self.log(f"{self.out} is already trained; delete it or pass a new --out to train again")
            return json.loads((self.out / "summary.json").read_text())
        self.log(f"training {cfg.head} on {'+'.join(cfg.modalities)} ({self.resolved_config()['parameters']:,} "
                 f"parameters): {len(self.split['train'])} train, {len(self.split['valid'])} valid, "
                 f"{len(self.split['test'])} test; {cfg.epochs} epochs -> {self.out}")
        while self.state["epoch"] < cfg.epochs:
            epoch = self.state["epoch"] + 1
            t0 = time.perf_counter()
            train_loss = self.train_epoch(epoch)
            _, vm, vloss = evaluate_split(self.model, self.task, self.corpus, self.split["valid"], self.targets,
                                          cfg.batch_size)
            if vm and self.metric not in vm:
                raise ConfigError(f"--best-metric {self.metric!r} is not a {self.task.name} metric; valid: "
                                  f"{', '.join(k for k, v in vm.items() if isinstance(v, (int, float)))}")
            row = {"epoch": epoch, "step": self.state["step"], "lr": self.opt.param_groups[0]["lr"],
                   "train_loss": train_loss, "valid_loss": vloss, **_scalars(vm, "valid"),
                   "seconds": time.perf_counter() - t0}
            with (self.out / "metrics.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")
            self.state["epoch"] = epoch
            value = vm.get(self.metric, train_loss if self.metric in LOWER_IS_BETTER else -train_loss)
            if self._better(value):
                self.state.update(best_value=value, best_epoch=epoch, bad_epochs=0)
                save_weights(self.model, self.out / "best.safetensors")
                write_json(self.out / "best.json", {"epoch": epoch, "metric": self.metric, "value": value,
                                                    "valid": vm, "head": self.model.describe()})
            else:
                self.state["bad_epochs"] += 1
            stop = cfg.patience and self.state["bad_epochs"] >= cfg.patience
            if stop:
                self.log(f"early stop after epoch {epoch}: valid {self.metric} did not improve for {cfg.patience} epochs")
            self.state["done"] = bool(stop) or epoch >= cfg.epochs
            self._save_last()
            self.log(f"epoch {epoch}: train loss {train_loss:.4f}, valid loss {vloss:.4f}, valid {self.metric} "
                     f"{value:.4f} (best {self.state['best_value']:.4f} @ {self.state['best_epoch']})")
            if self.state["done"]:
                break
            if cfg.stop_after and epoch >= cfg.stop_after:
                self.log(f"stopping after epoch {epoch} (--stop-after); re-run the same command to resume")
                return {"stopped_after": epoch}
        return self.finish()

    def finish(self) -> dict:
        """Best weights -> test (else valid) metrics, plots and summary.json."""
        load_weights(self.model, self.out / "best.safetensors")
        split = "test" if len(self.split["test"]) else "valid"
        out, m, loss = evaluate_split(self.model, self.task, self.corpus, self.split[split], self.targets,
                                      self.cfg.batch_size)
        plot_curves(self.history(), self.metric, self.out / "curves.png")
        if m:
            cm, names = confusion_for(self.task, m, self.targets[self.split[split]], out)
            plot_confusion(cm, names, self.out / "confusion_matrix.png", f"{split} (best epoch {self.state['best_epoch']})")
        summary = {"best_epoch": self.state["best_epoch"], "best_metric": self.metric,
                   "best_valid": self.state["best_value"], "eval_split": split, split: m, f"{split}_loss": loss,
                   "epochs_run": self.state["epoch"], "train_seconds": self.train_time,
                   "data_wait_share": self.data_wait / self.train_time if self.train_time else None}
        write_json(self.out / "summary.json", summary)
        return summary


def load_corpus(cfg: TrainConfig, progress: bool = True, log: Callable = print) -> tuple[Manifest, Corpus]:
    """The manifest and the aligned stores of ``cfg``."""
    from heads import HEADS

    manifest = load_manifest(cfg.manifest, cfg.data_root)
    corpus = open_corpus(manifest, {m: cfg.stores[m] for m in cfg.modalities}, HEADS.get(cfg.head).layers,
                         cfg.downsample, cfg.in_memory, progress, log)
    return manifest, corpus


def train(cfg: TrainConfig, out: str | Path, corpus: Corpus | None = None, progress: bool = True,
          log: Callable = print) -> dict:
    """Train one run into ``out`` (resuming if it holds one); returns its summary."""
    if corpus is None:
        _, corpus = load_corpus(cfg, progress, log)
    return Trainer(cfg, out, corpus, progress, log).run()


def cross_validate(cfg: TrainConfig, out: str | Path, fold_key: str, progress: bool = True,
                   log: Callable = print) -> dict:
    """Leave-one-group-out over manifest field ``fold_key``: a run per group in ``out/fold-<group>``,
    then each fold's test metrics and their mean ± std in ``out/cv.json``."""
    out = Path(out)
    _, corpus = load_corpus(cfg, progress, log)
    groups = sorted({group_of(u, fold_key) for u in corpus.utterances})
    if len(groups) < 2:
        raise ConfigError(f"--folds {fold_key}: need at least two groups, the manifest has {groups}")
    folds = {}
    for g in groups:
        log(f"--- fold {fold_key}={g} ({groups.index(g) + 1}/{len(groups)})")
        fcfg = dataclasses.replace(cfg, fold_key=fold_key, test_group=g)
        summary = Trainer(fcfg, out / f"fold-{g}", corpus, progress, log).run()
        if "stopped_after" in summary:
            return {"stopped_after": summary["stopped_after"], "fold": g}
        folds[g] = {k: v for k, v in summary["test"].items() if isinstance(v, (int, float))}
    keys = list(next(iter(folds.values())))
    mean = {k: float(np.mean([f[k] for f in folds.values()])) for k in keys}
    std = {k: float(np.std([f[k] for f in folds.values()])) for k in keys}
    result = {"fold_key": fold_key, "folds": folds, "mean": mean, "std": std}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "cv.json", result)
    return result


def per_class(summary_metrics: dict, task: Task) -> list[dict]:
    """Per-class rows for a classification summary (empty for other tasks)."""
    if task.name != "classification":
        return []
    return per_class_table(summary_metrics["confusion"], task.labels)
