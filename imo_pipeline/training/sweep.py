"""`imo sweep`: a hyperparameter search with Optuna, trials trained in this process or on dask, selected on
validation only; then the best configuration retrained with several seeds and tested once.

The study
---------
One Optuna study per sweep folder, in Optuna's RDB storage on SQLite (``study.db``): every change is one
SQLite transaction, so a client killed at any moment (SIGKILL included) leaves the study at the last
committed change, and the file locks SQLite takes die with the process. (Optuna's journal file storage
appends lines under a lock file: a kill can leave a torn last line, which the next append turns into an
unreadable log, and a stale lock file.) The file is created aside and renamed, so a kill during its
creation leaves no half-made study. Only the client touches the study (ask/tell); workers only train.
Sampler: TPE (``constant_liar``, so trials asked while others run spread out), seeded with ``--seed`` and
the number of trials already in the study (a resumed sweep does not replay the first session's draws).
Pruner: median pruning after each fold (``--folds``): a trial whose running mean over the folds done so far
is below the median of the finished trials' at the same fold stops there (from the fifth finished trial on;
no pruning without folds, where a trial is one run).

Objective
---------
The mean over folds of each run's best validation metric (``--best-metric``, default the task's: ua,
f1_mean or mae), every trial on the fixed ``--seed``. The test data is never read during the search: with
``--folds`` a trial's run of fold G trains on a corpus without G's utterances (``search_corpus``), so that
the run's test split is empty and its summary is its best checkpoint on valid; without ``--folds`` the search
loads only split=train/valid utterances. Only the final runs (``best/``) see the test data, once each.

Trials and batches
------------------
A trial's runs go to ``trials/trial-NNNN/[fold-<g>/]``, fold after fold, all trials in the fold order of
``groups``. Trials are asked in batches: for a head that trains stacked (``Head.stackable``), ``--stack K``
trials share one architecture (the first draws it, the next K-1 are enqueued with its shape parameters and
draw the rest), and the batch's trials train through one ``train_runs`` call per fold, stacked. Other heads
ask one trial per free worker. A task is one (batch of one architecture, fold): on dask one task per free
worker runs at a time; without ``--workers``/``--scheduler`` tasks run one after another in this process.
Failures: a trial whose options are refused (``TrainConfig.check``, the head's rules) or whose run stops
(a non-finite loss, a refused combination) is recorded as failed with its reason at once (it is seeded, a
retry would fail alike); a task that crashes (an unexpected error, a lost worker) is retried ``--retries``
times, then its trials are recorded as failed. The sweep goes on either way.

Resume
------
Re-running the same command continues the study: finished trials (complete, pruned, failed) are never run
again; a trial that was running when the client died is recorded as failed (``cut_off``) and enqueued once
more with the same parameters (``rerun_of``), in the same run folders, whose epochs resume exactly. A larger
``--trials`` extends a finished sweep. The options that define the search (head, modalities, fixed train
options, space, folds) must be the same (``sweep.json``).

Folder
------
```
sweeps/NAME/
  sweep.json     what the sweep searches (checked on resume)
  study.db       the Optuna study (SQLite)
  trials/trial-NNNN/[fold-<g>/]   each trial's run folders (valid metrics only)
  best/          the best trial retrained with --final-seeds seeds: an `imo train --seeds [--folds]` folder
  final.json     which trial best/ holds
  report.md, result.json, trials.md, trials.csv, history.png, importance.png
```
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import ConfigError, ImoError
from ..paths import child
from .config import TrainConfig
from .data import Corpus, Table, open_corpus
from .runs import RunDir, json_bytes, write_atomic
from .sweep_space import HEAD_PREFIX, Space

SWEEP_FORMAT = 1
STUDY_NAME = "imo-sweep"
PRUNE_STARTUP = 5           # finished trials before the median pruner acts
VIEWS_KEPT = 2              # fold views of the corpus a worker keeps (each a copy of the other folds' data)
IDENTITY = ("format", "head", "modalities", "space", "train", "folds", "groups", "metric", "direction")


def _quiet(*_: Any) -> None:
    return None


@dataclass
class SweepOptions:
    """How a sweep runs (none of these changes what it searches)."""

    trials: int = 20                 # trials in the study (complete, pruned or failed; cut-off ones re-run)
    final_seeds: int = 3             # seeds the best configuration is retrained with
    stack: int = 4                   # trials per batch sharing one architecture (stackable heads)
    prune: bool = True               # median pruning after each fold
    retries: int = 1                 # retries of a crashed task
    workers: int | None = None       # a local dask cluster of this many worker processes
    scheduler: str | None = None     # or an existing dask scheduler
    progress: bool = True

    def check(self) -> None:
        from ..distributed import check_cluster_options
        from ..job import check_positive

        check_positive("--trials", self.trials, integer=True)
        check_positive("--final-seeds", self.final_seeds, integer=True)
        check_positive("--stack", self.stack, integer=True)
        if self.workers is not None or self.scheduler is not None:
            check_cluster_options(self.scheduler, self.workers, None, self.retries)
        check_positive("--retries", self.retries, integer=True, minimum=0)


# --- the sweep folder ---------------------------------------------------------------------------------------
class SweepDir:
    """A sweep folder: owns its file names (module doc) and the lock a client holds while it drives the study."""

    STATE = "sweep.json"
    STUDY = "study.db"
    LOCK = ".lock"
    FINAL = "final.json"
    RESULT = "result.json"
    REPORT = "report.md"
    TRIALS_MD = "trials.md"
    TRIALS_CSV = "trials.csv"
    HISTORY = "history.png"
    IMPORTANCE = "importance.png"
    FILES = (STATE, STUDY, LOCK, FINAL, RESULT, REPORT, TRIALS_MD, TRIALS_CSV, HISTORY, IMPORTANCE)
    FOLDERS = ("trials", "best")

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()

    def file(self, name: str) -> Path:
        if name not in self.FILES:
            raise ValueError(f"{name!r} is not a sweep file")          # a programming error
        return self.path / name

    @property
    def best(self) -> Path:
        return self.path / "best"

    def trial_dir(self, folder: str) -> Path:
        """The run folder (single split) or folder of fold runs of a trial: ``trials/<folder>``."""
        return child(self.path / "trials", folder)

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.file(self.STUDY)}"

    def refuse_foreign(self) -> None:
        """Refuse an --out that is a file, a run folder, or a folder holding anything a sweep does not write."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"--out {self.path} is a file; pass a folder for the sweep, e.g. sweeps/NAME")
        if not self.path.is_dir():
            return
        if RunDir(self.path).kind() is not None:
            raise ConfigError(f"--out {self.path} holds `imo train` runs, not a sweep; pass a new folder")
        other = sorted(p.name for p in self.path.iterdir() if p.name not in self.FILES + self.FOLDERS
                       and not p.name.startswith(("best-trial-", self.STUDY)) and not p.name.endswith(".tmp"))
        if other:
            raise ConfigError(f"--out {self.path} is not a sweep folder (it holds {other[0]!r}); pass a new folder")

    @contextmanager
    def held(self) -> Iterator["SweepDir"]:
        """Hold the folder for this client (a second client on the same sweep is refused)."""
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file(self.LOCK), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"sweep {self.path} is being run by another `imo sweep` (it holds "
                              f"{self.file(self.LOCK)}); wait for it to end") from None
        try:
            yield self
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes | str) -> Path:
        """``name`` written aside and renamed (atomic)."""
        return write_atomic(self.file(name), data.encode() if isinstance(data, str) else data)

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write(name, json_bytes(obj))

    def read_json(self, name: str) -> Any:
        try:
            return json.loads(self.file(name).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{self.file(name)} is unreadable ({e}); it is written atomically, so it was edited: "
                              f"restore it or pass a new --out") from None


# --- what a trial trains ------------------------------------------------------------------------------------
def trial_config(base: TrainConfig, train: dict[str, Any], head: dict[str, Any]) -> TrainConfig:
    """The fixed options ``base`` with a trial's ``train`` and ``head`` values (checked: ConfigError if refused)."""
    from heads import head_config

    cfg = dataclasses.replace(base, **train, head_options={**base.head_options, **head})
    cfg.check()
    head_config(cfg.head, cfg.head_options)
    return cfg


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Optuna parameters -> (train options, head options)."""
    train = {k: v for k, v in params.items() if not k.startswith(HEAD_PREFIX)}
    head = {k[len(HEAD_PREFIX):]: v for k, v in params.items() if k.startswith(HEAD_PREFIX)}
    return train, head


@dataclass
class TrialRun:
    """One trial's run on one fold: its config (fold set) and run folder."""

    number: int
    cfg: TrainConfig
    out: str


@dataclass
class FoldTask:
    """What a worker trains: runs of one architecture on one fold (``group``; None: the single split), on the
    search corpus of the fixed options ``base``."""

    base: TrainConfig
    fold_key: str | None
    group: str | None
    runs: list[TrialRun]


@dataclass
class FoldReport:
    """What a worker sends back: each run's summary (or ``{"failed": reason}``), where and when it ran."""

    summaries: list[dict]
    worker: str
    pid: int
    started: float
    ended: float


# --- worker side: the search corpus -------------------------------------------------------------------------
_FULL: dict[tuple, Corpus] = {}
_VIEWS: "OrderedDict[tuple, Corpus]" = OrderedDict()
_LOCK = threading.Lock()


def _corpus_key(base: TrainConfig, fold_key: str | None) -> tuple:
    st = Path(base.manifest).stat()
    return (base.manifest, base.data_root, st.st_mtime_ns, st.st_size, tuple(sorted(base.stores.items())),
            tuple(base.modalities), base.head, json.dumps(base.downsample, sort_keys=True),
            json.dumps(base.max_frames, sort_keys=True), base.in_memory, fold_key is None)


def load_search_corpus(base: TrainConfig, fold_key: str | None, progress: bool = False,
                       log: Callable = _quiet) -> Corpus:
    """The corpus the search trains on: every utterance with ``fold_key`` (each fold's run then sees a
    ``corpus_subset`` without its test group), only split=train/valid ones without (the test split is not
    loaded)."""
    from heads import HEADS

    from ..manifest import load_manifest

    manifest = load_manifest(base.manifest, base.data_root)
    only = None if fold_key else {u.id for u in manifest if u.split in ("train", "valid")}
    return open_corpus(manifest, {m: base.stores[m] for m in base.modalities}, HEADS.get(base.head).layers,
                       base.downsample, base.in_memory, progress, log, only=only, max_frames=base.max_frames)


def corpus_subset(corpus: Corpus, keep: np.ndarray) -> Corpus:
    """``corpus`` with only rows ``keep`` (in order): new tables that hold only those utterances (in-memory
    values copied), so that nothing else can be batched, validated or scored."""
    keep = np.asarray(keep, dtype=np.int64)
    tables = {}
    for m, t in corpus.tables.items():
        sub = Table(t.store, [t.rows[int(k)] for k in keep], t.prep, in_memory=False, progress=False)
        if t.values is not None:
            sub.values = (np.concatenate([t[int(k)] for k in keep]) if len(keep)
                          else np.empty((0, *t.values.shape[1:]), t.values.dtype))
            sub.in_memory = True
        if not np.array_equal(sub.lengths, t.lengths[keep]):
            raise RuntimeError(f"corpus_subset: the {m} lengths do not match their table")   # a programming error
        tables[m] = sub
    return dataclasses.replace(corpus, utterances=[corpus.utterances[int(k)] for k in keep], tables=tables)


def search_corpus(base: TrainConfig, fold_key: str | None, group: str | None) -> Corpus:
    """The corpus a fold's trial runs train on, cached per process: the search corpus, without ``group``'s
    utterances for a fold (the ``VIEWS_KEPT`` most recent fold views kept)."""
    from .trainer import group_of

    key = _corpus_key(base, fold_key)
    with _LOCK:
        full = _FULL.get(key)
        if full is None:
            _FULL.clear()
            _VIEWS.clear()
            full = _FULL[key] = load_search_corpus(base, fold_key)
        if fold_key is None:
            return full
        view = _VIEWS.get((key, group))
        if view is None:
            keep = np.array([i for i, u in enumerate(full.utterances) if group_of(u, fold_key) != group], np.int64)
            view = _VIEWS[(key, group)] = corpus_subset(full, keep)
            while len(_VIEWS) > VIEWS_KEPT:
                _VIEWS.popitem(last=False)
        _VIEWS.move_to_end((key, group))
        return view


def release_corpora() -> None:
    """Drop this process's cached search corpora."""
    with _LOCK:
        _FULL.clear()
        _VIEWS.clear()


def train_together(jobs: list[tuple[TrainConfig, Path]], corpus: Corpus) -> list[dict]:
    """Train ``jobs`` (runs of one architecture) through ``trainer.train_runs`` in one call (stacked where the
    trainer can); their summaries in order, ``{"failed": reason}`` for a run refused or stopped by an error."""
    from .trainer import train_runs

    try:
        out = train_runs(jobs, corpus, False, _quiet, keep_going=True)
        if len(out) == len(jobs):
            return out
    except ImoError as e:
        if len(jobs) == 1:
            return [{"failed": str(e)}]
    results = []                          # one run failed the group: each alone (finished ones are read back)
    for job in jobs:
        try:
            results.append(train_runs([job], corpus, False, _quiet)[0])
        except ImoError as e:
            results.append({"failed": str(e)})
    return results


def train_fold(task: FoldTask) -> FoldReport:
    """Train a task's runs (on a dask worker, or in the client without one)."""
    try:
        from distributed import get_worker
        worker = get_worker().address
    except (ImportError, ValueError):
        worker = "local"
    started = time.time()
    corpus = search_corpus(task.base, task.fold_key, task.group)
    summaries = train_together([(r.cfg, Path(r.out)) for r in task.runs], corpus)
    return FoldReport(summaries, worker, os.getpid(), started, time.time())


# --- client side: running tasks ---------------------------------------------------------------------------
class LocalPool:
    """Runs tasks one after another in this process (no --workers / --scheduler)."""

    def __init__(self, retries: int, say: Callable[[str], None]):
        self.retries, self.say = retries, say
        self.queue: list[tuple[int, FoldTask]] = []
        self.slots = 1
        self._n = 0

    def submit(self, task: FoldTask) -> int:
        self._n += 1
        self.queue.append((self._n, task))
        return self._n

    def __len__(self) -> int:
        return len(self.queue)

    def next(self) -> tuple[int, FoldReport | BaseException]:
        handle, task = self.queue.pop(0)
        for attempt in range(self.retries + 1):
            try:
                return handle, train_fold(task)
            except ImoError:
                raise
            except Exception as e:      # noqa: BLE001  (a crash: retried, then its trials fail)
                if attempt == self.retries:
                    return handle, e
                self.say(f"task of trial(s) {', '.join(str(r.number) for r in task.runs)} crashed "
                         f"({type(e).__name__}: {e}); retrying")
        raise AssertionError("unreachable")

    def close(self) -> None:
        return None


class DaskPool:
    """Runs tasks on a dask cluster (``distributed.connect``: a local cluster or an existing scheduler)."""

    def __init__(self, scheduler: str | None, workers: int | None, retries: int):
        from distributed import as_completed

        from ..distributed import connect

        self.client, self.cluster = connect(scheduler, workers)
        self.retries = retries
        self.slots = max(1, len(self.client.scheduler_info()["workers"]))
        self.pending: dict[Any, int] = {}
        self.done = as_completed()
        self.tag = uuid.uuid4().hex[:8]
        self._n = 0

    def submit(self, task: FoldTask) -> int:
        self._n += 1
        fut = self.client.submit(train_fold, task, retries=self.retries, pure=False,
                                 key=f"imo-sweep-{self.tag}-{self._n}")
        self.pending[fut] = self._n
        self.done.add(fut)
        return self._n

    def __len__(self) -> int:
        return len(self.pending)

    def next(self) -> tuple[int, FoldReport | BaseException]:
        fut = next(self.done)
        handle = self.pending.pop(fut)
        if fut.status == "finished":
            return handle, fut.result()
        exc = fut.exception()
        if isinstance(exc, ImoError):
            raise exc
        return handle, exc

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# --- client side: the study -------------------------------------------------------------------------------
def _optuna():
    try:
        import optuna
    except ImportError:
        raise ConfigError("imo sweep needs Optuna: pip install 'imo-pipeline[sweep]'") from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_study(sd: SweepDir, direction: str, seed: int, prune: bool):
    """The sweep's study (created atomically on first use); TPE sampler and median pruner (module doc)."""
    optuna = _optuna()
    path = sd.file(sd.STUDY)
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        storage = optuna.storages.RDBStorage(f"sqlite:///{tmp}")
        optuna.create_study(storage=storage, study_name=STUDY_NAME, direction=direction)
        storage.remove_session()
        storage.engine.dispose()
        os.replace(tmp, path)
    storage = optuna.storages.RDBStorage(sd.storage_url, engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        n = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    except KeyError:
        raise ConfigError(f"{path} holds no study named {STUDY_NAME!r}; pass a new --out") from None
    sampler = optuna.samplers.TPESampler(seed=(seed * 1_000_003 + n) % 2**32, constant_liar=True)
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNE_STARTUP, n_warmup_steps=0) if prune
              else optuna.pruners.NopPruner())
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner)
    if study.direction.name.lower() != direction:
        raise ConfigError(f"{path} maximises/minimises differently from this sweep; pass a new --out")
    return study


def counted(t) -> bool:
    """Whether a trial counts toward --trials: finished, and not cut off by a kill (those are re-run)."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        t.state == TrialState.FAIL and not t.user_attrs.get("cut_off"))


def recover_cut_off(study, say: Callable[[str], None]) -> int:
    """Trials left running by a client that died: recorded as failed (``cut_off``) and enqueued once more with
    the same parameters and run folder (``rerun_of``); idempotent. Returns how many."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    rerun = {t.user_attrs.get("rerun_of") for t in trials}
    storage = study._storage            # as Optuna's own stale-trial handling does (no public call for it)
    n = 0
    for t in trials:
        if t.state != TrialState.RUNNING:
            continue
        if t.number not in rerun:
            attrs = {"rerun_of": t.number, **({"folder": t.user_attrs["folder"]} if "folder" in t.user_attrs else {})}
            study.enqueue_trial(dict(t.params), user_attrs=attrs)
        storage.set_trial_user_attr(t._trial_id, "cut_off", True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        n += 1
    if n:
        say(f"{n} trial(s) were cut off when the last sweep stopped; each is recorded as failed and runs once "
            f"more with the same parameters")
    return n


def stack_profile(head: str) -> tuple[bool, tuple[str, ...]]:
    """(whether runs of ``head`` train stacked, the options that may differ between stacked runs), as the head
    class declares them (``Head.stackable``, ``Head.per_run_options``)."""
    from heads import HEADS

    cls = HEADS.get(head)
    return cls.stackable, cls.per_run_options


@dataclass
class Live:
    """A trial in flight: its Optuna trial, config, folder and the fold values so far."""

    trial: Any
    cfg: TrainConfig
    folder: str
    values: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    workers: list[str] = field(default_factory=list)


class Search:
    """The ask/tell loop (module doc): asks batches, hands (architecture, fold) tasks to a pool, reports each
    fold's value, prunes, tells results, and keeps the progress bar."""

    def __init__(self, study, space: Space, base: TrainConfig, fold_key: str | None, groups: list[str | None],
                 sd: SweepDir, opts: SweepOptions, pool, say: Callable[[str], None]):
        self.study, self.space, self.base, self.fold_key, self.groups = study, space, base, fold_key, groups
        self.sd, self.opts, self.pool, self.say = sd, opts, pool, say
        self.stackable, per_run = stack_profile(base.head)
        self.shape_keys = space.architecture(per_run)
        self.inflight: dict[int, tuple[list[Live], int]] = {}   # task handle -> (trials, fold index)
        self.live = 0
        self.bar = None

    # --- counting
    def finished(self) -> int:
        return sum(counted(t) for t in self.study.get_trials(deepcopy=False))

    def _best_text(self) -> str:
        try:
            return f"{self.study.best_value:.4f}"
        except ValueError:
            return "-"

    def _tick(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(best=self._best_text(), running=self.live, refresh=False)
            self.bar.update(1)

    # --- asking
    def _waiting(self) -> bool:
        from optuna.trial import TrialState

        return bool(self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))

    def _ask_one(self, shape: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
        if shape and not self._waiting():
            self.study.enqueue_trial(shape)
        trial = self.study.ask()
        train, head = self.space.suggest(trial)
        folder = trial.user_attrs.get("folder") or f"trial-{trial.number:04d}"
        if "folder" not in trial.user_attrs:
            trial.set_user_attr("folder", folder)
        return trial, {**train, **{HEAD_PREFIX + k: v for k, v in head.items()}}

    def ask_batch(self, k: int) -> list[Live]:
        """``k`` new trials (sharing the first one's shape for a stackable head); refused ones told failed."""
        out, shape = [], None
        for i in range(k):
            trial, params = self._ask_one(shape)
            if i == 0 and self.stackable:
                shape = {p: params[p] for p in self.shape_keys if p in params}
            train, head = split_params(params)
            try:
                cfg = trial_config(self.base, train, head)
            except ConfigError as e:
                self._fail(trial, f"options refused: {e}")
                continue
            out.append(Live(trial, cfg, trial.user_attrs["folder"]))
        return out

    # --- running
    def _runs(self, lives: list[Live], fold: int) -> list[TrialRun]:
        g = self.groups[fold]
        runs = []
        for lv in lives:
            top = self.sd.trial_dir(lv.folder)
            out = RunDir(top).fold(g).path if g is not None else top
            cfg = dataclasses.replace(lv.cfg, fold_key=self.fold_key, test_group=g)
            runs.append(TrialRun(lv.trial.number, cfg, str(out)))
        return runs

    def submit(self, lives: list[Live], fold: int) -> None:
        """Each architecture among ``lives`` as one task of fold ``fold``."""
        by_shape: dict[str, list[Live]] = {}
        for lv in lives:
            key = json.dumps({k: lv.trial.params.get(k) for k in self.shape_keys}, sort_keys=True, default=str)
            by_shape.setdefault(key, []).append(lv)
        for group in by_shape.values():
            task = FoldTask(self.base, self.fold_key, self.groups[fold], self._runs(group, fold))
            self.inflight[self.pool.submit(task)] = (group, fold)

    def _fail(self, trial, reason: str) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr("error", reason[:2000])
        self.study.tell(trial, state=TrialState.FAIL)
        self.say(f"trial {trial.number} failed: {reason}")
        self._tick()

    def _finish(self, lv: Live, state, value: float | None = None) -> None:
        from optuna.trial import TrialState

        lv.trial.set_user_attr("fold_values", lv.values)
        lv.trial.set_user_attr("train_seconds", lv.seconds)
        lv.trial.set_user_attr("workers", sorted(set(lv.workers)))
        if state == TrialState.COMPLETE:
            self.study.tell(lv.trial, value)
            self.say(f"trial {lv.trial.number}: {self.metric_name} {value:.4f}"
                     + (f" (mean over {len(lv.values)} folds)" if self.fold_key else "")
                     + f"; best {self._best_text()}")
        else:
            self.study.tell(lv.trial, state=state)
            self.say(f"trial {lv.trial.number} pruned after fold {len(lv.values)} of {len(self.groups)} "
                     f"(running mean {np.mean(list(lv.values.values())):.4f})")
        self._tick()

    def handle(self, handle: int, report: FoldReport | BaseException) -> None:
        """A finished task: each trial's fold value reported, pruned, failed, told or sent to the next fold."""
        from optuna.trial import TrialState

        lives, fold = self.inflight.pop(handle)
        if isinstance(report, BaseException):
            for lv in lives:
                self.live -= 1
                self._fail(lv.trial, f"its task crashed after {self.opts.retries} retries "
                                     f"({type(report).__name__}: {report})")
            return
        last = fold == len(self.groups) - 1
        survivors = []
        for lv, summary in zip(lives, report.summaries):
            lv.workers.append(f"{report.worker} (pid {report.pid})")
            if "failed" in summary:
                self.live -= 1
                self._fail(lv.trial, summary["failed"])
                continue
            value = summary.get("best_valid")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                self.live -= 1
                self._fail(lv.trial, f"its run gave no finite valid {self.metric_name} ({value!r})")
                continue
            lv.values[str(self.groups[fold])] = float(value)
            lv.seconds += float(summary.get("train_seconds") or 0.0)
            running = float(np.mean(list(lv.values.values())))
            if last:
                self.live -= 1
                self._finish(lv, TrialState.COMPLETE, running)
                continue
            lv.trial.report(running, fold)
            if self.opts.prune and lv.trial.should_prune():
                self.live -= 1
                self._finish(lv, TrialState.PRUNED)
                continue
            survivors.append(lv)
        if survivors:
            self.submit(survivors, fold + 1)

    def run(self, metric_name: str) -> None:
        """Ask, train and tell until the study holds ``--trials`` counted trials."""
        from tqdm import tqdm

        self.metric_name = metric_name
        done = self.finished()
        if done >= self.opts.trials:
            return
        self.bar = tqdm(total=self.opts.trials, initial=done, unit="trial", desc="sweep", file=sys.stderr,
                        disable=not self.opts.progress, dynamic_ncols=True)
        self.bar.set_postfix(best=self._best_text(), running=0)
        try:
            while True:
                while len(self.pool) < self.pool.slots:
                    want = self.opts.trials - self.finished() - self.live
                    if want <= 0:
                        break
                    k = min(want, self.opts.stack if self.stackable else 1)
                    lives = self.ask_batch(k)
                    self.live += len(lives)
                    if lives:
                        self.submit(lives, 0)
                if not len(self.pool):
                    break
                self.handle(*self.pool.next())
        finally:
            self.bar.close()
            self.bar = None


# --- the whole sweep ----------------------------------------------------------------------------------------
def sweep_identity(cfg: TrainConfig, space: Space, fold_key: str | None, groups: list[str] | None,
                   metric: str, direction: str) -> dict[str, Any]:
    """What a sweep searches (sweep.json): a resume must search the same. The fixed value of a searched option
    is left out (it is never used)."""
    train = cfg.identity()
    searched = {p.name for p in space.params if p.section == "train"}
    train = {k: v for k, v in train.items() if k not in searched}
    train["head_options"] = {k: v for k, v in train["head_options"].items()
                             if k not in {p.name for p in space.params if p.section == "head"}}
    return {"format": SWEEP_FORMAT, "head": cfg.head, "modalities": cfg.modalities, "train": train,
            "space": space.to_dict(), "folds": fold_key, "groups": groups, "metric": metric, "direction": direction}


def _check_identity(sd: SweepDir, new: dict[str, Any]) -> None:
    old = sd.read_json(sd.STATE)
    if old is None:
        return
    for key in IDENTITY:
        a, b = old.get(key), json.loads(json.dumps(new.get(key)))
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            k = sorted(x for x in set(a) | set(b) if a.get(x) != b.get(x))[0]
            what, a, b = f"{key} {k}", a.get(k), b.get(k)
        else:
            what = key
        raise ConfigError(f"{sd.path} holds a sweep with {what}={a!r}, this one has {b!r}; re-run with the same "
                          f"options to resume it, or pass a new --out")


def objective_of(cfg: TrainConfig) -> tuple[str, str]:
    """(metric, direction): the run's best metric and whether the sweep maximises or minimises it."""
    from .tasks import task_class

    task = task_class(cfg.task)
    metric = cfg.best_metric or task.best_metric
    return metric, "minimize" if metric in task.lower_is_better else "maximize"


def check_data(cfg: TrainConfig, fold_key: str | None) -> list[str | None]:
    """Open the manifest and the stores (no values loaded) and return the fold order (``[None]`` for the
    single split); one-line errors for what a trial would otherwise fail on."""
    from ..manifest import load_manifest
    from ..paths import is_url
    from ..store import open_store
    from .experiment import groups_of

    manifest = load_manifest(cfg.manifest, cfg.data_root)
    for m in cfg.modalities:
        path = cfg.stores[m]
        if not is_url(str(path)) and not Path(path).exists():
            raise ConfigError(f"no {m} store at {path}: run `imo extract --modality {m}` or pass --store "
                              f"{m[0]}=PATH")
        open_store(path).check(modality=m, manifest=manifest)
    if fold_key:
        return list(groups_of(list(manifest), fold_key))
    if not any(u.split == "train" for u in manifest):
        raise ConfigError("the manifest has no split=train utterances; add train/valid/test splits or pass "
                          "--folds FIELD")
    return [None]


def run_sweep(cfg: TrainConfig, space: Space, out: str | Path, fold_key: str | None = None,
              opts: SweepOptions | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Search ``space`` over the fixed options ``cfg`` into sweep folder ``out`` (resuming it), then retrain the
    best trial with ``opts.final_seeds`` seeds into ``out/best`` and write the report; returns result.json's
    content (see the module doc)."""
    from .sweep_report import final_stage, write_report

    opts = opts or SweepOptions()
    opts.check()
    _optuna()
    cfg.check()
    sd = SweepDir(out)
    sd.refuse_foreign()
    groups = check_data(cfg, fold_key)
    metric, direction = objective_of(cfg)
    identity = sweep_identity(cfg, space, fold_key, groups if fold_key else None, metric, direction)
    _check_identity(sd, identity)
    with sd.held():
        if sd.read_json(sd.STATE) is None:
            sd.write_json(sd.STATE, identity)
        study = open_study(sd, direction, cfg.seed, opts.prune)
        def say(msg: str) -> None:
            from tqdm import tqdm

            (tqdm.write(msg, file=sys.stderr) if opts.progress else log(msg))

        recover_cut_off(study, say)
        pool = LocalPool(opts.retries, say) if opts.workers is None and opts.scheduler is None else \
            DaskPool(opts.scheduler, opts.workers, opts.retries)
        where = ("this process" if isinstance(pool, LocalPool) else
                 f"{pool.slots} dask worker(s) at {pool.client.scheduler.address}")
        log(f"sweep {sd.path}: {opts.trials} trials of {cfg.head} on {'+'.join(cfg.modalities)}, "
            f"valid {metric} ({direction}) " + (f"averaged over {len(groups)} folds of {fold_key}" if fold_key
                                                 else "on the valid split") + f", on {where}; space "
            f"({space.source}):\n{space.table()}")
        search = Search(study, space, cfg, fold_key, groups, sd, opts, pool, say)
        t0 = time.perf_counter()
        try:
            search.run(metric)
        finally:
            pool.close()
            release_corpora()
        search_seconds = time.perf_counter() - t0
        final = final_stage(study, sd, cfg, fold_key, opts, metric, log)
        return write_report(study, sd, cfg, space, fold_key, groups, opts, metric, direction, final,
                            search_seconds)
