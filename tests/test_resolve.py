"""promptgen.components.resolve, the one resolver: the options a component receives, checked against its
declaration. Precedence, lowest first: option defaults < the preset < the preset's ``<preset>/<dataset>`` entry <
the run's settings of the sections it takes settings from (``settings_from``) < those of its own name (and aliases);
a run value reaches only a component that declares it, and one set by name wins over it. Checked on a registry of
small components made here, so each rule is seen alone."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from promptgen import hookimpl
from promptgen.components.registry import default_registry, load_registry
from promptgen.components.resolve import (Settings, build, build_launcher, check_overrides, component_options,
                                          effective_options, resolved_components, set_options)
from promptgen.components.run_values import RunValues
from promptgen.errors import ConfigError
from promptgen.runs.config import RunConfig


class _Generator:
    """Records the options it is built with."""

    presets = {"cpu": {"epochs": 3, "lr": 0.1}, "cpu/pacs": {"lr": 0.2}, "gpu": {"epochs": 50}}

    def __init__(self, feature_dim, n_ctx, ctx_dim, epochs: int = 10, lr: float = 1e-3, depth: int = 2,
                 seed: int = 0, progress: bool = True):
        self.shape = (feature_dim, n_ctx, ctx_dim)
        self.received = {"epochs": epochs, "lr": lr, "depth": depth, "seed": seed, "progress": progress}

    def fit(self, backbone, train, prompt_labels, val):
        return None

    def sample(self, features):
        raise NotImplementedError

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _Child(_Generator):
    """Takes the settings of section ``base`` too, as spg-coop takes coop's."""

    settings_from = ("base",)
    presets = {}


class _Derived(_Generator):
    """Derives ``width`` from ``depth`` and refuses an odd depth."""

    presets = {}

    def __init__(self, feature_dim, n_ctx, ctx_dim, depth: int = 2, width: int | None = None):
        self.received = {"depth": depth, "width": width}

    @staticmethod
    def effective_options(values):
        if values["depth"] % 2:
            raise ConfigError(f"depth={values['depth']} must be even")
        return {**values, "width": values["width"] or 2 * values["depth"]}


class _Dataset:
    domains = ("a", "b")
    classes = ("x",)
    presets = {"cpu": {"per_class": 5}, "cpu/toy": {"per_class": 7}, "cpu/pacs": {"per_class": 9}}

    def __init__(self, root=None, per_class: int = 10, seed: int = 0):
        self.per_class, self.seed = per_class, seed

    def samples(self, domain, split):
        return []

    def load_image(self, sample):
        return None


class _Launcher:
    def __init__(self, workers: int = 1, address: str | None = None, progress: bool = False):
        self.workers, self.address, self.progress = workers, address, progress

    def run(self, fn, jobs):
        return [fn(job) for job in jobs]


def _register_generators(register):
    register("base", _Generator)
    register("child", _Child, aliases=("kid",))
    register("derived", _Derived)
    register("shared", _Generator)


def _register_datasets(register):
    register("toy", _Dataset)


def _register_launchers(register):
    register("fake", _Launcher)
    register("shared", _Launcher)  # a section may name components of two kinds


PLUGIN = SimpleNamespace(__name__="resolve_fixture", register_generators=hookimpl(_register_generators),
                         register_datasets=hookimpl(_register_datasets),
                         register_launchers=hookimpl(_register_launchers))
REGISTRY = load_registry([PLUGIN], entry_points=False)


def _set(name: str, preset: str = "cpu", dataset: str | None = None, **overrides) -> dict:
    return set_options(REGISTRY, "generator", name, Settings(preset, dataset, overrides))


# --- Settings, set_options ----------------------------------------------------------------------------------------


def test_settings_of_a_run_config_are_its_dataset_overrides_and_backbone_options():
    config = RunConfig(targets=("photo",), dataset="pacs", overrides={"base": {"lr": 0.5}},
                       backbone={"device": "cpu", "options": {"train_flip": True}})
    assert Settings.of(config, "gpu") == Settings("gpu", "pacs", {"base": {"lr": 0.5}}, {"train_flip": True})


def test_precedence_defaults_preset_dataset_entry_settings_from_own_section():
    assert _set("base", "none") == {}  # no preset of that name: the defaults stand (left out here)
    assert _set("base") == {"epochs": 3, "lr": 0.1}
    assert _set("base", "gpu") == {"epochs": 50}
    assert _set("base", dataset="pacs") == {"epochs": 3, "lr": 0.2}  # cpu/pacs over cpu
    assert _set("base", dataset="pacs", base={"lr": 0.4}) == {"epochs": 3, "lr": 0.4}  # the run's over the preset
    # the child takes section base's settings, then its own (by name or alias) over them
    assert _set("child", base={"lr": 0.4, "depth": 4}) == {"lr": 0.4, "depth": 4}
    assert _set("child", base={"lr": 0.4, "depth": 4}, child={"lr": 0.3}) == {"lr": 0.3, "depth": 4}
    assert _set("child", base={"lr": 0.4}, kid={"lr": 0.3}) == {"lr": 0.3}
    assert _set("base", child={"lr": 0.3}) == {"epochs": 3, "lr": 0.1}  # settings_from goes one way


def test_a_dataset_takes_its_own_preset_entry_and_not_the_runs_seed():
    settings = Settings("cpu", "pacs")  # the run's dataset is another: a dataset's entry is its own name's
    assert set_options(REGISTRY, "dataset", "toy", settings) == {"per_class": 7}
    options = component_options(REGISTRY, "dataset", "toy", settings, RunValues(seed=5, progress=True))
    assert options == {"per_class": 7}  # its seed is the data's own option, not the run's
    assert effective_options(REGISTRY, "dataset", "toy", settings, RunValues(seed=5)) == {"per_class": 7, "seed": 0}


def test_a_set_value_is_checked_against_its_declaration_naming_the_component():
    with pytest.raises(ConfigError, match=r"generator 'base' \(plugin resolve_fixture\): option 'epochs' must be "
                                          r"int, got 'ten'"):
        _set("base", base={"epochs": "ten"})
    with pytest.raises(ConfigError, match=r"generator 'child' .* option 'depth' must be int"):
        _set("child", base={"depth": 2.5})  # a settings_from section's value is checked as the child's


def test_the_backbone_options_of_the_config_are_the_backbones_alone_and_its_section_wins():
    registry = default_registry()
    name = "tiny-clip-digits"
    settings = Settings("cpu", backbone_options={"train_flip": True})
    assert set_options(registry, "backbone", name, settings)["train_flip"] is True
    settings = Settings("cpu", overrides={name: {"train_flip": False}}, backbone_options={"train_flip": True})
    assert set_options(registry, "backbone", name, settings)["train_flip"] is False
    with pytest.raises(ConfigError, match=r"backbone 'tiny-clip-digits' .*backbone.options: unknown option 'flip'"):
        set_options(registry, "backbone", name, Settings("cpu", backbone_options={"flip": True}))


# --- component_options, effective_options, resolved_components ----------------------------------------------------


def test_a_run_value_reaches_only_a_component_that_declares_it_and_a_set_one_wins():
    run = RunValues(seed=7, progress=False, cache_dir="/cache")
    assert component_options(REGISTRY, "generator", "base", Settings("cpu"), run) == {
        "epochs": 3, "lr": 0.1, "seed": 7, "progress": False}  # no cache_dir: base does not declare it
    assert component_options(REGISTRY, "generator", "derived", Settings("cpu"), run) == {}
    settings = Settings("cpu", overrides={"base": {"seed": 3}})
    assert component_options(REGISTRY, "generator", "base", settings, run)["seed"] == 3
    assert component_options(REGISTRY, "generator", "base", Settings("cpu")) == {"epochs": 3, "lr": 0.1}


def test_effective_options_are_every_option_in_declaration_order_with_the_derived_ones():
    values = effective_options(REGISTRY, "generator", "base", Settings("cpu", overrides={"base": {"depth": 6}}))
    assert list(values.items()) == [("epochs", 3), ("lr", 0.1), ("depth", 6)]  # run values only when given
    assert effective_options(REGISTRY, "generator", "base", Settings("cpu"), RunValues(seed=1))["seed"] == 1
    assert effective_options(REGISTRY, "generator", "derived", Settings("cpu")) == {"depth": 2, "width": 4}
    settings = Settings("cpu", overrides={"derived": {"depth": 4, "width": 5}})
    assert effective_options(REGISTRY, "generator", "derived", settings) == {"depth": 4, "width": 5}
    with pytest.raises(ConfigError, match="^derived: depth=3 must be even$"):  # named after the component
        effective_options(REGISTRY, "generator", "derived", Settings("cpu", overrides={"derived": {"depth": 3}}))


def test_resolved_components_are_by_kind_and_registered_name_without_where_to_report():
    table = resolved_components(REGISTRY, [("generator", "kid"), ("dataset", "toy"), ("launcher", "fake")],
                                Settings("cpu", overrides={"child": {"lr": 0.3}}),
                                RunValues(seed=2, progress=True, cache_dir="/cache"))
    assert table == {"generator": {"child": {"epochs": 10, "lr": 0.3, "depth": 2, "seed": 2}},
                     "dataset": {"toy": {"per_class": 7, "seed": 0}},
                     "launcher": {"fake": {"workers": 1, "address": None}}}


# --- check_overrides ----------------------------------------------------------------------------------------------


def test_an_unknown_option_is_refused_listing_the_sections_options_and_the_closest_one():
    with pytest.raises(ConfigError) as refused:
        check_overrides(REGISTRY, {"base": {"lrr": 0.1}})
    assert str(refused.value) == ("base: unknown option 'lrr'; options of generator 'base' (plugin resolve_fixture): "
                                  "epochs, lr, depth, seed, progress; did you mean 'lr'?")
    with pytest.raises(ConfigError, match="kid: unknown option 'width'"):  # a section by an alias
        check_overrides(REGISTRY, {"kid": {"width": 3}})
    with pytest.raises(ConfigError, match="option 'lr' must be float, got 'fast'"):
        check_overrides(REGISTRY, {"base": {"lr": "fast"}})
    check_overrides(REGISTRY, {"base": {"lr": 1}, "kid": {"depth": 3}})


def test_a_section_naming_two_kinds_gives_each_the_keys_it_declares():
    check_overrides(REGISTRY, {"shared": {"workers": 2, "lr": 0.5}})  # the launcher's, the generator's
    with pytest.raises(ConfigError, match=r"shared: unknown option 'nope'; options of generator 'shared' .*; "
                                          r"launcher 'shared' .*: workers, address, progress"):
        check_overrides(REGISTRY, {"shared": {"nope": 1}})
    assert set_options(REGISTRY, "launcher", "shared", Settings("cpu", overrides={"shared": {"workers": 2,
                                                                                               "lr": 0.5}})) == {
        "workers": 2}
    with pytest.raises(ConfigError, match="option 'workers' must be int"):  # checked when the generator's set too
        set_options(REGISTRY, "generator", "shared", Settings("cpu", overrides={"shared": {"workers": "x"}}))


# --- build, build_launcher ----------------------------------------------------------------------------------------


def test_build_makes_the_component_with_its_hook_arguments_and_the_resolved_options():
    settings = Settings("cpu", "pacs", {"base": {"depth": 5}})
    built = build(REGISTRY, "generator", "base", settings, RunValues(seed=4), feature_dim=8, n_ctx=2, ctx_dim=8)
    assert built.shape == (8, 2, 8)
    assert built.received == {"epochs": 3, "lr": 0.2, "depth": 5, "seed": 4, "progress": False}
    assert build(REGISTRY, "dataset", "toy", Settings("cpu"), root="/data").per_class == 7


def test_build_launcher_takes_the_runs_settings_then_the_flags_it_declares():
    settings = Settings("cpu", overrides={"fake": {"workers": 2, "address": "ray://a"}})
    launcher = build_launcher(REGISTRY, "fake", {"workers": None, "address": "ray://b", "shard": "0/2"}, settings)
    assert (launcher.workers, launcher.address, launcher.progress) == (2, "ray://b", True)  # None: not given
    launcher = build_launcher(REGISTRY, "fake", {"workers": 4}, settings, progress=False)
    assert (launcher.workers, launcher.address, launcher.progress) == (4, "ray://a", False)
    assert build_launcher(REGISTRY, "fake", {}).workers == 1  # no settings: the defaults
    with pytest.raises(ConfigError, match="option 'workers' must be int"):
        build_launcher(REGISTRY, "fake", {"workers": "many"})


# --- through a real run -------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_third_party_learner_takes_another_sections_settings_through_settings_from(install_plugin, tmp_path,
                                                                                     capsys):
    """The extension point spg-coop uses, from a plugin installed through a real entry point: its factory's
    ``settings_from`` sections apply first, its own section last, in a dry run and a run."""
    install_plugin("pg_quiet_coop", """
        from promptgen import hookimpl
        from promptgen_coop.learner import CoOpPrompt

        class QuietCoOp(CoOpPrompt):
            name = "quiet-coop"
            settings_from = ("coop",)

        @hookimpl
        def register_prompt_learners(register):
            register("quiet-coop", QuietCoOp)
    """)
    from promptgen import cli

    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "spg-cgan", "--set", "spg-cgan.learner=quiet-coop",
                     "--set", "coop.epochs=2", "--set", "coop.lr=0.5", "--set", "quiet-coop.lr=0.01",
                     "--set", "coop.warmup_epochs=0", "--set", "cgan.epochs=1", "--set", "cgan.warmup_epochs=0",
                     "--set", "digits-dg.per_class=5", "--views", "1", "--quiet", "--out", str(out)]) == 0
    import json

    options = json.loads((out / "config.json").read_text())["options"]["prompt_learner/quiet-coop"]
    assert (options["epochs"], options["lr"], options["warmup_epochs"]) == (2, 0.01, 0)
