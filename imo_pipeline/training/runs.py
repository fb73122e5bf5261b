"""Run folders: every file name of a run, atomic commits, checkpoints, and loading a trained run.

```
runs/NAME/
  config.json            resolved config: head, task, labels, preprocessing, the stores, their StoreMeta and
                         content fingerprints (a resume or an evaluation refuses a store that changed since)
  metrics.jsonl          one line per finished epoch
  best.safetensors/.json weights of the best epoch; its record (epoch, metric, valid metrics, file digests)
  last.safetensors/.json weights of the last finished epoch; its record (counters, file digests)
  last.state.pt          optimizer + RNG state (tensors only; loaded with weights_only=True)
  summary.json           metrics of the best checkpoint on test (else valid), written when the run ends
  excluded.json          utterances left out because their extraction failed
  curves.png, confusion_matrix.png
  eval-<split>.json, confusion_matrix-<split>.png      written by `imo evaluate`
  eval-<corpus>[-<split>].json, confusion_matrix-<corpus>[-<split>].png
                         `imo evaluate --manifest OTHER.jsonl` (<corpus>: the manifest's stem, made safe);
                         any of these ends in -without-<modality>[+<modality>] for `--drop`
  .lock                  flock'd by the `imo train` process that trains this folder
  commit.json            present only while an epoch's files are being committed
runs/CV/                 cross-validation (`imo train --folds FIELD`)
  cv.json                each run's test metrics, per fold / per seed / overall mean and sample std, the folders
  fold-<name>/           one run folder per group; <name> is ``paths.safe_name(group)``
  fold-<name>/seed-<s>/  with --seeds: one run folder per group and seed
runs/SEEDS/              one split, several seeds (`imo train --seeds N`)
  summary.json           each seed's test metrics, their mean and sample std (no config.json: not a run)
  seed-<s>/              one run folder per seed
```

Every epoch ends with one commit: the new ``metrics.jsonl``, ``best.*`` (when the epoch is the best so far) and
``last.*`` are written aside as ``NAME.new`` and synced, then ``commit.json`` names them, then each is renamed
onto its name and ``commit.json`` is removed. Opening the folder finishes a commit whose ``commit.json`` exists
(roll forward) and drops staged files that have none (roll back), so a kill at any moment leaves the folder at
the end of one epoch or of the next, never between. Each record (``best.json``, ``last.json``) holds the
SHA-256 of its companion files, checked before they are read: a truncated, edited or swapped file is refused.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import io
import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from ..errors import ConfigError, MediaError, StoreError
from ..paths import child, safe_name
from ..safe_load import load_checkpoint
from ..store import StoreMeta
from .data import Preprocess, collate
from .tasks import Task, build_task

RUN_FORMAT = 2          # run folders with digests in their records and store content fingerprints in config.json
_STAGED = ".new"        # a file of the commit in progress
_TMP = ".tmp"           # a single file being replaced
_CHECKPOINTS = ("best", "last")
_SPLITS = ("train", "valid", "test")
#: the StoreMeta fields that identify what a run was trained on (with the store's content fingerprint)
STORE_IDENTITY = ("modality", "encoder_fingerprint", "layers", "dim", "manifest_fingerprint")


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON of a run file (NaN/Infinity refused: a run never records a non-finite number)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_jsonable, allow_nan=False).encode()


def verify_hint(stores: Iterable[str]) -> str:
    """How to check the stores a non-finite result came from."""
    return f"check each store with `imo verify STORE` ({', '.join(map(str, stores))})"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to the disk."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def write_atomic(dst: Path, data: bytes, tmp_suffix: str = _TMP) -> Path:
    """``data`` written beside ``dst``, synced, then renamed onto it: readers see the old file or the new one,
    never a part. A failed write (disk full, permissions) is one ConfigError line naming the file."""
    tmp = dst.with_name(dst.name + tmp_suffix)
    try:
        _write_file(tmp, data)
        _replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"could not write {dst} ({e.strerror or e}); free space or fix permissions, then "
                          f"re-run the same command") from None
    return dst


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_bytes(model: torch.nn.Module) -> bytes:
    """A model's state dict as safetensors bytes."""
    return save_safetensors_bytes({k: v.detach().contiguous() for k, v in model.state_dict().items()})


def load_weights_into(model: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """``model.load_state_dict`` with a one-line refusal for weights of another head."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        detail = str(e).replace("\n", " ").replace("\t", "")[:200]
        raise ConfigError(f"checkpoint {source} does not fit the head described in its config.json ({detail}); "
                          f"delete the run folder or pass a new --out and train again") from None


class Commit:
    """The files of one epoch, staged beside their names and renamed together (see the module doc)."""

    def __init__(self, run: "RunDir"):
        self.run = run
        self.staged: dict[str, str] = {}   # name -> SHA-256 of the staged bytes

    def stage(self, name: str, data: bytes) -> str:
        """Write ``data`` as ``name.new``; returns its digest."""
        path = self.run.path / (self.run._owned(name) + _STAGED)
        try:
            _write_file(path, data)
        except OSError as e:
            path.unlink(missing_ok=True)
            raise self._failed(path, e) from None
        self.staged[name] = _digest(data)
        return self.staged[name]

    def _failed(self, path: Path, e: OSError) -> ConfigError:
        return ConfigError(f"could not write {path} ({e.strerror or e}); the run keeps its last commit: free space "
                           f"or fix permissions, then re-run the same command to resume")

    def stage_checkpoint(self, which: str, model: torch.nn.Module, record: dict, state: Any = None,
                         covers: tuple[str, ...] = ()) -> None:
        """``which.safetensors`` (+ ``last.state.pt`` for ``state``) and ``which.json``, the record that holds
        ``record`` and the digests of those files and of ``covers`` (files staged before, e.g. metrics.jsonl)."""
        r = self.run
        files = {r.weights_name(which): self.stage(r.weights_name(which), weights_bytes(model))}
        if state is not None:
            buf = io.BytesIO()
            torch.save(state, buf)
            files[RunDir.STATE] = self.stage(RunDir.STATE, buf.getvalue())
        files.update({n: self.staged[n] for n in covers})
        self.stage(r.record_name(which), json_bytes({**record, "format": RUN_FORMAT, "files": files}))

    def apply(self) -> None:
        """Make every staged file visible at once: journal, renames, journal removed."""
        r = self.run
        journal = r.path / RunDir.JOURNAL
        tmp = journal.with_name(journal.name + _TMP)
        try:
            _write_file(tmp, json_bytes({"files": list(self.staged)}))
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise self._failed(tmp, e) from None
        _replace(tmp, journal)
        _sync_dir(r.path)
        r._roll_forward()


class RunDir:
    """A run folder: owns the name of every file in it and commits them atomically (module doc).

    Nothing else in imo builds a run file's path; readers and writers go through these methods.
    """

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    STATE = "last.state.pt"
    SUMMARY = "summary.json"
    EXCLUDED = "excluded.json"
    CURVES = "curves.png"
    CONFUSION = "confusion_matrix.png"
    CV = "cv.json"
    JOURNAL = "commit.json"
    LOCK = ".lock"
    _FIXED = (CONFIG, METRICS, STATE, SUMMARY, EXCLUDED, CURVES, CONFUSION, CV, JOURNAL, LOCK,
              "best.safetensors", "best.json", "last.safetensors", "last.json")
    _EVAL = re.compile(r"^(eval-[A-Za-z0-9._+=-]+\.json|confusion_matrix-[A-Za-z0-9._+=-]+\.png)$")

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- names ------------------------------------------------------------------------------------------
    @staticmethod
    def weights_name(which: str) -> str:
        if which not in _CHECKPOINTS:
            raise ConfigError(f"--checkpoint {which!r}: use best or last")
        return f"{which}.safetensors"

    @staticmethod
    def record_name(which: str) -> str:
        if which not in _CHECKPOINTS:
            raise ConfigError(f"--checkpoint {which!r}: use best or last")
        return f"{which}.json"

    @staticmethod
    def eval_names(split: str | None = "test", corpus: str | None = None, drop: Iterable[str] = ()
                   ) -> tuple[str, str]:
        """(metrics JSON, confusion PNG) written by ``imo evaluate``: ``eval-<split>.json`` on the run's own data;
        ``eval-<corpus>[-<split>].json`` on another corpus (``corpus``: its manifest's stem, made a safe name;
        one that reads like a split gets a ``corpus-`` prefix); ``-without-<m>[+<m>]`` added for dropped
        modalities."""
        if split is not None and split not in _SPLITS:
            raise ConfigError(f"--split {split!r}: use train, valid or test")
        parts = []
        if corpus is not None:
            name = safe_name(corpus)
            parts.append(f"corpus-{name}" if name in _SPLITS else name)
        elif split is None:
            raise ValueError("the run's own data is evaluated on one split")   # a programming error
        if split is not None:
            parts.append(split)
        drop = list(drop)
        if drop:
            parts.append("without-" + "+".join(drop))
        stem = "-".join(parts)
        return f"eval-{stem}.json", f"confusion_matrix-{stem}.png"

    def _owned(self, name: str) -> str:
        if name not in self._FIXED and not self._EVAL.match(name):
            raise ValueError(f"{name!r} is not a run-folder file")   # a programming error, not user input
        return name

    def file(self, name: str) -> Path:
        """The path of one of the folder's files (for messages and for readers outside imo)."""
        return self.path / self._owned(name)

    def fold(self, group: str) -> "RunDir":
        """The run folder of one cross-validation group: ``fold-<safe_name(group)>`` directly inside this one."""
        return RunDir(child(self.path, "fold-" + safe_name(group)))

    def seed(self, seed: int) -> "RunDir":
        """The run folder of one seed: ``seed-<seed>`` directly inside this one (a seeded split or a fold)."""
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ConfigError(f"seed {seed!r}: use a whole number >= 0")
        return RunDir(child(self.path, f"seed-{seed}"))

    # --- what the folder holds -----------------------------------------------------------------------------
    def refuse_file(self, option: str = "--out") -> None:
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"{option} {self.path} is a file, not a folder; pass a new folder (or a run folder "
                              f"to resume)")

    def is_run(self) -> bool:
        return (self.path / self.CONFIG).is_file()

    def is_cv(self) -> bool:
        return (self.path / self.CV).is_file() or any(p.is_dir() and p.name.startswith("fold-")
                                                      for p in self._entries())

    def is_seeds(self) -> bool:
        """A folder of seeded runs of one split (``seed-*`` folders, or their summary.json without a config.json)."""
        if self.is_run() or self.is_cv():
            return False
        return (self.path / self.SUMMARY).is_file() or any(p.is_dir() and p.name.startswith("seed-")
                                                           for p in self._entries())

    def kind(self) -> str | None:
        """``run``, ``cv`` (folds, maybe seeds), ``seeds`` (one split, several seeds) or None (none of them)."""
        return "run" if self.is_run() else "cv" if self.is_cv() else "seeds" if self.is_seeds() else None

    def _entries(self) -> list[Path]:
        return sorted(self.path.iterdir()) if self.path.is_dir() else []

    def has(self, which: str) -> bool:
        return (self.path / self.record_name(which)).is_file()

    def require_cv_parent(self) -> None:
        """Refuse to put a cross-validation into a file or into a single run's folder."""
        self.require_parent("cv")

    def require_parent(self, kind: str) -> None:
        """Refuse to put several runs (``kind``: cv or seeds) into a file, a single run's folder, or a folder that
        holds the other kind."""
        self.refuse_file()
        have = self.kind()
        what = {"run": "a single run (config.json)", "cv": "a cross-validation (cv.json or fold-* folders)",
                "seeds": "seeded runs of one split (seed-* folders)"}
        need = {"cv": "--folds", "seeds": "--seeds without --folds"}
        if have is not None and have != kind:
            fix = f"re-run it with {need[have]} to resume it, or " if have in need else ""
            raise ConfigError(f"--out {self.path} holds {what[have]}, not {what[kind]}; {fix}pass a new --out")

    # --- locking and recovery ---------------------------------------------------------------------------------
    @contextmanager
    def training(self) -> Iterator["RunDir"]:
        """Hold the folder for training: refuse a folder another process trains, finish or drop an
        interrupted commit, release on exit (the lock also goes when the process dies)."""
        self.refuse_file()
        if self.is_cv():
            raise ConfigError(f"--out {self.path} holds a cross-validation (cv.json or fold-* folders); pass a "
                              f"new --out, or --folds to resume it")
        if self.is_seeds():
            raise ConfigError(f"--out {self.path} holds seeded runs (seed-* folders); pass a new --out, or --seeds "
                              f"to resume them")
        if not self.has("last") and not (self.path / self.JOURNAL).is_file():
            self._refuse_foreign()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / self.LOCK, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"run folder {self.path} is being trained by another process (it holds "
                              f"{self.path / self.LOCK}); wait for it to end or pass a new --out") from None
        self._lock_fd = fd
        try:
            self.recover(rollback=True)
            yield self
        finally:
            self._lock_fd = None
            os.close(fd)

    def _trained_elsewhere(self) -> bool:
        """True while another process holds the training lock."""
        if self._lock_fd is not None or not (self.path / self.LOCK).exists():
            return False
        fd = os.open(self.path / self.LOCK, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)

    def recover(self, rollback: bool) -> None:
        """Finish an interrupted commit (its journal exists) and, with ``rollback``, drop staged files of
        one that never reached its journal. Only a process holding the lock may roll back."""
        if (self.path / self.JOURNAL).is_file():
            self._roll_forward()
        if rollback:
            for p in self._entries():
                if p.name.endswith((_STAGED, _TMP)):
                    p.unlink(missing_ok=True)

    def _roll_forward(self) -> None:
        journal = self.path / self.JOURNAL
        damaged = ConfigError(f"{journal} is damaged (it is written atomically, so it was edited); delete the run "
                              f"folder or pass a new --out")
        try:
            names = json.loads(journal.read_text())["files"]
        except FileNotFoundError:
            return
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
            raise damaged from None
        if not isinstance(names, list) or not all(isinstance(n, str) and self._is_owned(n) for n in names):
            raise damaged
        for name in names:
            src = self.path / (name + _STAGED)
            try:
                _replace(src, self.path / name)
            except FileNotFoundError:
                pass                                   # renamed before the interruption
        _sync_dir(self.path)
        journal.unlink(missing_ok=True)
        _sync_dir(self.path)

    def settle(self) -> None:
        """For readers: wait out a commit in progress, or finish one a killed trainer left (holding the lock
        meanwhile, so that no trainer starts in between)."""
        for _ in range(100):
            if not (self.path / self.JOURNAL).is_file():
                return
            if self._lock_fd is not None:
                self.recover(rollback=False)
                return
            fd = os.open(self.path / self.LOCK, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.recover(rollback=False)
                return
            except BlockingIOError:
                pass                                  # a trainer is committing: wait for it
            finally:
                os.close(fd)
            time.sleep(0.05)

    def _refuse_foreign(self) -> None:
        other = [p.name for p in self._entries() if not (self._is_owned(p.name) or p.name.endswith((_STAGED, _TMP)))]
        if other:
            raise ConfigError(f"--out {self.path} is not a run folder (it holds {other[0]!r}"
                              f"{f' and {len(other) - 1} more' if len(other) > 1 else ''}); pass a new or empty "
                              f"folder")

    def reset(self) -> None:
        """Prepare for a fresh start: remove the files of an earlier, unfinished start; refuse a folder that
        holds anything imo did not write."""
        self._refuse_foreign()
        for p in self._entries():
            if p.name not in (self.LOCK,) and p.is_file():
                p.unlink()

    def _is_owned(self, name: str) -> bool:
        return name in self._FIXED or bool(self._EVAL.match(name))

    # --- single files (each replaced atomically) ------------------------------------------------------------
    def _write(self, name: str, data: bytes) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        return write_atomic(self.path / self._owned(name), data)

    def write_json(self, name: str, obj: Any) -> Path:
        return self._write(name, json_bytes(obj))

    def write_config(self, cfg: dict) -> Path:
        return self.write_json(self.CONFIG, cfg)

    def write_summary(self, summary: dict) -> Path:
        return self.write_json(self.SUMMARY, summary)

    def write_excluded(self, excluded: dict[str, str]) -> Path:
        return self.write_json(self.EXCLUDED, excluded)

    def write_eval(self, name: str, result: dict) -> Path:
        """``result`` as ``name`` (one of ``eval_names``)."""
        return self.write_json(name, result)

    def write_cv(self, result: dict) -> Path:
        return self.write_json(self.CV, result)

    def result_name(self, kind: str) -> str:
        """The file that holds the results of several runs: cv.json (``cv``) or summary.json (``seeds``)."""
        return {"cv": self.CV, "seeds": self.SUMMARY}[kind]

    def plot(self, name: str, draw: Callable[[Path], Any]) -> Path:
        """``draw(tmp_path)`` writes a PNG that then replaces ``name``."""
        self.path.mkdir(parents=True, exist_ok=True)
        dst = self.path / self._owned(name)
        tmp = dst.with_name(dst.name + _TMP)
        draw(tmp)
        _replace(tmp, dst)
        return dst

    def read_json(self, name: str, what: str = "") -> Any:
        path = self.path / self._owned(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path} is missing; {what or 'the run folder is incomplete'}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); it was edited or damaged: delete the run folder "
                              f"or pass a new --out") from None

    def read_config(self) -> dict:
        """config.json, checked for the keys a run needs."""
        if not self.is_run():
            if (self.path / self.CV).is_file():
                raise ConfigError(f"{self.path} is a cross-validation folder; pass one fold's run, e.g. "
                                  f"{self.path}/fold-<name>")
            if self.is_seeds():
                raise ConfigError(f"{self.path} is a folder of seeded runs; pass one seed's run, e.g. "
                                  f"{self.path}/seed-<s>")
            raise ConfigError(f"{self.path} is not a run folder (no config.json); pass the --out folder of "
                              f"`imo train`")
        cfg = self.read_json(self.CONFIG)
        need = ("train", "head", "task", "modalities", "stores", "store_meta", "preprocess")
        missing = [k for k in need if not isinstance(cfg, dict) or k not in cfg]
        if missing:
            raise ConfigError(f"{self.file(self.CONFIG)} lacks {missing[0]!r}: it was not written by `imo train` "
                              f"(or was edited); delete the run folder or pass a new --out")
        return cfg

    def read_metrics(self) -> list[dict]:
        path = self.path / self.METRICS
        if not path.is_file():
            return []
        try:
            return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{path} is damaged (not JSON lines); delete the run folder or pass a new "
                              f"--out") from None

    # --- checkpoints -----------------------------------------------------------------------------------------
    def commit(self) -> Commit:
        """A new commit; ``apply()`` makes its files visible together."""
        return Commit(self)

    def read_checkpoint(self, which: str, with_state: bool = False, strict: bool = False
                        ) -> tuple[dict, dict[str, torch.Tensor], Any]:
        """(record, weights, optimizer/RNG state or None) of ``best`` or ``last``, each file checked against the
        digest its record holds. ``strict``: refuse a record without digests (an older run folder)."""
        fix = f"delete the run folder {self.path} or pass a new --out, and train again"
        for attempt in range(20):
            self.settle()
            try:
                return self._read_checkpoint(which, with_state, strict, fix)
            except ConfigError:
                if attempt == 19 or not self._trained_elsewhere():
                    raise
                time.sleep(0.1)          # a commit was applied while we read: read again
        raise AssertionError("unreachable")

    def _read_checkpoint(self, which, with_state, strict, fix):
        rec_name, w_name = self.record_name(which), self.weights_name(which)
        if not self.has(which):
            raise ConfigError(f"checkpoint {self.path / w_name} is missing; the run did not finish an epoch "
                              f"(re-run `imo train` with the same options)")
        record = self.read_json(rec_name)
        files = record.get("files") if isinstance(record, dict) else None
        if files is None and strict:
            raise ConfigError(f"{self.path / rec_name} was written by an older imo (no file digests); it cannot be "
                              f"resumed safely: pass a new --out")
        names = [w_name] + ([self.STATE] if with_state else [])
        for name in names + ([self.METRICS] if files and self.METRICS in files else []):
            path = self.path / name
            if not path.is_file():
                raise ConfigError(f"{path} is missing but {rec_name} names it; {fix}")
            if files is not None:
                if files.get(name) != _digest(path.read_bytes()):
                    raise ConfigError(f"{path} does not match {rec_name} (truncated, edited or replaced after it "
                                      f"was written); {fix}")
        weights_file = self.path / w_name
        try:
            weights = load_safetensors_bytes(weights_file.read_bytes())
        except (SafetensorError, ValueError, OSError) as e:
            raise ConfigError(f"checkpoint {weights_file} is truncated or not a safetensors file ({e}); "
                              f"{fix}") from None
        state = load_checkpoint(self.path / self.STATE, "run state", fix=fix) if with_state else None
        return record, weights, state


def check_run_stores(run: RunDir, config: dict, stores: dict[str, Any]) -> None:
    """Refuse a store that is not the one ``run`` was trained on: its identity (encoder, layers, manifest) or
    its content fingerprint differs from what config.json recorded. ``stores``: modality -> EmbeddingStore."""
    for m, st in stores.items():
        path = config["stores"].get(m, st.path)
        old_meta = config["store_meta"].get(m, {})
        now_meta = dataclasses.asdict(st.meta)
        diffs = [(k, old_meta.get(k), now_meta.get(k)) for k in STORE_IDENTITY if old_meta.get(k) != now_meta.get(k)]
        recorded = (config.get("store_content") or {}).get(m)
        if not diffs and recorded is not None and recorded != st.content_fingerprint():
            diffs = [("content fingerprint", recorded, st.content_fingerprint())]
        if diffs:
            key, old, new = diffs[0]
            raise StoreError(f"store {path} changed since run {run.path} was trained on it ({key} {old!r} -> "
                             f"{new!r}); re-extracted? pass a new --out, or restore the store")


@torch.no_grad()
def forward_items(model: torch.nn.Module, items: list[dict[str, np.ndarray]], batch_size: int = 64) -> np.ndarray:
    """Logits ``(N, C)`` for preprocessed items, in input order (batched by length; padding is masked). A modality
    an item lacks reaches the head as absent (``collate``, ``Head.complete_batch``)."""
    model.eval()
    if not items:
        return np.zeros((0, model.n_outputs), np.float32)
    lengths = np.array([sum(len(a) for a in it.values()) for it in items])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(items), model.n_outputs), np.float32)
    for lo in range(0, len(items), batch_size):
        idx = order[lo:lo + batch_size]
        out[idx] = model(model.complete_batch(collate([items[i] for i in idx]))).float().numpy()
    return out


@dataclass
class Run:
    """A trained run loaded for inference (model in eval mode on CPU)."""

    path: Path
    config: dict
    modalities: list[str]
    task: str
    labels: list[str] | None
    store_meta: dict[str, StoreMeta]
    stores: dict[str, str]
    preprocess: dict[str, Preprocess]
    model: torch.nn.Module
    batch_size: int = 64

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def task_obj(self) -> Task:
        return build_task(self.task, [], [], labels=self.labels)

    @property
    def modality_dropout(self) -> float:
        """The ``--modality-dropout`` the run was trained with (0: it never saw a modality missing)."""
        return float(self.config["train"].get("modality_dropout") or 0.0)

    def prepare(self, item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stored arrays ``{m: [T, L, D]}`` -> head inputs, exactly as in training (MediaError for features
        that are not finite after the float16 cast). A run trained with modality dropout takes items that lack
        some (not all) of its modalities."""
        missing = [m for m in self.modalities if m not in item]
        if missing and (not self.modality_dropout or len(missing) == len(self.modalities)):
            raise ConfigError(f"run {self.path} needs {', '.join(self.modalities)}; the input lacks "
                              f"{', '.join(missing)}" + ("" if self.modality_dropout else
                                                         " (a run trained with --modality-dropout can do without "
                                                         "some)"))
        out = {}
        for m in self.modalities:
            if m in missing:
                continue
            a = np.asarray(item[m])
            meta = self.store_meta[m]
            if a.ndim != 3 or a.shape[1:] != (meta.n_layers, meta.dim) or len(a) < 1:
                raise ConfigError(f"{m} features of shape {a.shape} do not fit run {self.path}, trained on "
                                  f"[T, {meta.n_layers}, {meta.dim}] from {self.stores[m]}")
            x = self.preprocess[m].apply(a)
            if not np.isfinite(x).all():
                raise MediaError(f"the {m} features hold non-finite values (NaN, or beyond float16's range "
                                 f"±65504) for {int((~np.isfinite(x)).any(axis=(1, 2)).sum())} of {len(x)} frames; "
                                 f"the input is out of range for the encoder")
            out[m] = x
        return out

    def outputs(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> probabilities ``[N, C]`` (sigmoid per emotion for binary) or values ``[N]``."""
        if not np.isfinite(logits).all():
            raise MediaError(f"run {self.path} gives non-finite outputs for this input; its features are out of "
                             f"range for the run's head")
        return self.task_obj.outputs(torch.from_numpy(logits)).numpy()

    def predict(self, items: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Per-utterance arrays exactly as stored (``[T, L, D]`` per modality, float16 or float32) ->
        class probabilities ``[N, C]`` (sigmoid per emotion for the binary task) or values ``[N]`` (regression)."""
        return self.outputs(forward_items(self.model, [self.prepare(it) for it in items], self.batch_size))


def load_run(path: str | Path, checkpoint: str = "best") -> Run:
    """Load ``runs/NAME`` (``checkpoint``: best or last) for evaluation or prediction; the weights are checked
    against the digest in their record."""
    from heads import rebuild_head

    rd = RunDir(path)
    if checkpoint not in _CHECKPOINTS:
        raise ConfigError(f"--checkpoint {checkpoint!r}: use best or last")
    if rd.path.is_file():
        raise ConfigError(f"{rd.path} is a file, not a run folder; pass the --out folder of `imo train`")
    cfg = rd.read_config()
    try:
        model = rebuild_head(cfg["head"])
        store_meta = {m: StoreMeta(**d) for m, d in cfg["store_meta"].items()}
        preprocess = {m: Preprocess(**d) for m, d in cfg["preprocess"].items()}
        task, labels, batch_size = cfg["task"]["name"], cfg["task"]["labels"], int(cfg["train"]["batch_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{rd.file(RunDir.CONFIG)} is damaged ({type(e).__name__}: {e}); delete the run folder "
                          f"or pass a new --out") from None
    _, weights, _ = rd.read_checkpoint(checkpoint)
    load_weights_into(model, weights, rd.path / rd.weights_name(checkpoint))
    model.eval()
    return Run(path=rd.path, config=cfg, modalities=list(cfg["modalities"]), task=task, labels=labels,
               store_meta=store_meta, stores=dict(cfg["stores"]), preprocess=preprocess, model=model,
               batch_size=batch_size)
