"""Training tasks: targets from manifest labels, the loss, outputs and metrics.

- ``classification``: one class per utterance, cross-entropy (optional class weights).
- ``binary``: one yes/no decision per emotion (the original IEMOCAP setting), sigmoid + BCE.
- ``regression``: a number per utterance (CMU-MOSI/MOSEI sentiment in [-3, 3]), L1 loss.

Every task refuses, with the utterance named: an utterance without a label, a label of the wrong kind
(a number for a class task, a name for regression), a non-finite number.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ManifestError
from ..manifest import Utterance
from .metrics import binary_metrics, classification_metrics, regression_metrics

TASKS = ("classification", "binary", "regression")
CLASS_WEIGHTS = ("none", "balanced")
LOSS = "loss"   # the validation loss: a selection metric of every task (lower is better)


def require_labels(utts: list[Utterance], what: str) -> None:
    """Refuse utterances without a label (``label`` is None or absent), with their count and an example."""
    unlabeled = [u for u in utts if getattr(u, "label", None) is None]
    if unlabeled:
        raise ManifestError(f"{len(unlabeled)} utterance(s) {what} have no label (e.g. {unlabeled[0].id!r}); label "
                            f"them, or leave them out (drop their split); `imo predict --manifest` labels "
                            f"unlabeled data")


class Task:
    """Base: ``targets`` from utterances, ``loss`` on logits, ``outputs`` (probabilities/values), ``metrics``."""

    name: ClassVar[str]
    best_metric: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]] = frozenset({LOSS})
    labels: list[str] | None = None

    @classmethod
    def metric_names(cls, labels: list[str] | None = None) -> list[str]:
        """The scalar metrics this task reports (``labels``: per-emotion names of the binary task)."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, class_weights: str, best_metric: str | None) -> None:
        """Refuse a --class-weights or --best-metric this task does not have (per-emotion binary metrics are
        checked against the labels later, in ``check_metric``)."""
        if class_weights not in CLASS_WEIGHTS:
            raise ConfigError(f"--class-weights {class_weights!r}: use {' or '.join(CLASS_WEIGHTS)}")
        if best_metric is not None:
            cls.check_metric(best_metric, None)

    @classmethod
    def check_metric(cls, metric: str, labels: list[str] | None) -> None:
        """Refuse a --best-metric that is neither one of the task's metrics nor ``loss``."""
        names = cls.metric_names(labels) + [LOSS]
        if metric not in names:
            raise ConfigError(f"--best-metric {metric!r} is not a {cls.name} metric; use one of {', '.join(names)}")

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    def targets(self, utts: list[Utterance]) -> np.ndarray:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def outputs(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def metrics(self, y: np.ndarray, out: np.ndarray) -> dict:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "labels": self.labels}


class LabelTask(Task):
    """Tasks over class names (classification, binary): the label set, its index and the class counts."""

    def __init__(self, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
                 labels: list[str] | None = None):
        self.check_options(class_weights, None)
        self.labels = labels or self._infer_labels(train, others)
        self.index = {c: i for i, c in enumerate(self.labels)}
        self.class_weights = class_weights
        counts = np.bincount([self.index[u.label] for u in train], minlength=len(self.labels)).astype(np.float32)
        self.weight = self.weights_from(counts, len(train)) if class_weights == "balanced" and train else None

    def weights_from(self, counts: np.ndarray, n: int) -> torch.Tensor:
        raise NotImplementedError

    def _infer_labels(self, train: list[Utterance], others: list[Utterance]) -> list[str]:
        require_labels(train + others, "of train/valid/test")
        for u in train + others:
            if not isinstance(u.label, str):
                raise ManifestError(f"utterance {u.id!r} has label {u.label!r}; --task {self.name} needs class "
                                    f"names (use --task regression for numbers)")
        names = sorted({u.label for u in train})
        if not names:
            raise ConfigError("no training utterances: the manifest has no split=train lines (or --folds leaves none)")
        unseen = Counter(u.label for u in others if u.label not in names)
        if unseen:
            label, n = unseen.most_common(1)[0]
            example = next(u.id for u in others if u.label == label)
            raise ManifestError(f"label {label!r} appears in {n} utterance(s) outside train (e.g. {example!r}) but "
                                f"never in train; move some to split=train, relabel or drop them (train labels: "
                                f"{', '.join(names)})")
        return names

    @property
    def n_outputs(self) -> int:
        return len(self.labels)

    def class_index(self, utts: list[Utterance]) -> np.ndarray:
        """Each utterance's class index ``[N]``; refuses unlabeled utterances and labels the model lacks."""
        require_labels(utts, "to score")
        for u in utts:
            if u.label not in self.index:
                raise ManifestError(f"utterance {u.id!r} has label {u.label!r}, which the model was not trained on "
                                    f"(labels: {', '.join(self.labels)}); relabel it or leave it out of the manifest")
        return np.array([self.index[u.label] for u in utts], dtype=np.int64)


class Classification(LabelTask):
    name = "classification"
    best_metric = "ua"

    @classmethod
    def metric_names(cls, labels=None):
        return ["wa", "ua", "f1_macro", "f1_weighted"]

    def weights_from(self, counts, n):
        """Inverse class frequency, normalised so a balanced set gets 1 for every class."""
        return torch.from_numpy(counts.sum() / (len(counts) * np.maximum(counts, 1)))

    def targets(self, utts):
        return self.class_index(utts)                     # (N,) int64

    def loss(self, logits, y):
        return F.cross_entropy(logits, y, weight=self.weight)

    def outputs(self, logits):
        return torch.softmax(logits, -1)  # (B, C)

    def metrics(self, y, out):
        return classification_metrics(y, out.argmax(-1), len(self.labels))


class Binary(LabelTask):
    """One yes/no decision per emotion, scored as the original work's criterion
    (``emotion_prediction_cri.py``, ``--binary-target-iemocap``) scores it.

    The original's head gives two logits per emotion ``(z_no, z_yes)`` (``--num-classes 8``) under a softmax and
    NLL; imo gives one, ``z = z_yes - z_no``, under a sigmoid and BCE: the same loss (``-log softmax`` of a pair
    is ``-log sigmoid`` of the difference) and the same decision (argmax of the pair is ``z > 0``, i.e.
    probability >= 0.5). Metrics as the original's: per-emotion accuracy ``acc_<e>`` and weighted F1 ``f1_<e>``,
    and their means; ``acc_mean`` is the original's aggregate "accuracy" (correct decisions / (4 x utterances))
    and can select the best checkpoint (``--best-metric acc_mean``).
    """

    name = "binary"
    best_metric = "f1_mean"

    @classmethod
    def metric_names(cls, labels=None):
        per = [f"{k}_{c}" for c in labels for k in ("acc", "f1")] if labels else []
        return ["acc_mean", "f1_mean"] + per

    @classmethod
    def check_metric(cls, metric, labels):
        if labels is None and metric.startswith(("acc_", "f1_")):
            return                                        # a per-emotion metric, checked once labels are known
        super().check_metric(metric, labels)

    def weights_from(self, counts, n):
        """Positive weight per emotion: negatives / positives in train."""
        return torch.from_numpy((n - counts) / np.maximum(counts, 1))

    def targets(self, utts):
        idx = self.class_index(utts)
        y = np.zeros((len(utts), len(self.labels)), np.float32)   # (N, E) one-hot
        y[np.arange(len(utts)), idx] = 1.0
        return y

    def loss(self, logits, y):
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.weight)

    def outputs(self, logits):
        return torch.sigmoid(logits)  # (B, E)

    def metrics(self, y, out):
        return binary_metrics(y.astype(int), (out >= 0.5).astype(int), self.labels)


class Regression(Task):
    name = "regression"
    best_metric = "mae"
    lower_is_better = frozenset({"mae", LOSS})

    @classmethod
    def metric_names(cls, labels=None):
        return ["mae", "corr", "acc7", "acc2_with_zero", "f1_with_zero", "acc2_non_zero", "f1_non_zero"]

    @classmethod
    def check_options(cls, class_weights, best_metric):
        super().check_options(class_weights, best_metric)
        if class_weights != "none":
            raise ConfigError(f"--class-weights {class_weights!r}: --task regression has no classes; use none "
                              f"(or --task classification/binary)")

    def __init__(self, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
                 labels: list[str] | None = None):
        self.check_options(class_weights, None)
        self.labels = None
        self.values(train + others, "of train/valid/test")

    def values(self, utts: list[Utterance], what: str = "to score") -> np.ndarray:
        """Each utterance's label as a finite float ``[N]``; refuses names, non-finite numbers and no label."""
        require_labels(utts, what)
        out = np.zeros(len(utts), np.float32)
        for i, u in enumerate(utts):
            try:
                v = float(u.label)
            except (TypeError, ValueError):
                raise ManifestError(f"utterance {u.id!r} has label {u.label!r}; --task regression needs numbers "
                                    f"(use --task classification for class names)") from None
            if isinstance(u.label, bool) or not math.isfinite(v) or abs(v) > float(np.finfo(np.float32).max):
                raise ManifestError(f"utterance {u.id!r} has label {u.label!r}; --task regression needs a finite "
                                    f"number (float32 range)")
            out[i] = v
        return out

    @property
    def n_outputs(self) -> int:
        return 1

    def targets(self, utts):
        return self.values(utts)                           # (N,) float32

    def loss(self, logits, y):
        return F.l1_loss(logits[:, 0], y)

    def outputs(self, logits):
        return logits[:, 0]  # (B,)

    def metrics(self, y, out):
        return regression_metrics(y, out)


TASK_CLASSES: dict[str, type[Task]] = {"classification": Classification, "binary": Binary, "regression": Regression}


def task_class(name: str) -> type[Task]:
    """The task class for ``--task name``; ConfigError listing the tasks otherwise."""
    cls = TASK_CLASSES.get(name)
    if cls is None:
        raise ConfigError(f"--task {name!r}: use one of {', '.join(TASKS)}")
    return cls


def build_task(name: str, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
               labels: list[str] | None = None) -> Task:
    """A task by name; ``labels`` (from a saved run) skips inferring the label set."""
    return task_class(name)(train, others, class_weights, labels)
