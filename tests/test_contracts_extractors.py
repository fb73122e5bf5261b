"""The extractor contract, for EVERY registered family (fixtures: tests/contracts.py, see its top).

fingerprint round trip (same config + weights -> same fingerprint; the stored config rebuilds the same
extractor), output ``[T, L, D]`` matching ``layers``/``dim``/frame rate, batching invariance, bad options
refused with ConfigError.
"""

import json

import numpy as np
import pytest

from contracts import EXTRACTOR_FIXTURES
from extractors import EXTRACTORS, build_extractor
from imo_pipeline.errors import ConfigError

NAMES = EXTRACTORS.names()


def test_every_registered_extractor_has_a_fixture():
    missing = sorted(set(NAMES) - set(EXTRACTOR_FIXTURES))
    assert not missing, (f"registered extractor(s) {missing} have no contract fixture: add a builder to "
                         f"EXTRACTOR_FIXTURES in tests/contracts.py (see the top of that file)")


def _build(fx, modality: str, **over):
    return build_extractor(fx.encoder, modality, **{"layers": "all", "device": "cpu", **fx.options, **over})


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> (fixture, extractor with every layer on CPU), built once per module."""
    cache = {}

    def get(name):
        if name not in EXTRACTOR_FIXTURES:
            pytest.fail(f"extractor {name!r} is registered but has no fixture in tests/contracts.py EXTRACTOR_FIXTURES")
        if name not in cache:
            fx = EXTRACTOR_FIXTURES[name](tmp_path_factory.mktemp(name))
            ext = _build(fx, EXTRACTORS.get(name).modality)
            assert ext.family == name, f"fixture of {name!r} builds {ext.family!r}"
            cache[name] = fx, ext
        return cache[name]

    return get


@pytest.mark.parametrize("name", NAMES)
def test_fingerprint_round_trip(built, name):
    fx, ext = built(name)
    assert _build(fx, ext.modality).fingerprint() == ext.fingerprint()
    stored = json.loads(json.dumps(ext.config_dict()))        # as a store keeps it
    assert stored["type"] == name and "device" not in stored
    rebuilt = build_extractor(stored, ext.modality, device="cpu")
    assert rebuilt.fingerprint() == ext.fingerprint() and rebuilt.config_dict() == ext.config_dict()
    other = build_extractor(stored, ext.modality, device="cpu", layers="0" if ext.config.layers != "0" else "all")
    assert other.fingerprint() != ext.fingerprint()            # the config is part of the fingerprint


@pytest.mark.parametrize("name", NAMES)
def test_output_is_T_L_D_matching_what_the_extractor_declares(built, name):
    fx, ext = built(name)
    assert ext.layers and all(0 <= i < ext.n_hidden for i in ext.layers) and ext.dim > 0
    for u in fx.manifest:
        size = ext.measure(u, fx.manifest)
        (emb,) = ext.embed([ext.load(u, fx.manifest)])
        assert emb.dtype == np.float32 and emb.ndim == 3, emb.shape
        assert emb.shape[1:] == (len(ext.layers), ext.dim) and np.isfinite(emb).all()
        T = emb.shape[0]
        if ext.unit == "s":        # frames at the declared frame rate (edge frames aside)
            assert ext.frame_rate and abs(T - ext.frame_rate * size) <= 2 + 0.05 * ext.frame_rate * size, (T, size)
        else:                      # one row per token / sampled frame; video stores frames at fps
            assert T == size, (T, size)
            assert (ext.frame_rate is None) == (ext.unit == "tokens")


@pytest.mark.parametrize("name", NAMES)
def test_batching_never_changes_an_embedding(built, name):
    fx, ext = built(name)
    media = [ext.load(u, fx.manifest) for u in fx.manifest]
    assert len({len(m) for m in media}) == len(media), "the fixture needs utterances of different lengths"
    for together, m in zip(ext.embed(media), media):
        np.testing.assert_allclose(together, ext.embed([m])[0], atol=fx.atol, rtol=fx.atol)
    np.testing.assert_allclose(ext.embed(media[::-1])[-1], ext.embed([media[0]])[0], atol=fx.atol, rtol=fx.atol)


@pytest.mark.parametrize("name", NAMES)
def test_bad_options_are_refused(built, name):
    fx, ext = built(name)
    cls = EXTRACTORS.get(name)
    with pytest.raises(ConfigError, match=f"{name} extractor has no option 'no_such_option'; valid: "):
        _build(fx, ext.modality, no_such_option=1)
    with pytest.raises(ConfigError, match="--precision 'foo': use one of auto, fp32, fp16, bf16"):
        _build(fx, ext.modality, precision="foo")
    with pytest.raises(ConfigError, match="option layers: 3 is not text"):
        _build(fx, ext.modality, layers=3)
    for option in cls.Config.family_options():   # every family option refuses a value of no fitting type
        with pytest.raises(ConfigError, match=f"option {option}: "):
            _build(fx, ext.modality, **{option: {"not": "fitting"}})
