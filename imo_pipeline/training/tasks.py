"""Training tasks: targets from manifest labels, the loss, outputs and metrics.

- ``classification``: one class per utterance, cross-entropy (optional class weights).
- ``binary``: one yes/no decision per emotion (the original IEMOCAP setting), sigmoid + BCE.
- ``regression``: a number per utterance (CMU-MOSI/MOSEI sentiment in [-3, 3]), L1 loss.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, ManifestError
from ..manifest import Utterance
from .metrics import binary_metrics, classification_metrics, regression_metrics

TASKS = ("classification", "binary", "regression")


class Task:
    """Base: ``targets`` from utterances, ``loss`` on logits, ``outputs`` (probabilities/values), ``metrics``."""

    name: ClassVar[str]
    best_metric: ClassVar[str]
    labels: list[str] | None = None

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


def _class_labels(train: list[Utterance], others: list[Utterance]) -> list[str]:
    for u in train + others:
        if not isinstance(u.label, str):
            raise ManifestError(f"utterance {u.id!r} has label {u.label!r}; --task {'classification'} needs class "
                                f"names (use --task regression for numbers)")
    names = sorted({u.label for u in train})
    if not names:
        raise ConfigError("no training utterances: the manifest has no split=train lines (or --folds leaves none)")
    unseen = Counter(u.label for u in others if u.label not in names)
    if unseen:
        label, n = unseen.most_common(1)[0]
        example = next(u.id for u in others if u.label == label)
        raise ManifestError(f"label {label!r} appears in {n} utterance(s) outside train (e.g. {example!r}) but never in "
                            f"train; move some to split=train, relabel or drop them (train labels: {', '.join(names)})")
    return names


def _check_known(utts: list[Utterance], index: dict[str, int]) -> None:
    for u in utts:
        if u.label not in index:
            raise ManifestError(f"utterance {u.id!r} has label {u.label!r}, which the model was not trained on "
                                f"(labels: {', '.join(index)}); relabel it or leave it out of the manifest")


class Classification(Task):
    name = "classification"
    best_metric = "ua"

    def __init__(self, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
                 labels: list[str] | None = None):
        self.labels = labels or _class_labels(train, others)
        self.index = {c: i for i, c in enumerate(self.labels)}
        self.weights = None
        if class_weights == "balanced" and train:
            counts = np.bincount([self.index[u.label] for u in train], minlength=len(self.labels)).astype(np.float32)
            self.weights = torch.from_numpy(counts.sum() / (len(counts) * np.maximum(counts, 1)))
        elif class_weights not in ("none", "balanced"):
            raise ConfigError(f"--class-weights {class_weights!r}: use none or balanced")

    @property
    def n_outputs(self) -> int:
        return len(self.labels)

    def targets(self, utts):
        _check_known(utts, self.index)
        return np.array([self.index[u.label] for u in utts], dtype=np.int64)

    def loss(self, logits, y):
        return F.cross_entropy(logits, y, weight=self.weights)

    def outputs(self, logits):
        return torch.softmax(logits, -1)  # (B, C)

    def metrics(self, y, out):
        return classification_metrics(y, out.argmax(-1), len(self.labels))


class Binary(Task):
    name = "binary"
    best_metric = "f1_mean"

    def __init__(self, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
                 labels: list[str] | None = None):
        self.labels = labels or _class_labels(train, others)
        self.index = {c: i for i, c in enumerate(self.labels)}
        self.pos_weight = None
        if class_weights == "balanced" and train:
            pos = np.bincount([self.index[u.label] for u in train], minlength=len(self.labels)).astype(np.float32)
            self.pos_weight = torch.from_numpy((len(train) - pos) / np.maximum(pos, 1))

    @property
    def n_outputs(self) -> int:
        return len(self.labels)

    def targets(self, utts):
        _check_known(utts, self.index)
        y = np.zeros((len(utts), len(self.labels)), np.float32)
        for i, u in enumerate(utts):
            y[i, self.index[u.label]] = 1.0
        return y

    def loss(self, logits, y):
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=self.pos_weight)

    def outputs(self, logits):
        return torch.sigmoid(logits)  # (B, E)

    def metrics(self, y, out):
        return binary_metrics(y.astype(int), (out >= 0.5).astype(int), self.labels)


class Regression(Task):
    name = "regression"
    best_metric = "mae"

    def __init__(self, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
                 labels: list[str] | None = None):
        for u in train + others:
            if isinstance(u.label, str):
                try:
                    float(u.label)
                except ValueError:
                    raise ManifestError(f"utterance {u.id!r} has label {u.label!r}; --task regression needs numbers "
                                        f"(use --task classification for class names)") from None
        self.labels = None

    @property
    def n_outputs(self) -> int:
        return 1

    def targets(self, utts):
        return np.array([float(u.label) for u in utts], dtype=np.float32)

    def loss(self, logits, y):
        return F.l1_loss(logits[:, 0], y)

    def outputs(self, logits):
        return logits[:, 0]  # (B,)

    def metrics(self, y, out):
        return regression_metrics(y, out)


def build_task(name: str, train: list[Utterance], others: list[Utterance], class_weights: str = "none",
               labels: list[str] | None = None) -> Task:
    """A task by name; ``labels`` (from a saved run) skips inferring the label set."""
    cls = {"classification": Classification, "binary": Binary, "regression": Regression}.get(name)
    if cls is None:
        raise ConfigError(f"--task {name!r}: use one of {', '.join(TASKS)}")
    return cls(train, others, class_weights, labels)
