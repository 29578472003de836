"""Search spaces beside the options (promptgen.components.search): trials drawn DomainBed's way."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import stub_generator_plugin
from promptgen.components.registry import default_registry
from promptgen.components.resolve import Settings, effective_options
from promptgen.components.search import Choice, IntLogUniform, LogUniform, Uniform, draw_trial, search_space
from promptgen.errors import ConfigError
from promptgen.runs import engine
from promptgen.runs.config import RunConfig

REGISTRY = default_registry()
SPG = (("prompt_learner", "spg-coop"), ("generator", "cgan"))


def test_the_built_in_learners_and_generators_declare_a_search_space():
    assert set(search_space(REGISTRY, "prompt_learner", "coop")) == {"lr"}
    assert set(search_space(REGISTRY, "prompt_learner", "spg-coop")) == {"lr"}  # a subclass keeps its parent's
    assert set(search_space(REGISTRY, "generator", "cgan")) == {"lr", "weight_decay"}
    assert search_space(REGISTRY, "dataset", "digits-dg") == {}


def test_trial_zero_is_the_presets_values():
    assert draw_trial(REGISTRY, SPG, 0, seed=7) == {}
    config = RunConfig(targets=("photo",), method="spg-cgan", overrides=draw_trial(REGISTRY, SPG, 0))
    preset = effective_options(REGISTRY, "generator", "cgan", Settings("cpu", "digits-dg"))
    assert effective_options(REGISTRY, "generator", "cgan", Settings.of(config, "cpu")) == preset


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), trial=st.integers(1, 10_000))
def test_the_same_seed_draws_the_same_trial_and_every_value_is_declared_and_in_its_space(seed, trial):
    drawn = draw_trial(REGISTRY, SPG, trial, seed)
    assert drawn == draw_trial(REGISTRY, SPG, trial, seed)
    assert 5e-4 <= drawn["spg-coop"]["lr"] <= 1e-2 and 1e-4 <= drawn["cgan"]["lr"] <= 1e-2
    assert 1e-6 <= drawn["cgan"]["weight_decay"] <= 1e-2
    config = RunConfig(targets=("photo",), method="spg-cgan", overrides=drawn)
    engine.check(config, REGISTRY)  # a trial is an ordinary run: the resolver takes its values
    resolved = effective_options(REGISTRY, "generator", "cgan", Settings.of(config, "cpu"))
    assert resolved["lr"] == drawn["cgan"]["lr"]


def test_trials_differ_and_another_seed_draws_other_trials():
    first = [draw_trial(REGISTRY, SPG, t, seed=0)["cgan"]["lr"] for t in range(1, 21)]
    assert len(set(first)) == 20
    assert first != [draw_trial(REGISTRY, SPG, t, seed=1)["cgan"]["lr"] for t in range(1, 21)]
    # one option's draw does not depend on which other components are in the trial
    assert draw_trial(REGISTRY, SPG[1:], 3, seed=0)["cgan"] == draw_trial(REGISTRY, SPG, 3, seed=0)["cgan"]


def test_distributions_stay_in_their_bounds():
    import random

    rng = random.Random(0)
    for _ in range(200):
        assert 1e-4 <= LogUniform(1e-4, 1e-2).draw(rng) <= 1e-2
        assert 0.1 <= Uniform(0.1, 0.5).draw(rng) <= 0.5
        assert 8 <= IntLogUniform(8, 512).draw(rng) <= 512
        assert Choice([2, 4, 8]).draw(rng) in (2, 4, 8)
    with pytest.raises(ValueError, match="trial must be an int >= 0"):
        draw_trial(REGISTRY, SPG, -1)


def test_a_space_that_leaves_the_options_range_fails_naming_component_and_option(install_plugin):
    install_plugin("pg_bad_space", stub_generator_plugin(
        "wide", 'lr: Annotated[float, option("rate", above=0, search=Uniform(-1.0, -0.5))] = 1e-3',
        imports="from typing import Annotated\nfrom promptgen.toolkit import option, Uniform"))
    from promptgen.components.registry import load_registry

    registry = load_registry()
    with pytest.raises(ConfigError, match=r"generator 'wide' .*search space of trial 1: option 'lr' must be > 0"):
        draw_trial(registry, [("generator", "wide")], 1)
