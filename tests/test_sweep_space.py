"""The sweep's search space: every head has a default space whose every draw is a valid configuration, a space
file is read into typed Optuna ranges, and each mistake in it is refused in one line before anything runs."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from heads import HEADS, InputSpec, build_head
from imo_pipeline.errors import ConfigError
from imo_pipeline.training.config import TrainConfig
from imo_pipeline.training.sweep import split_params, trial_config
from imo_pipeline.training.sweep_space import (DEFAULT_SPACES, build_space, default_space_data, load_space,
                                               searchable_train_options, space_toml)

BASE = TrainConfig(modalities=["audio", "text", "video"], stores={}, manifest="")
INPUTS = {"audio": InputSpec(2, 16), "text": InputSpec(1, 12), "video": InputSpec(1, 8)}


@pytest.mark.parametrize("head", HEADS.names())
def test_every_head_has_a_default_space_whose_draws_build(head):
    assert head in DEFAULT_SPACES, f"add a default search space for head {head!r} to sweep_space.DEFAULT_SPACES"
    inputs = {"audio": INPUTS["audio"]} if HEADS.get(head).max_modalities == 1 else INPUTS
    base = TrainConfig(modalities=list(inputs), stores={}, manifest="", head=head)
    space = load_space(None, head, base)
    assert {p.section for p in space.params} == {"train", "head"} or head == "probe"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        train, opts = space.suggest(trial)
        cfg = trial_config(base, train, opts)
        build_head(head, inputs, 4, cfg.head_options)
        study.tell(trial, 0.0)


def test_a_space_file_becomes_typed_ranges_and_round_trips(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[train]\nlr = { low = 1e-4, high = 3e-3, log = true }\nepochs = { low = 2, high = 6, step = 2 }\n'
                    'schedule = { choices = ["poly", "cosine"] }\nwarmup = { low = 0, high = 0.2 }\n'
                    '[head]\nd_model = { choices = [32, 64] }\nself_layers = { type = "int", low = 0, high = 2 }\n'
                    'dropout = { low = 0.0, high = 0.3, step = 0.1 }\ninput_norm = { choices = [true, false] }\n')
    space = load_space(path, "cross_attention", BASE)
    kinds = {p.key: (p.kind, p.low, p.high, p.log, p.step, p.choices) for p in space.params}
    assert kinds == {"lr": ("float", 1e-4, 3e-3, True, None, None), "epochs": ("int", 2, 6, False, 2, None),
                     "schedule": ("categorical", None, None, False, None, ["poly", "cosine"]),
                     "warmup": ("float", 0.0, 0.2, False, None, None),
                     "head.d_model": ("categorical", None, None, False, None, [32, 64]),
                     "head.self_layers": ("int", 0, 2, False, None, None),
                     "head.dropout": ("float", 0.0, 0.3, False, 0.1, None),
                     "head.input_norm": ("categorical", None, None, False, None, [True, False])}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        train, head = space.suggest(trial)
        assert train["epochs"] in (2, 4, 6) and 1e-4 <= train["lr"] <= 3e-3 and head["d_model"] in (32, 64)
        assert round(head["dropout"], 6) in (0.0, 0.1, 0.2, 0.3)
        assert split_params(trial.params) == (train, head)
        seen.add(head["input_norm"])
        study.tell(trial, 0.0)
    assert seen == {True, False}
    again = tmp_path / "again.toml"
    again.write_text(space_toml(space))
    assert load_space(again, "cross_attention", BASE).to_dict() == space.to_dict()


def test_the_default_space_as_toml_loads_back(tmp_path):
    path = tmp_path / "d.toml"
    path.write_text(space_toml(load_space(None, "cross_attention", BASE)))
    assert load_space(path, "cross_attention", BASE).to_dict() == build_space(
        "cross_attention", default_space_data("cross_attention"), BASE, "x").to_dict()


BAD = [
    ("[model]\nx = 1\n", "unknown section [model]; a space has [train]"),
    ("[train]\nfoo = { low = 1, high = 2 }\n", "'foo' is not an imo train option; searchable: " +
     ", ".join(searchable_train_options())),
    ("[train]\nmodalities = { choices = [\"a\"] }\n", "'modalities' defines the data, the protocol or the objective"),
    ("[train]\nseed = { low = 0, high = 3 }\n", "'seed' defines the data"),
    ("[head]\nwidth = { low = 1, high = 2 }\n", "head 'cross_attention' has no option 'width'; valid: attn_dropout"),
    ("[train]\nlr = 0.1\n", "0.1 is not a range; give {low = ..., high = ...}"),
    ("[train]\nlr = { low = 0.01, high = 0.001 }\n", "low = 0.01 must be below high = 0.001"),
    ("[train]\nlr = { low = 0.0, high = 0.1, log = true }\n", "0.0 is refused (--lr 0.0: use a finite number > 0"),
    ("[train]\nwarmup = { low = 0.0, high = 0.2, log = true }\n", "a log range needs low > 0"),
    ("[train]\nbatch_size = { choices = [] }\n", "a categorical takes only choices = [...] (a non-empty list)"),
    ("[train]\nbatch_size = { choices = [16, 16] }\n", "repeat a value"),
    ("[train]\nbatch_size = { low = 8.5, high = 32 }\n", "8.5 is not an integer"),
    ("[train]\nbatch_size = { type = \"float\", low = 8, high = 32 }\n", "type 'float' does not fit the option"),
    ("[train]\nlr = { low = 1e-4, high = 1e-2, log = true, step = 1e-4 }\n", "give log = true or a step, not both"),
    ("[train]\nlr = { low = 1e-4, hi = 1e-2 }\n", "unknown key 'hi'; valid: type, low, high, log, step, choices"),
    ("[train]\nschedule = { low = 1, high = 2 }\n", "a categorical takes only choices"),
    ("[train]\nschedule = { choices = [\"poly\", \"linear\"] }\n", "'linear' is refused (--schedule 'linear'"),
    ("[head]\ndropout = { low = 0.0, high = 1.5 }\n", "1.5 is refused (head 'cross_attention' option dropout=1.5"),
    ("[head]\nd_model = { choices = [0, 64] }\n", "0 is refused"),
    ("[train]\n", "the space searches no option"),
    ("[train\nlr = 1", "not valid TOML"),
]


@pytest.mark.parametrize("text,fragment", BAD)
def test_a_bad_space_is_refused_in_one_line_naming_the_key(tmp_path, text, fragment):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_space(path, "cross_attention", BASE)
    msg = str(e.value)
    assert fragment in msg and "\n" not in msg and str(path) in msg, msg


def test_a_missing_space_file_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="--space .*: no such file"):
        load_space(tmp_path / "nope.toml", "concat", BASE)


def test_a_combination_the_head_refuses_passes_the_space_and_fails_the_trial(tmp_path):
    """Each value alone is valid (n_heads 3, d_model 64); together they are refused only when drawn."""
    path = tmp_path / "space.toml"
    path.write_text("[head]\nn_heads = { choices = [3, 4] }\n")
    space = load_space(path, "cross_attention", BASE)
    with pytest.raises(ConfigError, match="n_heads=3 does not divide d_model=64"):
        trial_config(BASE, {}, {"n_heads": 3})
    assert trial_config(BASE, {}, {"n_heads": 4}).head_options == {"n_heads": 4}
    assert space.params[0].choices == [3, 4]


def test_shape_parameters_are_the_head_options_that_are_not_per_run():
    space = build_space("cross_attention", default_space_data("cross_attention"), BASE, "x")
    assert space.architecture(("dropout", "input_dropout", "head_dropout")) == [
        "batch_size", "head.d_model", "head.self_layers", "head.cross_layers"]
    assert "head.dropout" in space.architecture(())


def test_show_space_prints_a_loadable_file(imo, tmp_path):
    r = imo("sweep", "--head", "mult", "--show-space")
    assert r.code == 0, r.stderr
    body = r.stdout
    assert body.startswith("# space of head mult") and "[head]" in body
    assert "d_model = { choices = [30, 40, 60] }" in body
    path = Path(tmp_path / "s.toml")
    path.write_text(body)
    assert load_space(path, "mult", BASE).to_dict()["head"]["layers"] == {"type": "int", "low": 2, "high": 5,
                                                                           "log": False}
