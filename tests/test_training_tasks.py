"""Contract of every training task (classification, binary, regression): shapes of targets, loss, outputs and
metrics, finite metrics, a describe/rebuild round trip, and the refusals of labels and options it cannot take."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from imo_pipeline.errors import ConfigError, ManifestError
from imo_pipeline.manifest import Utterance
from imo_pipeline.training.tasks import TASK_CLASSES, TASKS, build_task, task_class

CLASSES = ["ang", "hap", "neu", "sad"]


def labels_for(task: str, n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    if task == "regression":
        return [float(x) for x in rng.uniform(-3, 3, n).round(2)]
    return [CLASSES[i % len(CLASSES)] for i in range(n)]


def utts(task: str, n: int, prefix: str, seed: int = 0) -> list[Utterance]:
    return [Utterance(f"{prefix}{i}", lab) for i, lab in enumerate(labels_for(task, n, seed))]


WRONG = {  # a label of the other kind, for each task
    "classification": 1.5,
    "binary": 2,
    "regression": "hap",
}
SHAPES = {"classification": ((), np.int64), "binary": ((4,), np.float32), "regression": ((), np.float32)}


def test_every_task_is_covered():
    assert set(TASK_CLASSES) == set(TASKS) == set(SHAPES) == set(WRONG)


@pytest.mark.parametrize("name", TASKS)
def test_targets_loss_outputs_and_metrics_have_the_documented_shapes(name):
    train, others = utts(name, 24, "tr", 0), utts(name, 12, "va", 1)
    task = build_task(name, train, others)
    y = task.targets(others)
    shape, dtype = SHAPES[name]
    assert y.shape == (len(others), *shape) and y.dtype == dtype
    logits = torch.randn(len(others), task.n_outputs, generator=torch.Generator().manual_seed(0))  # (N, C)
    loss = task.loss(logits, torch.from_numpy(y))
    assert loss.ndim == 0 and math.isfinite(float(loss))
    out = task.outputs(logits).numpy()
    assert out.shape == ((len(others),) if name == "regression" else (len(others), task.n_outputs))
    metrics = task.metrics(y, out)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    assert set(task.metric_names(task.labels)) <= set(scalars), (sorted(scalars), task.metric_names(task.labels))
    assert task.best_metric in scalars
    assert all(math.isfinite(v) for v in scalars.values()), scalars
    # a run rebuilds its task from describe(): same targets, same outputs
    again = build_task(name, [], [], labels=task.describe()["labels"])
    np.testing.assert_array_equal(again.targets(others), y)
    np.testing.assert_array_equal(again.outputs(logits).numpy(), out)


@pytest.mark.parametrize("name", TASKS)
def test_a_label_of_the_wrong_kind_is_refused_naming_the_utterance(name):
    train = utts(name, 8, "tr")
    bad = Utterance("odd_one", WRONG[name])
    with pytest.raises(ManifestError, match=rf"utterance 'odd_one' has label {WRONG[name]!r}"):
        build_task(name, train + [bad], [])


@pytest.mark.parametrize("name", TASKS)
def test_unlabeled_utterances_are_refused_with_count_and_example(name):
    train = utts(name, 8, "tr")
    unlabeled = [Utterance(f"nolabel{i}", None) for i in range(3)]
    with pytest.raises(ManifestError, match=r"3 utterance\(s\) of train/valid/test have no label \(e.g. 'nolabel0'\)"):
        build_task(name, train, unlabeled)
    task = build_task(name, train, [])
    with pytest.raises(ManifestError, match=r"1 utterance\(s\) to score have no label \(e.g. 'nolabel2'\)"):
        task.targets(train[:2] + unlabeled[2:])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "-Infinity", 1e39])
def test_regression_refuses_non_finite_labels(value):
    with pytest.raises(ManifestError, match="needs a finite number"):
        build_task("regression", utts("regression", 4, "tr") + [Utterance("x", value)], [])


@pytest.mark.parametrize("name", TASKS)
def test_unknown_class_weights_and_best_metric_are_refused_by_every_task(name):
    with pytest.raises(ConfigError, match=r"--class-weights 'inverse': use none or balanced"):
        build_task(name, utts(name, 8, "tr"), [], "inverse")
    with pytest.raises(ConfigError, match=rf"--best-metric 'nope' is not a {name} metric; use one of"):
        task_class(name).check_options("none", "nope")
    task_class(name).check_options("none", task_class(name).best_metric)


def test_balanced_weights_are_for_class_tasks_only():
    with pytest.raises(ConfigError, match="--task regression has no classes"):
        build_task("regression", utts("regression", 8, "tr"), [], "balanced")
    train = utts("classification", 8, "tr")
    assert build_task("classification", train, [], "balanced").weight is not None
    assert build_task("binary", train, [], "balanced").weight is not None


def test_binary_per_emotion_metrics_are_checked_against_the_labels():
    task_class("binary").check_options("none", "f1_hap")            # plausible before labels are known
    task = build_task("binary", utts("binary", 8, "tr"), [])
    task.check_metric("f1_hap", task.labels)
    with pytest.raises(ConfigError, match="'f1_joy' is not a binary metric; use one of acc_mean, f1_mean, acc_ang"):
        task.check_metric("f1_joy", task.labels)


def test_a_label_outside_the_trained_set_is_refused():
    task = build_task("classification", utts("classification", 8, "tr"), [])
    with pytest.raises(ManifestError, match=r"label 'fru', which the model was not trained on"):
        task.targets([Utterance("u", "fru")])


def test_binary_task_scores_as_the_original_criterion():
    """emotion_prediction_cri.py (--binary-target-iemocap): two logits per emotion under a softmax and NLL, argmax
    per emotion, accuracy = correct decisions / (4 x utterances), per-emotion accuracy and weighted F1. imo's one
    logit per emotion (the pair's difference) gives the same loss, decisions and metrics."""
    import torch.nn.functional as F
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    names = ["neu", "sad", "ang", "hap"]
    utts = [Utterance(f"u{i}", names[i % 4]) for i in range(40)]
    task = build_task("binary", utts, [])
    y = task.targets(utts)                                           # (N, 4) one-hot over task.labels
    pairs = torch.from_numpy(rng.normal(size=(40, 4, 2)).astype(np.float32))   # the original's (no, yes) logits
    z = pairs[..., 1] - pairs[..., 0]                                # imo's logit per emotion
    target = torch.from_numpy(y).long()
    original_loss = F.nll_loss(F.log_softmax(pairs.view(-1, 2), dim=-1), target.view(-1))   # mean over 4N decisions
    assert float(task.loss(z, torch.from_numpy(y))) == pytest.approx(float(original_loss), rel=1e-5)
    preds = pairs.argmax(-1).numpy()                                 # the original's decision per emotion
    m = task.metrics(y, task.outputs(z).numpy())
    assert m["acc_mean"] == pytest.approx((preds == y).sum() / (4 * 40))   # its aggregate "accuracy"
    for e, name in enumerate(task.labels):
        assert m[f"acc_{name}"] == pytest.approx(accuracy_score(y[:, e], preds[:, e]))
        assert m[f"f1_{name}"] == pytest.approx(f1_score(y[:, e], preds[:, e], average="weighted"))
    task.check_metric("acc_mean", task.labels)                       # selectable with --best-metric acc_mean
    task.check_metric("loss", task.labels)
