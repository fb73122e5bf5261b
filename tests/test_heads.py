"""Fusion heads: the contract every registered head keeps (shapes for every modality subset it takes, absent
modalities, length-1 inputs, padding invariance, gradients, describe/rebuild, option refusals, a training
signal), then each head's own definition (TFN's fused size, LMF's factorisation, MulT's structure, sse_ft's
numbers) and the README's example head."""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
import sys
import types
from pathlib import Path

import pytest
import torch

import heads
from heads import HEADS, InputSpec, build_head, drop_modality, head_config, rebuild_head
from imo_pipeline.errors import ConfigError
from store_utils import one_thread  # noqa: F401  (autouse fixture)

INPUTS = {"audio": InputSpec(3, 16), "text": InputSpec(3, 12), "video": InputSpec(3, 8)}
MODALITIES = tuple(INPUTS)
SUBSETS = [s for k in (1, 2, 3) for s in itertools.combinations(MODALITIES, k)]

# Small options per registered head: the fixture hook of the contract tests. A head registered without an
# entry here fails test_every_registered_head_has_contract_options.
SMALL = {
    "concat": {"hidden": 16},
    "cross_attention": {"d_model": 16, "n_heads": 2},
    "gated": {"d_model": 16, "hidden": 16},
    "late": {"hidden": 16},
    "lmf": {"hidden": 8, "rank": 2},
    "mult": {"d_model": 8, "n_heads": 2, "layers": 1, "mem_layers": 1, "kernel_size": 3},
    "probe": {},
    "sse_ft": {"n_heads": 2, "ffn_dim": 16, "self_layers": 1},
    "tfn": {"hidden": 8, "post_hidden": 16},
}
# Structural refusals each head makes beyond the generic per-field checks (options, message fragment).
STRUCTURAL = {
    "cross_attention": [({"d_model": 16, "n_heads": 3}, "n_heads=3 does not divide d_model=16")],
    "mult": [({"d_model": 8, "n_heads": 3}, "n_heads=3 does not divide d_model=8"),
             ({"kernel_size": 2}, "kernel_size=2: expected an odd integer")],
    "sse_ft": [({"n_heads": 5}, "n_heads=5 does not divide the audio width=16"),
               ({"untouched": "speech"}, "untouched='speech': speech is not a modality")],
    "tfn": [({"hidden": 200, "post_hidden": 4096}, "use --head lmf")],
}


def supports(name: str, subset) -> bool:
    cls = HEADS.get(name)
    return cls.min_modalities <= len(subset) <= (cls.max_modalities or len(MODALITIES))


def cases(supported: bool = True):
    return [(n, s) for n in HEADS.names() for s in SUBSETS if supports(n, s) == supported]


def make(name: str, subset, n_outputs: int = 5, **extra):
    return build_head(name, {m: INPUTS[m] for m in subset}, n_outputs, {**SMALL[name], **extra})


def batch_of(subset, lengths, seed=0):
    """Random frames (padding too: heads must not read it) and prefix masks; modality k is k frames longer."""
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


def with_absent(subset, seed=0):
    """B=5: row i lacks modality i % M (rows 0..M-1 each lack one), row 4 lacks every modality."""
    b = batch_of(subset, [4, 6, 1, 5, 3], seed)
    for k, m in enumerate(subset):
        rows = [i for i in range(4) if i % len(subset) == k] + [4]
        b = drop_modality(b, m, torch.tensor(rows))
    return b


def assert_finite_grads(head):
    bad = [n for n, p in head.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert bad == []


def test_every_registered_head_has_contract_options():
    assert sorted(SMALL) == HEADS.names(), (
        f"heads without contract-test options: {sorted(set(HEADS.names()) - set(SMALL))}")


@pytest.mark.parametrize("name,subset", cases())
def test_shapes_padding_and_gradients(name, subset):
    torch.manual_seed(0)
    head = make(name, subset)
    batch = batch_of(subset, [7, 3, 5])
    # every parameter is trained: absent rows reach the placeholders, full rows everything else
    grad_batch = {m: (torch.cat([x, x]), torch.cat([mk, drop_modality(batch, m, torch.tensor([k % 3]))[m][1]]))
                  for k, (m, (x, mk)) in enumerate(batch.items())}
    head.train()
    logits = head(grad_batch)
    assert logits.shape == (6, 5)
    logits.square().sum().backward()
    no_grad = [n for n, p in head.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert no_grad == []
    # In eval mode an utterance's output does not depend on the padding added by longer batch mates.
    head.eval()
    with torch.no_grad():
        full = head(batch)
        assert full.shape == (3, 5)
        for i in range(3):
            alone = {m: (x[i:i + 1, : int(mk[i].sum())], mk[i:i + 1, : int(mk[i].sum())]) for m, (x, mk) in batch.items()}
            assert torch.allclose(head(alone), full[i:i + 1], atol=1e-5)


@pytest.mark.parametrize("name,subset", cases(supported=False))
def test_unsupported_subsets_are_refused(name, subset):
    with pytest.raises(ConfigError, match=f"head '{name}' (takes|fuses at least)"):
        make(name, subset)


@pytest.mark.parametrize("name,subset", cases())
def test_absent_modalities_give_finite_outputs_that_ignore_absent_frames(name, subset):
    torch.manual_seed(0)
    head = make(name, subset)
    batch = with_absent(subset)
    for train in (True, False):
        head.train(train)
        head.zero_grad()
        out = head(batch)
        assert out.shape == (5, 5) and torch.isfinite(out).all()
        out.square().sum().backward()
        assert_finite_grads(head)
    head.eval()
    with torch.no_grad():
        want = head(batch)
        # an absent modality's frames are not read: garbage there changes nothing
        garbage = {m: (torch.where(mk[..., None, None], x, torch.randn_like(x) * 100), mk) for m, (x, mk) in batch.items()}
        assert torch.allclose(head(garbage), want, atol=1e-5)
        # a modality absent from the whole batch, or missing from it (complete_batch adds it as absent)
        whole = drop_modality(batch_of(subset, [3, 2]), subset[0])
        assert torch.isfinite(head(whole)).all()
        if len(subset) > 1:
            assert torch.allclose(head(head.complete_batch({m: whole[m] for m in subset[1:]})), head(whole), atol=1e-5)


@pytest.mark.parametrize("name,subset", cases())
def test_length_one_inputs(name, subset):
    head = make(name, subset).eval()
    one = {m: (torch.randn(2, 1, INPUTS[m].n_layers, INPUTS[m].dim), torch.ones(2, 1, dtype=torch.bool))
           for m in subset}
    with torch.no_grad():
        out = head(one)
    assert out.shape == (2, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", HEADS.names())
def test_describe_rebuilds_the_same_head(name):
    subset = MODALITIES if supports(name, MODALITIES) else ("audio",)
    torch.manual_seed(0)
    head = make(name, subset).eval()
    d = json.loads(json.dumps(head.describe()))                    # as written to the run folder
    torch.manual_seed(1)
    again = rebuild_head(d).eval()
    assert again.describe() == d
    again.load_state_dict(head.state_dict())
    batch = with_absent(subset)
    with torch.no_grad():
        assert torch.equal(again(batch), head(batch))


def bad_values(f: dataclasses.Field):
    """Values field ``f`` must refuse."""
    kind = type(f.default)
    if kind is bool:
        return ["maybe", 1]
    if kind is int:
        return [f.metadata.get("min", 1) - 1, -3, 2.5, "abc", True]
    if kind is float:
        return ([2.0, -0.1, 1.0] if f.name.endswith("dropout") else []) + [float("nan"), float("inf"), "abc", True]
    return ["nope", 3] if "choices" in f.metadata else [3]


@pytest.mark.parametrize("name", HEADS.names())
def test_bad_options_are_refused_in_one_line_naming_the_option(name):
    cls = HEADS.get(name)
    for f in dataclasses.fields(cls.Config):
        for v in bad_values(f):
            with pytest.raises(ConfigError) as e:
                head_config(name, {f.name: v})
            msg = str(e.value)
            assert "\n" not in msg and f"option {f.name}=" in msg and "expected" in msg, (f.name, v, msg)
    with pytest.raises(ConfigError, match=f"head '{name}' has no option\\(s\\) widht; valid: "):
        head_config(name, {"widht": 3})
    subset = MODALITIES if supports(name, MODALITIES) else ("audio",)
    for opts, fragment in STRUCTURAL.get(name, []):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            build_head(name, {m: INPUTS[m] for m in subset}, 4, {**SMALL[name], **opts})


def test_options_from_the_command_line_are_typed():
    # `imo train --head-opt` gives ints, floats, bools and strings; ints may come as integral floats
    cfg = head_config("mult", {"d_model": 20.0, "dropout": 0, "pooling": "mean", "type": "mult"})
    assert cfg.d_model == 20 and isinstance(cfg.d_model, int) and cfg.dropout == 0.0 and cfg.pooling == "mean"
    with pytest.raises(ConfigError, match="options of type 'tfn' given to head 'mult'"):
        head_config("mult", {"type": "tfn"})
    for bad, fragment in [({"d_model": 0}, "d_model=0: expected an integer >= 1"),
                          ({"dropout": 2}, "dropout=2: expected a number in [0, 1)"),
                          ({"pooling": "max"}, "pooling='max': expected one of last, mean")]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            head_config("mult", bad)


def separable(n: int, subset, n_outputs: int, seed: int = 0):
    """``n`` samples whose class shows as a direction in every modality's frames."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    batch = {}
    for m in subset:
        s = INPUTS[m]
        dirs = torch.randn(4, s.dim, generator=g)
        x = torch.randn(n, 6, s.n_layers, s.dim, generator=g) + dirs[y][:, None, None, :]
        batch[m] = (x, torch.ones(n, 6, dtype=torch.bool))
    target = y if n_outputs > 1 else (y.float() - 1.5)[:, None]
    return batch, target


@pytest.mark.parametrize("n_outputs", [4, 1], ids=["classification", "regression"])
@pytest.mark.parametrize("name", HEADS.names())
def test_loss_decreases_on_a_tiny_set(name, n_outputs):
    subset = MODALITIES if supports(name, MODALITIES) else ("audio",)
    torch.manual_seed(0)
    head = make(name, subset, n_outputs)
    batch, y = separable(32, subset, n_outputs)
    loss_fn = torch.nn.functional.cross_entropy if n_outputs > 1 else torch.nn.functional.l1_loss

    def loss() -> float:
        head.eval()
        with torch.no_grad():
            return float(loss_fn(head(batch), y))

    before = loss()
    opt = torch.optim.Adam(head.parameters(), lr=3e-3)
    head.train()
    for _ in range(40):
        opt.zero_grad()
        loss_fn(head(batch), y).backward()
        opt.step()
    after = loss()
    assert after < 0.6 * before, (before, after)


# --- each head's own definition ------------------------------------------------------------------------------


def test_cross_attention_has_a_block_per_ordered_pair():
    head = make("cross_attention", MODALITIES, 4)
    assert sorted(head.cross) == sorted(["audio>text", "audio>video", "text>audio", "text>video", "video>audio", "video>text"])
    two = make("cross_attention", ("audio", "text"), 4)
    assert sorted(two.cross) == ["audio>text", "text>audio"]
    assert two.classifier[1].in_features == 2 * 16


def test_probe_layer_weights_and_single_modality():
    probe = build_head("probe", {"audio": INPUTS["audio"]}, 3)
    assert probe.layer_weights().shape == (3,)
    assert torch.isclose(probe.layer_weights().sum(), torch.tensor(1.0))
    with pytest.raises(ConfigError, match="takes 1 modality"):
        build_head("probe", INPUTS, 3)


def test_tfn_fused_vector_is_the_outer_product_of_one_extended_vectors():
    from heads.tfn import fused_size, tensor_fusion

    g = torch.Generator().manual_seed(0)
    ha, ht, hv = (torch.randn(2, d, generator=g) for d in (2, 3, 4))
    z = tensor_fusion([ha, ht, hv])
    assert z.shape == (2, 3 * 4 * 5) == (2, fused_size([2, 3, 4]))
    one = lambda h: torch.cat([torch.ones(len(h), 1), h], 1)  # noqa: E731
    want = torch.einsum("bi,bj,bk->bijk", one(ha), one(ht), one(hv)).reshape(2, -1)
    assert torch.allclose(z, want)
    cube = z.view(2, 3, 4, 5)
    assert cube[:, 0, 0, 0].eq(1).all()                           # the constant
    assert torch.allclose(cube[:, 1:, 0, 0], ha) and torch.allclose(cube[:, 0, 1:, 0], ht)  # unimodal terms
    assert torch.allclose(cube[:, 1:, 1:, 0], ha[:, :, None] * ht[:, None, :])             # bimodal terms
    head = build_head("tfn", INPUTS, 4, {"hidden": 3, "post_hidden": 8})
    assert head.post[1].in_features == 4 ** 3 and head.describe()["structure"]["fused_width"] == 64
    two = build_head("tfn", {m: INPUTS[m] for m in ("audio", "text")}, 4, {"hidden": 3, "post_hidden": 8})
    assert two.post[1].in_features == 16


def test_lmf_equals_the_full_tensor_contracted_with_the_weight_built_from_its_factors():
    from heads.tfn import pooled_subnets, tensor_fusion

    torch.manual_seed(0)
    head = build_head("lmf", INPUTS, 3, {"hidden": 2, "rank": 4}).eval()
    batch = with_absent(MODALITIES)
    hs = pooled_subnets(head.subnets, batch, head.modalities)
    Z = tensor_fusion(hs).view(5, 3, 3, 3)                          # (B, h+1, h+1, h+1)
    f = head.factors
    W = torch.einsum("r,rac,rtc,rvc->atvc", head.rank_weights[0], f["audio"], f["text"], f["video"])  # full weight
    want = torch.einsum("batv,atvc->bc", Z, W) + head.bias
    with torch.no_grad():
        assert torch.allclose(head(batch), want, atol=1e-5)
    assert head.describe()["structure"]["factors"]["audio"] == [4, 3, 3]


def test_mult_describe_shows_the_crossmodal_blocks_of_each_target():
    head = build_head("mult", INPUTS, 4)
    s = head.describe()["structure"]
    assert s["targets"]["text"]["crossmodal"] == ["text <- audio", "text <- video"]
    assert s["targets"]["audio"]["crossmodal"] == ["audio <- text", "audio <- video"]
    assert s["targets"]["video"] == {"crossmodal": ["video <- audio", "video <- text"], "crossmodal_layers": 5,
                                     "memory_width": 60, "memory_layers": 5, "pooling": "last"}
    assert s["fused_width"] == 180 and head.out.in_features == 180          # 2 (d_l + d_a + d_v), as MulT
    assert sorted(head.cross) == ["audio<text", "audio<video", "text<audio", "text<video", "video<audio", "video<text"]
    assert all(len(enc.layers) == 5 for enc in head.cross.values())
    assert head.proj["audio"].kernel_size == (1,)                           # the release's kernel
    two = build_head("mult", {m: INPUTS[m] for m in ("audio", "video")}, 4, {"d_model": 10, "n_heads": 2})
    assert two.describe()["structure"]["targets"]["audio"]["memory_width"] == 10 and two.out.in_features == 20


def test_mult_pools_the_last_real_frame_or_the_masked_mean():
    for pooling in ("last", "mean"):
        torch.manual_seed(0)
        head = make("mult", ("audio", "text"), 3, pooling=pooling).eval()
        seen = {}
        head.memory["audio"].register_forward_hook(lambda mod, a, out: seen.setdefault("mem", out))
        head.proj1.register_forward_hook(lambda mod, a, out: seen.setdefault("fused", a[0]))
        with torch.no_grad():
            head(batch_of(("audio", "text"), [2, 5]))
        h, fused = seen["mem"], seen["fused"]                      # (B, T, 8), (B, 16): audio first
        want = (torch.stack([h[0, 1], h[1, 4]]) if pooling == "last"
                else torch.stack([h[0, :2].mean(0), h[1, :5].mean(0)]))
        assert torch.allclose(fused[:, :8], want, atol=1e-6)


SSE_DIMS = {"text": InputSpec(1, 1024), "audio": InputSpec(1, 512), "video": InputSpec(1, 256)}


def test_sse_ft_keeps_the_original_numbers():
    head = build_head("sse_ft", SSE_DIMS, 4)
    c = head.config
    assert (c.n_heads, c.self_layers, c.cross_layers, c.ffn_dim, c.activation) == (4, 2, 1, 1024, "gelu")
    assert (c.dropout, c.attn_dropout, c.max_positions_audio, c.max_positions_video) == (0.05, 0.05, 936, 301)
    # widths kept: no projection anywhere; cross-attention keys/values come at the other modality's width
    assert not any(isinstance(mod, torch.nn.Linear) and mod.in_features in (1024, 512, 256)
                   and mod.out_features not in (1024, 512, 256, 1792) for mod in head.modules())
    for key, layers in head.cross.items():
        q, kv = key.split("<")
        a = layers[0].attn
        assert (a.embed_dim, a.kdim, a.vdim, a.num_heads) == (SSE_DIMS[q].dim, SSE_DIMS[kv].dim, SSE_DIMS[kv].dim, 4)
        assert len(layers) == 1 and layers[0].fc1.out_features == 1024
    assert sorted(head.cross) == ["audio<text", "audio<video", "text<audio", "text<video", "video<audio", "video<text"]
    # text untouched: no start token, positions, LayerNorm or self-attention; audio and video have all four
    assert set(head.start) == set(head.positions) == set(head.emb_norm) == set(head.self_attn) == {"audio", "video"}
    assert head.positions["audio"].weight.shape == (936, 512) and head.positions["video"].weight.shape == (301, 256)
    assert all(len(layers) == 2 and layers[0].attn.embed_dim == SSE_DIMS[m].dim for m, layers in head.self_attn.items())
    # the pooler: dropout -> dense 1792 -> 1792 -> tanh -> dropout -> linear
    p = head.pooler
    assert [type(x).__name__ for x in p] == ["Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert (p[1].in_features, p[1].out_features, p[4].out_features) == (1792, 1792, 4)
    s = head.describe()["structure"]
    assert s["fusion"] == {"text": "text<-audio * text<-video", "audio": "audio<-text * audio<-video",
                           "video": "video<-text * video<-audio"}
    assert s["pooler"] == [1792, 1792, 4] and s["untouched"] == ["text"]
    assert all(not t.detach().any() for t in head.start.values())   # the fork's init leaves them at zero


def test_sse_ft_layers_are_post_ln():
    torch.manual_seed(0)
    head = build_head("sse_ft", {"audio": InputSpec(1, 32), "video": InputSpec(1, 16)}, 2,
                      {"ffn_dim": 16, "init": "torch"}).eval()
    x = torch.randn(2, 7, 32) * 5 + 3
    layer = head.self_attn["audio"][0]
    layer.final_norm.weight.data.fill_(1.0), layer.final_norm.bias.data.zero_()
    with torch.no_grad():
        y = layer(x, None, torch.zeros(2, 7, dtype=torch.bool))
    # a post-LN layer ends in its LayerNorm: every output row is normalised (a pre-LN one returns the residual)
    assert torch.allclose(y.mean(-1), torch.zeros(2, 7), atol=1e-5)
    assert torch.allclose(y.var(-1, unbiased=False), torch.ones(2, 7), atol=1e-3)
    cross = head.cross["audio<video"][0]
    with torch.no_grad():
        y = cross(x, torch.randn(2, 4, 16), torch.zeros(2, 4, dtype=torch.bool))
    assert torch.allclose(y.mean(-1), torch.zeros(2, 7), atol=1e-5)


def test_sse_ft_passes_text_through_untouched():
    torch.manual_seed(0)
    dims = {"text": InputSpec(1, 16)}
    head = build_head("sse_ft", dims, 3).eval()
    x = torch.randn(2, 5, 1, 16)
    mask = torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        out = head({"text": (x, mask)})
        assert torch.allclose(out, head.pooler(x[:, 0, 0]))          # RoBERTa's <s> state, nothing in between
        y = x.clone()
        y[:, 1:] = torch.randn(2, 4, 1, 16)
        assert torch.allclose(head({"text": (y, mask)}), out)        # only <s> counts
    assert sum(p.numel() for n, p in head.named_parameters() if not n.startswith(("pooler", "placeholder"))) == 0
    # with audio, text still enters the cross-modal layers as stored: T<-A queries with the stored states
    two = build_head("sse_ft", {"text": InputSpec(1, 16), "audio": InputSpec(1, 8)}, 3, {"ffn_dim": 8}).eval()
    seen = {}
    two.cross["text<audio"][0].register_forward_hook(lambda mod, a, out: seen.setdefault("q", a[0]))
    with torch.no_grad():
        two({"text": (x, mask), "audio": (torch.randn(2, 3, 1, 8), torch.ones(2, 3, dtype=torch.bool))})
    assert torch.equal(seen["q"], x[:, :, 0])


def test_sse_ft_text_can_be_encoded_like_audio_and_video():
    head = build_head("sse_ft", {"text": InputSpec(1, 16), "audio": InputSpec(1, 8)}, 2,
                      {"ffn_dim": 8, "untouched": "none", "max_positions_text": 20})
    assert set(head.start) == set(head.self_attn) == {"text", "audio"} and head.describe()["structure"]["untouched"] == []
    assert head.positions["text"].weight.shape == (20, 16)


def test_sse_ft_crops_to_its_positions():
    torch.manual_seed(0)
    head = build_head("sse_ft", {"audio": InputSpec(1, 8), "video": InputSpec(1, 8)}, 2,
                      {"ffn_dim": 8, "max_positions_audio": 4, "max_positions_video": 3}).eval()
    a = torch.randn(1, 10, 1, 8)
    v = torch.randn(1, 6, 1, 8)
    full = lambda T: torch.ones(1, T, dtype=torch.bool)  # noqa: E731
    with torch.no_grad():
        long = head({"audio": (a, full(10)), "video": (v, full(6))})
        short = head({"audio": (a[:, :3], full(3)), "video": (v[:, :2], full(2))})
    assert torch.allclose(long, short, atol=1e-6)


# --- the README's example head -------------------------------------------------------------------------------


def readme_head_example() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("**A fusion head**"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_head_works_when_pasted():
    code = readme_head_example()
    assert '@register_head("my_gated")' in code
    module = types.ModuleType("readme_example")                      # as if pasted into heads/my_gated.py
    sys.modules[module.__name__] = module
    try:
        exec(compile(code, "README.md", "exec"), module.__dict__)
        head = build_head("my_gated", INPUTS, 4, {"d_model": 16})
        assert head.describe()["config"] == {"type": "my_gated", "d_model": 16, "dropout": 0.1}
        with torch.no_grad():
            assert head(batch_of(MODALITIES, [3, 5])).shape == (2, 4)
            assert torch.isfinite(head(with_absent(MODALITIES))).all()
        with pytest.raises(ConfigError, match="d_model=0: expected an integer >= 1"):
            build_head("my_gated", INPUTS, 4, {"d_model": 0})
        batch, y = separable(32, MODALITIES, 4)
        opt = torch.optim.Adam(head.parameters(), lr=3e-3)
        first = None
        for _ in range(30):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(batch), y)
            first = first if first is not None else loss.item()
            loss.backward()
            opt.step()
        assert loss.item() < 0.6 * first
    finally:
        HEADS._items.pop("my_gated", None)  # the registry has no public removal; keep the suite's registry clean
        sys.modules.pop(module.__name__, None)


def test_registry_errors():
    with pytest.raises(ConfigError, match="valid names: concat, cross_attention, gated, late, lmf, mult, probe, sse_ft, tfn"):
        build_head("nope", INPUTS, 3)
    with pytest.raises(ConfigError, match="already registered"):
        heads.register_head("concat")(type("Dup", (), {}))
    with pytest.raises(ConfigError, match="no option"):
        build_head("cross_attention", INPUTS, 3, {"width": 3})
