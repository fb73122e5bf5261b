"""Evaluation metrics, computed with scikit-learn (and scipy for Pearson r)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             mean_absolute_error)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Weighted accuracy (WA, plain accuracy), unweighted accuracy (UA, mean per-class recall over the
    classes present), macro and weighted F1, and the confusion matrix (rows: truth, columns: prediction)."""
    labels = list(range(n_classes))
    return {
        "wa": float(accuracy_score(y_true, y_pred)),
        "ua": float(balanced_accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1_weighted": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def per_class_table(confusion: list[list[int]], names: list[str]) -> list[dict]:
    """Support, precision, recall and F1 of each class, from a confusion matrix."""
    cm = np.asarray(confusion, dtype=np.float64)
    rows = []
    for i, name in enumerate(names):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        p = tp / predicted if predicted else 0.0
        r = tp / support if support else 0.0
        rows.append({"class": name, "support": int(support), "precision": p, "recall": r,
                     "f1": 2 * p * r / (p + r) if p + r else 0.0})
    return rows


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> dict:
    """One yes/no decision per emotion (``[N, E]`` 0/1 arrays): accuracy and F1 per emotion and their means."""
    out: dict = {}
    accs, f1s = [], []
    for e, name in enumerate(names):
        acc = float(accuracy_score(y_true[:, e], y_pred[:, e]))
        f1 = float(f1_score(y_true[:, e], y_pred[:, e], average="weighted", zero_division=0))
        out[f"acc_{name}"], out[f"f1_{name}"] = acc, f1
        accs.append(acc)
        f1s.append(f1)
    out["acc_mean"], out["f1_mean"] = float(np.mean(accs)), float(np.mean(f1s))
    return out


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """CMU-MOSI/MOSEI sentiment metrics: MAE, Pearson r, Acc-7 (rounded, clipped to [-3, 3]), Acc-2 and
    weighted F1 with zeros (negative vs. non-negative) and without zeros (negative vs. positive, neutral truths left out)."""
    y_true = np.asarray(y_true, np.float64)
    y_pred = np.asarray(y_pred, np.float64)
    corr = float(pearsonr(y_true, y_pred)[0]) if len(y_true) > 1 and y_true.std() > 0 and y_pred.std() > 0 else 0.0
    nz = y_true != 0
    out = {
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "corr": corr,
        "acc7": float(accuracy_score(np.round(np.clip(y_true, -3, 3)), np.round(np.clip(y_pred, -3, 3)))),
        "acc2_with_zero": float(accuracy_score(y_true >= 0, y_pred >= 0)),
        "f1_with_zero": float(f1_score(y_true >= 0, y_pred >= 0, average="weighted", zero_division=0)),
    }
    if nz.any():
        out["acc2_non_zero"] = float(accuracy_score(y_true[nz] > 0, y_pred[nz] > 0))
        out["f1_non_zero"] = float(f1_score(y_true[nz] > 0, y_pred[nz] > 0, average="weighted", zero_division=0))
    return out
