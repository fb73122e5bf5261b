"""Run folders: checkpoints (safetensors + JSON), the metrics log, and loading a trained run for inference.

```
runs/NAME/
  config.json            resolved config: head, task, labels, preprocessing, stores and their StoreMeta
  metrics.jsonl          one line per epoch
  best.safetensors/.json weights and summary of the best epoch
  last.safetensors/.json weights and counters of the last finished epoch
  last.state.pt          optimizer + RNG state (tensors only; loaded with weights_only=True)
  curves.png, confusion_matrix.png
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import ConfigError
from ..store import StoreMeta
from .data import Preprocess, collate
from .tasks import Task, build_task


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename), so a killed run never leaves half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer, np.floating)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def save_weights(model: torch.nn.Module, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"checkpoint {path} is missing; the run did not finish an epoch (re-run `imo train`)")
    model.load_state_dict(load_file(str(path)))


@torch.no_grad()
def forward_items(model: torch.nn.Module, items: list[dict[str, np.ndarray]], batch_size: int = 64) -> np.ndarray:
    """Logits ``(N, C)`` for preprocessed items, in input order (batched by length; padding is masked)."""
    model.eval()
    if not items:
        return np.zeros((0, model.n_outputs), np.float32)
    lengths = np.array([sum(len(a) for a in it.values()) for it in items])
    order = np.argsort(lengths, kind="stable")
    out = np.zeros((len(items), model.n_outputs), np.float32)
    for lo in range(0, len(items), batch_size):
        idx = order[lo:lo + batch_size]
        out[idx] = model(collate([items[i] for i in idx])).float().numpy()
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
    def task_obj(self) -> Task:
        return build_task(self.task, [], [], labels=self.labels)

    def prepare(self, item: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Stored arrays ``{m: [T, L, D]}`` -> head inputs, exactly as in training."""
        missing = [m for m in self.modalities if m not in item]
        if missing:
            raise ConfigError(f"run {self.path} needs {', '.join(self.modalities)}; the input lacks {', '.join(missing)}")
        out = {}
        for m in self.modalities:
            a = np.asarray(item[m])
            meta = self.store_meta[m]
            if a.ndim != 3 or a.shape[1:] != (meta.n_layers, meta.dim) or len(a) < 1:
                raise ConfigError(f"{m} features of shape {a.shape} do not fit run {self.path}, trained on "
                                  f"[T, {meta.n_layers}, {meta.dim}] from {self.stores[m]}")
            out[m] = self.preprocess[m].apply(a)
        return out

    def outputs(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> probabilities ``[N, C]`` (sigmoid per emotion for binary) or values ``[N]``."""
        return self.task_obj.outputs(torch.from_numpy(logits)).numpy()

    def predict(self, items: list[dict[str, np.ndarray]]) -> np.ndarray:
        """Per-utterance arrays exactly as stored (``[T, L, D]`` per modality, float16 or float32) ->
        class probabilities ``[N, C]`` (sigmoid per emotion for the binary task) or values ``[N]`` (regression)."""
        return self.outputs(forward_items(self.model, [self.prepare(it) for it in items], self.batch_size))


def load_run(path: str | Path, checkpoint: str = "best") -> Run:
    """Load ``runs/NAME`` (``checkpoint``: best or last) for evaluation or prediction."""
    from heads import InputSpec, build_head

    path = Path(path)
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        if (path / "cv.json").is_file():
            raise ConfigError(f"{path} is a cross-validation folder; pass one fold's run, e.g. {path}/fold-<name>")
        raise ConfigError(f"{path} is not a run folder (no config.json); pass the --out folder of `imo train`")
    if checkpoint not in ("best", "last"):
        raise ConfigError(f"--checkpoint {checkpoint!r}: use best or last")
    cfg = json.loads(cfg_file.read_text())
    h = cfg["head"]
    model = build_head(h["name"], {m: InputSpec(**s) for m, s in h["inputs"].items()}, h["n_outputs"],
                       {k: v for k, v in h["config"].items() if k != "type"})
    load_weights(model, path / f"{checkpoint}.safetensors")
    model.eval()
    return Run(path=path, config=cfg, modalities=list(cfg["modalities"]), task=cfg["task"]["name"],
               labels=cfg["task"]["labels"],
               store_meta={m: StoreMeta(**d) for m, d in cfg["store_meta"].items()},
               stores=dict(cfg["stores"]),
               preprocess={m: Preprocess(**d) for m, d in cfg["preprocess"].items()},
               model=model, batch_size=int(cfg["train"]["batch_size"]))
