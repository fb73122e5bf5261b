"""PNG plots of a run: learning curves and the confusion matrix (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_curves(history: list[dict], metric: str, path: Path) -> Path:
    """Train/valid loss and the valid ``metric`` per epoch."""
    ep = [h["epoch"] for h in history]

    def col(key: str) -> list[float]:
        return [np.nan if h.get(key) is None else h[key] for h in history]

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(ep, col("train_loss"), "o-", label="train")
    a.plot(ep, col("valid_loss"), "o-", label="valid")
    a.set_xlabel("epoch")
    a.set_ylabel("loss")
    a.legend()
    b.plot(ep, col(f"valid_{metric}"), "o-", color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel(f"valid {metric}")
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path


def plot_confusion(confusion: list[list[int]], names: list[str], path: Path, title: str = "") -> Path:
    """Confusion matrix (rows: truth, columns: prediction) with counts and row-normalised shading."""
    cm = np.asarray(confusion, dtype=float)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = 1.5 + 0.6 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
    return path
