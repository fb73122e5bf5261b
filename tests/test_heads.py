"""Fusion heads: every registered head over modality subsets, padding invariance, gradients, registry errors."""

from __future__ import annotations

import pytest
import torch

import heads
from heads import HEADS, InputSpec, build_head
from imo_pipeline.errors import ConfigError

INPUTS = {"audio": InputSpec(3, 16), "text": InputSpec(3, 12), "video": InputSpec(3, 8)}
SMALL = {"cross_attention": {"d_model": 16, "n_heads": 2}, "concat": {"hidden": 16}, "probe": {}}
SUBSETS = [("audio",), ("text", "video"), ("audio", "text", "video")]


def _cases():
    for name in HEADS.names():
        for subset in SUBSETS:
            if HEADS.get(name).max_modalities is None or len(subset) <= HEADS.get(name).max_modalities:
                yield name, subset


def _batch(subset, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, m in enumerate(subset):
        T = max(lengths) + k
        x = torch.randn(len(lengths), T, INPUTS[m].n_layers, INPUTS[m].dim, generator=g)
        mask = torch.zeros(len(lengths), T, dtype=torch.bool)
        for i, t in enumerate(lengths):
            mask[i, : t + k] = True
        out[m] = (x, mask)
    return out


@pytest.mark.parametrize("name,subset", list(_cases()))
def test_head_shapes_padding_and_gradients(name, subset):
    torch.manual_seed(0)
    head = build_head(name, {m: INPUTS[m] for m in subset}, 5, SMALL[name])
    batch = _batch(subset, [7, 3, 5])
    head.train()
    logits = head(batch)
    assert logits.shape == (3, 5)
    logits.square().sum().backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    # In eval mode an utterance's output does not depend on the padding added by longer batch mates.
    head.eval()
    with torch.no_grad():
        full = head(batch)
        for i in range(3):
            alone = {m: (x[i:i + 1, : int(mk[i].sum())], mk[i:i + 1, : int(mk[i].sum())]) for m, (x, mk) in batch.items()}
            assert torch.allclose(head(alone), full[i:i + 1], atol=1e-5)


def test_cross_attention_has_a_block_per_ordered_pair():
    head = build_head("cross_attention", INPUTS, 4, SMALL["cross_attention"])
    assert sorted(head.cross) == sorted(["audio>text", "audio>video", "text>audio", "text>video", "video>audio", "video>text"])
    two = build_head("cross_attention", {m: INPUTS[m] for m in ("audio", "text")}, 4, SMALL["cross_attention"])
    assert sorted(two.cross) == ["audio>text", "text>audio"]
    assert two.classifier[1].in_features == 2 * 16


def test_probe_layer_weights_and_single_modality():
    probe = build_head("probe", {"audio": INPUTS["audio"]}, 3)
    assert probe.layer_weights().shape == (3,)
    assert torch.isclose(probe.layer_weights().sum(), torch.tensor(1.0))
    with pytest.raises(ConfigError, match="takes 1 modality"):
        build_head("probe", INPUTS, 3)


def test_registry_errors():
    with pytest.raises(ConfigError, match="valid names: concat, cross_attention, probe"):
        build_head("nope", INPUTS, 3)
    with pytest.raises(ConfigError, match="already registered"):
        heads.register_head("concat")(type("Dup", (), {}))
    with pytest.raises(ConfigError, match="no option"):
        build_head("cross_attention", INPUTS, 3, {"width": 3})


def test_describe_rebuilds_the_same_head():
    head = build_head("cross_attention", INPUTS, 4, SMALL["cross_attention"])
    d = head.describe()
    again = build_head(d["name"], {m: InputSpec(**s) for m, s in d["inputs"].items()}, d["n_outputs"],
                       {k: v for k, v in d["config"].items() if k != "type"})
    assert again.describe() == d
