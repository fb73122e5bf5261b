"""Reading fairseq checkpoints without fairseq and without running pickled code.

A fairseq checkpoint is a ``torch.save`` of a dict: the weights under
``model``, and the configuration the model was built from, either as an
``argparse.Namespace`` under ``args`` (fairseq <= 0.10, e.g. wav2vec,
RoBERTa, wav2vec 2.0) or as a hydra config under ``cfg`` (newer ones: a
plain dict, or a pickled omegaconf ``DictConfig``), plus training state
(``optimizer_history``, ``extra_state``, ``last_optimizer_state``).

``read_fairseq_checkpoint`` loads it through the safe loader with exactly
these classes allowed: ``argparse.Namespace``, and, when omegaconf is
installed (``pip install 'imo-pipeline[fairseq]'``), omegaconf's container,
node and metadata classes with the few builtins and ``typing.Any`` their
pickles name. Anything else -- a fairseq meter, a numpy scalar, a dataclass
of fairseq's -- is refused, naming the class; the fix says how to make a
weights-only copy with a trusted fairseq install.

The result is a ``FairseqCheckpoint``: the model's state dict, its
architecture name and model/task options as plain dicts. Fine-tuned
wav2vec 2.0 / HuBERT checkpoints (``wav2vec_ctc``, ``hubert_ctc``) are
unwrapped to the pretrained model inside (``w2v_encoder.w2v_model.*``,
options from ``w2v_args``); their CTC head is left out.
"""

from __future__ import annotations

import argparse
import ast
import collections
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imo_pipeline.errors import ConfigError
from imo_pipeline.safe_load import load_checkpoint

FINETUNED = {"wav2vec_ctc": "w2v_encoder.w2v_model.", "wav2vec_seq2seq": "encoder.w2v_model.",
             "hubert_ctc": "w2v_encoder.w2v_model.", "hubert_seq2seq": "encoder.w2v_model."}
STRIP_FIX = ("if you trust the file, make a weights-only copy with fairseq's own loader: "
             "s = fairseq.checkpoint_utils.load_checkpoint_to_cpu(PATH); torch.save({'args': s.get('args'), "
             "'cfg': s.get('cfg'), 'model': s['model']}, 'weights_only.pt'), and pass that")


def omegaconf_classes() -> list[Any]:
    """The classes a pickled omegaconf config needs (empty when omegaconf is not installed)."""
    try:
        from omegaconf import DictConfig, ListConfig, base, nodes
    except ImportError:
        return []
    value_nodes = [getattr(nodes, n) for n in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode",
                                               "BytesNode", "PathNode") if hasattr(nodes, n)]
    return [DictConfig, ListConfig, base.Metadata, base.ContainerMetadata, *value_nodes,
            collections.defaultdict, typing.Any, dict, list, int, float, str, bool]


def allowed_classes() -> list[Any]:
    """Everything a fairseq checkpoint may unpickle here."""
    return [argparse.Namespace, *omegaconf_classes()]


def _plain(obj: Any) -> Any:
    """A Namespace / omegaconf / dict config as plain dicts and lists (interpolations resolved where possible)."""
    if obj is None:
        return {}
    if isinstance(obj, argparse.Namespace):
        return dict(vars(obj))
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        try:
            return OmegaConf.to_container(obj, resolve=True)
        except Exception:  # an interpolation pointing outside the stored config
            return OmegaConf.to_container(obj, resolve=False)
    if isinstance(obj, dict):
        return dict(obj)
    return obj


@dataclass
class FairseqCheckpoint:
    """What imo needs from a fairseq checkpoint, as plain data."""

    path: Path
    arch: str                                   # args.arch or cfg.model._name, e.g. wav2vec, roberta_large, hubert
    model_args: dict[str, Any]                  # the model's options
    task_args: dict[str, Any]                   # the task's options (normalize, sample_rate, ...)
    state: dict[str, torch.Tensor]              # the model's weights, keys as fairseq names them
    finetuned_from: str | None = None           # the fine-tuned wrapper's arch, when unwrapped
    left_out: list[str] = field(default_factory=list)   # weight groups of the file imo does not use

    def opt(self, name: str, default: Any = None) -> Any:
        """A model option, falling back to ``default`` when absent or None."""
        v = self.model_args.get(name)
        return default if v is None else v


def _configs(obj: dict, path: Path) -> tuple[str, dict, dict]:
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        d = _plain(args)
        return str(d.get("arch") or ""), d, d
    cfg = _plain(obj.get("cfg"))
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model = cfg["model"]
        return str(model.get("_name") or model.get("arch") or ""), model, cfg.get("task") or {}
    raise ConfigError(f"fairseq checkpoint {path} has neither 'args' (an argparse.Namespace) nor 'cfg' with a "
                      f"'model' section, so its architecture is unknown; is it a fairseq training checkpoint "
                      f"(model.pt / checkpoint_best.pt)?")


def read_fairseq_checkpoint(path: str | Path, what: str = "fairseq checkpoint") -> FairseqCheckpoint:
    """Weights and stored configuration of a fairseq checkpoint, loaded weights-only (see module doc)."""
    path = Path(path).expanduser()
    fix = STRIP_FIX
    if not omegaconf_classes():
        fix = ("checkpoints that pickle an omegaconf config need omegaconf: pip install 'imo-pipeline[fairseq]'; "
               + STRIP_FIX)
    obj = load_checkpoint(path, what, allow=allowed_classes(), fix=fix)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise ConfigError(f"{what} {path} holds no 'model' state dict (found "
                          f"{sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__}); pass a fairseq "
                          f"checkpoint such as wav2vec_large.pt or roberta.large/model.pt")
    state = obj["model"]
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ConfigError(f"{what} {path}: 'model' holds non-tensor entries {bad[:4]}; not a fairseq state dict")
    arch, model_args, task_args = _configs(obj, path)
    ck = FairseqCheckpoint(path, arch, model_args, task_args, dict(state))
    if arch in FINETUNED:
        inner = model_args.get("w2v_args")
        if inner is None:
            raise ConfigError(f"{what} {path} is a fine-tuned {arch} model without 'w2v_args' (the pretrained "
                              f"model's options); pass the pretrained checkpoint instead")
        inner_arch, inner_model, inner_task = _configs({"args": inner} if isinstance(inner, argparse.Namespace)
                                                       else {"cfg": inner}, path)
        prefix = FINETUNED[arch]
        kept = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        ck = FairseqCheckpoint(path, inner_arch, inner_model, {**inner_task, **{k: v for k, v in task_args.items()
                                                                               if k == "normalize"}},
                               kept, finetuned_from=arch,
                               left_out=sorted({k.rsplit(".", 1)[0] for k in state if not k.startswith(prefix)}))
    return ck


_BINOPS = {ast.Add: lambda a, b: a + b, ast.Mult: lambda a, b: a * b}


def literal_layers(text: str, what: str) -> list[tuple[int, ...]]:
    """A layer spec such as ``"[(512, 10, 5)] + [(512, 3, 2)] * 4"``, evaluated without ``eval``.

    Only list/tuple literals of numbers, ``+`` and ``*`` are accepted; fairseq
    stores its convolution stacks this way.
    """
    def ev(node):
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [ev(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(type(node).__name__)

    try:
        value = ev(ast.parse(str(text), mode="eval"))
        layers = [tuple(int(x) for x in t) for t in value]
        if not layers or any(len(t) != 3 for t in layers):
            raise ValueError("not (dim, kernel, stride) triples")
    except (ValueError, TypeError, SyntaxError, RecursionError) as e:
        raise ConfigError(f"{what}: the layer spec {str(text)[:120]!r} is not a list of (dim, kernel, stride) "
                          f"triples ({e})") from None
    return layers
