"""Metrics equal hand-computed values (and scikit-learn's) on fixed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_fscore_support

from imo_pipeline.training.metrics import binary_metrics, classification_metrics, per_class_table, regression_metrics

Y = np.array([0, 0, 0, 1, 1, 2])
P = np.array([0, 0, 1, 1, 2, 2])


def test_classification_by_hand():
    m = classification_metrics(Y, P, 3)
    assert m["wa"] == pytest.approx(4 / 6)
    assert m["ua"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)          # mean per-class recall
    f1 = [0.8, 0.5, 2 / 3]                                             # per class: p=1,r=2/3; p=r=1/2; p=1/2,r=1
    assert m["f1_macro"] == pytest.approx(np.mean(f1))
    assert m["f1_weighted"] == pytest.approx((3 * f1[0] + 2 * f1[1] + 1 * f1[2]) / 6)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_classification_counts_absent_classes_in_confusion():
    m = classification_metrics(np.array([0, 1]), np.array([0, 1]), 4)
    assert np.array(m["confusion"]).shape == (4, 4)
    assert m["wa"] == 1.0 and m["ua"] == 1.0


def test_per_class_table_equals_sklearn():
    rows = per_class_table(classification_metrics(Y, P, 3)["confusion"], ["a", "b", "c"])
    p, r, f, s = precision_recall_fscore_support(Y, P, labels=[0, 1, 2], zero_division=0)
    assert [x["precision"] for x in rows] == pytest.approx(p)
    assert [x["recall"] for x in rows] == pytest.approx(r)
    assert [x["f1"] for x in rows] == pytest.approx(f)
    assert [x["support"] for x in rows] == list(s)


def test_binary_per_emotion_by_hand():
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    p = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    m = binary_metrics(y, p, ["hap", "sad"])
    assert m["acc_hap"] == pytest.approx(2 / 4)
    assert m["acc_sad"] == pytest.approx(3 / 4)
    # hap: positive class p=1/2 r=1/2 f1=1/2; negative p=1/2 r=1/2 -> weighted 0.5
    assert m["f1_hap"] == pytest.approx(0.5)
    # sad: negatives (3): p=2/2 r=2/3 f1=0.8; positives (1): p=1/2 r=1 f1=2/3 -> (3*0.8 + 2/3)/4
    assert m["f1_sad"] == pytest.approx((3 * 0.8 + 2 / 3) / 4)
    assert m["acc_mean"] == pytest.approx(0.625)


def test_regression_by_hand():
    y = np.array([-2.4, -0.5, 0.0, 0.4, 1.6, 3.2])
    p = np.array([-2.0, 0.3, -0.2, 0.5, 1.2, 2.6])
    m = regression_metrics(y, p)
    assert m["mae"] == pytest.approx(np.mean([0.4, 0.8, 0.2, 0.1, 0.4, 0.6]))
    assert m["corr"] == pytest.approx(np.corrcoef(y, p)[0, 1])
    assert m["acc7"] == pytest.approx(5 / 6)            # rounded, clipped: only 1.6 (2) vs 1.2 (1) differs
    assert m["acc2_with_zero"] == pytest.approx(4 / 6)  # y >= 0 vs p >= 0
    assert m["acc2_non_zero"] == pytest.approx(4 / 5)   # the 0.0 truth left out; y > 0 vs p > 0
    # non-zero: negatives p=1 r=1/2 f1=2/3 (2 of them); positives p=3/4 r=1 f1=6/7 (3 of them)
    assert m["f1_non_zero"] == pytest.approx((2 * 2 / 3 + 3 * 6 / 7) / 5)
