"""`cross_attention` on small sets (issue 14, item 8): its input LayerNorm, and the demo at 40 per class."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from heads import InputSpec, build_head, rebuild_head
from store_utils import QUIET, one_thread  # noqa: F401  (one_thread: autouse fixture)

INPUTS = {"audio": InputSpec(1, 80), "text": InputSpec(1, 24)}


def test_input_norm_makes_the_head_blind_to_each_modalitys_scale_and_offset():
    torch.manual_seed(0)
    head = build_head("cross_attention", INPUTS, 4, {"d_model": 16, "n_heads": 2}).eval()
    x = {"audio": torch.randn(3, 7, 1, 80), "text": torch.randn(3, 5, 1, 24)}
    batch = {m: (v, torch.ones(v.shape[:2], dtype=torch.bool)) for m, v in x.items()}
    shifted = {"audio": (15.0 + 2.0 * x["audio"], batch["audio"][1]), "text": batch["text"]}   # log-mel-like
    assert torch.allclose(head(batch), head(shifted), atol=1e-4)
    off = build_head("cross_attention", INPUTS, 4, {"d_model": 16, "n_heads": 2, "input_norm": False}).eval()
    assert not torch.allclose(off(batch), off(shifted), atol=1e-2)


def test_a_run_described_before_input_norm_rebuilds_without_it():
    torch.manual_seed(0)
    old = build_head("cross_attention", INPUTS, 4, {"d_model": 16, "n_heads": 2, "input_norm": False})
    desc = old.describe()
    del desc["config"]["input_norm"]                               # as a run folder written before the option
    again = rebuild_head(desc)
    again.load_state_dict(old.state_dict())                        # the same weights fit: no LayerNorm added
    assert again.config.input_norm is False
    assert rebuild_head(build_head("cross_attention", INPUTS, 4, {"d_model": 16, "n_heads": 2}).describe()).config.input_norm
    assert build_head("cross_attention", INPUTS, 4, {"d_model": 16, "n_heads": 2}).config.input_norm   # the default


@pytest.mark.slow
def test_the_fused_head_learns_the_demo_at_40_per_class(tmp_path):
    """`imo demo --per-class 40 --epochs 25` used to give the fused head test UA 0.66 ± 0.13 over seeds 0-4
    (0.59 at seed 0, below the audio probe); with the input LayerNorm it is ~0.98. Loose bound, three seeds."""
    from imo_pipeline.demo.run import extract_all
    from imo_pipeline.demo.synth import generate
    from imo_pipeline.manifest import load_manifest
    from imo_pipeline.training.data import open_corpus
    from imo_pipeline.training.trainer import TrainConfig, Trainer

    data = tmp_path / "data"
    generate(data, per_class=40, seed=0)
    stores = extract_all(data, tmp_path / "cache", False, lambda *a: None)
    corpus = open_corpus(load_manifest(data / "manifest.jsonl"), stores, in_memory="yes", **QUIET)
    ua = []
    for seed in (0, 1, 2):
        cfg = TrainConfig(modalities=["audio", "text", "video"], stores=stores, manifest=str(data / "manifest.jsonl"),
                          epochs=25, batch_size=16, lr=1e-3, warmup=0.1, seed=seed)     # the demo's settings
        ua.append(Trainer(cfg, tmp_path / f"run{seed}", corpus, **QUIET).run()["test"]["ua"])
    assert np.mean(ua) >= 0.85 and min(ua) >= 0.75, ua
