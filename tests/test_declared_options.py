"""Every declared option of every registered component, through the one resolver (promptgen.components.resolve).

A value a user gives with ``--set component.option=value`` must reach the component when a run builds it, be what
the dry run prints and what config.json records; an undeclared or out-of-range one must fail before any work with
one line naming the component and the option. Drawn with hypothesis over every component of every kind,
backbones, datasets and launchers included.
"""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from promptgen.cli import main
from promptgen.components.options import RUN_VALUE_NAMES
from promptgen.components.registry import Registry, default_registry
from promptgen.components.resolve import Settings, build_launcher
from promptgen.errors import ConfigError
from promptgen.runs import dry_run, engine, rundir
from promptgen.runs.config import RunConfig
from promptgen.runs.context import RunContext
from promptgen.runs.settings import parse_settings

REGISTRY = default_registry()
RUN_KINDS = ("backbone", "dataset", "method", "prompt_learner", "generator")


def _settable(component) -> list:
    return [o for name, o in component.options.items() if name not in RUN_VALUE_NAMES and _values(o) is not None]


def _values(option):
    """A strategy of values the option's declaration accepts (None: nothing to draw, e.g. a free-form dict)."""
    info = option.info
    if info.choices is not None:
        return st.sampled_from([c for c in info.choices if c is not None])
    if info.component is not None:
        return st.sampled_from(REGISTRY.names(info.component))
    types = option.types or ()
    if types and all(t in (bool, type(None)) for t in types):
        return st.booleans()
    low = info.minimum if info.minimum is not None else info.above
    if int in types and float not in types:
        low = -1000 if low is None else math.floor(low) + (1 if info.above is not None else 0)
        return st.integers(low, min(info.maximum, low + 1000) if info.maximum is not None else low + 1000)
    if float in types:
        low = -1e3 if low is None else low
        high = info.maximum if info.maximum is not None else info.below if info.below is not None else low + 1e3
        return st.floats(low, high, allow_nan=False, allow_infinity=False, exclude_min=info.above is not None,
                         exclude_max=info.below is not None)
    if str in types:
        return st.text("abcdefgh ", min_size=1, max_size=12).filter(lambda s: s.strip() == s and s)
    return None


def _toml(value) -> str:
    """The text a user types after ``=`` for ``value`` (read back as TOML by parse_settings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def _run_using(kind: str, name: str) -> RunConfig:
    """A run that builds component ``name`` of ``kind``."""
    base = {"targets": ("solid",), "dataset": "colors", "backbone": {"device": "cpu"}, "method": "coop"}
    if kind == "dataset":
        return RunConfig(**{**base, "dataset": name})
    if kind == "backbone":
        return RunConfig(**{**base, "backbone": {"name": name, "device": "cpu"}})
    if kind == "method":
        vit = {"name": "openclip", "model": "pg-tiny-vit-w64", "device": "cpu"}  # for the visual prompts
        config = RunConfig(**{**base, "method": name})
        return RunConfig(**{**base, "method": name, "backbone": vit}) if engine.unsupported(
            REGISTRY.get("method", name).factory, config.backbone) else config
    for method in REGISTRY.names("method"):  # the first method that uses it as it is
        if (kind, name) in {tuple(pair) for pair in REGISTRY.create("method", method).components()}:
            return RunConfig(**{**base, "method": method})
    return RunConfig(**{**base, "method": "dpspg", "overrides": {"dpspg": {"stage1": "joint"}}})


class Recorder:
    """The registry's create, recording what each component is built with (methods are built for real: the run
    asks them for their components)."""

    def __init__(self, monkeypatch):
        self.built = {}
        real = Registry.create

        def create(registry, kind, name, **options):
            self.built[(kind, registry.canonical(kind, name))] = options
            return real(registry, kind, name, **options) if kind == "method" else object()

        monkeypatch.setattr(Registry, "create", create)


COMPONENTS = [c for c in REGISTRY if c.kind in RUN_KINDS and _settable(c)]


@pytest.fixture(scope="module")
def plan():
    config = RunConfig(targets=("solid",), dataset="colors", backbone={"device": "cpu"}, method="coop")
    return engine.plan_run(config, REGISTRY, engine.check(config, REGISTRY), progress=False)


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: f"{c.kind}:{c.name}")
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_set_value_reaches_the_component_the_dry_run_and_config_json(component, data, plan, monkeypatch, tmp_path):
    option = data.draw(st.sampled_from(_settable(component)), label="option")
    value = data.draw(_values(option), label="value")
    overrides = parse_settings([f"{component.name}.{option.name}={_toml(value)}"])
    assert overrides == {component.name: {option.name: value}}
    base = _run_using(component.kind, component.name)
    config = RunConfig(**{**base.to_dict(), "overrides": {**base.overrides, **overrides}})
    try:
        checked = engine.check(config, REGISTRY)
    except ConfigError as error:  # a value the declaration accepts but another option contradicts (warm-up vs
        message = str(error)      # epochs, n_ctx vs ctx_init): refused as early, in one line naming the component
        assert "\n" not in message and component.name in message
        assume(False)
    recorder = Recorder(monkeypatch)
    context = RunContext(config=config, registry=REGISTRY, plan=plan, backbone=None, preset=checked.preset, views=1)
    if component.kind == "dataset":
        engine.build_dataset(config, REGISTRY, component.name, checked.preset)
    elif component.kind == "backbone":
        config.backbone.build(REGISTRY, context.settings, context.run_values)
    elif component.kind != "method":
        context.create(component.kind, component.name)
    else:
        checked = engine.check(config, REGISTRY)
    expected = json.loads(json.dumps(value))
    received = recorder.built[(component.kind, component.name)][option.name]
    assert json.loads(json.dumps(received)) == expected  # what the component is built with
    shown = dry_run.describe(config, REGISTRY, checked, plan, tmp_path / "out")
    assert json.loads(json.dumps(shown["components"][component.kind][component.name][option.name])) == expected
    assert f"{option.name}={shown['components'][component.kind][component.name][option.name]}" in dry_run.text(shown)
    monkeypatch.undo()
    rundir.write_config(tmp_path, config, checked, context)
    recorded = json.loads((tmp_path / rundir.CONFIG).read_text())["options"][f"{component.kind}/{component.name}"]
    assert recorded[option.name] == expected


def _bad_values(option):
    """Values the declaration refuses: another type, out of range, not a choice."""
    info, types = option.info, option.types or ()
    bad = []
    if types and str not in types:
        bad.append('"not-a-number"' if bool not in types else "3")
    elif types and str in types and info.choices is not None:
        bad.append('"no-such-choice"')
    if info.component is not None:
        bad.append('"no-such-component"')
    if info.minimum is not None:
        bad.append(repr(info.minimum - 1))
    if info.above is not None:
        bad.append(repr(info.above))
    if info.maximum is not None:
        bad.append(repr(info.maximum + 1))
    if info.below is not None:
        bad.append(repr(info.below))
    return bad


REFUSALS = [(c, o, text) for c in COMPONENTS for o in _settable(c) for text in _bad_values(o)]


@pytest.mark.parametrize("component", COMPONENTS, ids=lambda c: f"{c.kind}:{c.name}")
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_an_undeclared_or_out_of_range_value_fails_before_any_work_in_one_line(component, data, tmp_path, capsys):
    refusals = [(o.name, text) for c, o, text in REFUSALS if c is component] + [("no_such_option", "1")]
    name, text = data.draw(st.sampled_from(refusals), label="setting")
    config = _run_using(component.kind, component.name)
    out = tmp_path / "run"
    argv = ["train", "--dataset", config.dataset, "--target", "solid", "--method", config.method, "--backbone",
            config.backbone.name, *(["--model", config.backbone.model] if config.backbone.model else []),
            "--device", "cpu", "--out", str(out), "--quiet",
            *[f"--set={section}.{key}={_toml(value)}" for section, values in config.overrides.items()
              for key, value in values.items()], f"--set={component.name}.{name}={text}"]
    assert main(argv) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(error) == 1 and component.name in error[0] and name in error[0], error
    assert not out.exists()


@pytest.mark.parametrize("name", REGISTRY.names("launcher"))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_launchers_settings_and_flags_reach_it_and_a_bad_one_is_refused(name, data, monkeypatch):
    """Launchers are built by one function (promptgen.components.resolve.build_launcher) from a suite's settings of
    their name and a command's flags, the flags winning."""
    component = REGISTRY.get("launcher", name)
    for option in _settable(component):
        value, flag = data.draw(_values(option)), data.draw(_values(option))
        with monkeypatch.context() as patch:
            recorder = Recorder(patch)
            settings = Settings("cpu", overrides={name: {option.name: value}})
            build_launcher(REGISTRY, name, {}, settings, progress=False)
            assert recorder.built[("launcher", name)][option.name] == value
            build_launcher(REGISTRY, name, {option.name: flag}, settings, progress=False)
            assert recorder.built[("launcher", name)][option.name] == flag
    with pytest.raises(ConfigError, match="unknown option 'no_such_option'"):
        build_launcher(REGISTRY, name, {}, Settings("cpu", overrides={name: {"no_such_option": 1}}))


def test_the_backbone_set_reaches_the_built_backbone(tmp_path):
    """The bug this file was written for: --set <backbone>.train_flip was accepted and dropped."""
    config = RunConfig(targets=("solid",), dataset="colors", backbone={"device": "cpu"},
                       overrides={"tiny-clip-digits": {"train_flip": True, "train_crop_scale": [0.9, 1.0]}})
    checked = engine.check(config, REGISTRY)
    backbone = config.backbone.build(REGISTRY, Settings.of(config, checked.preset))
    transform = repr(backbone.image_transform(True))
    assert "RandomHorizontalFlip" in transform and "scale=(0.9, 1.0)" in transform


def test_an_unknown_backbone_option_in_the_config_is_refused_not_dropped():
    config = RunConfig(targets=("solid",), dataset="colors", backbone={"device": "cpu", "options": {"flip": True}})
    with pytest.raises(ConfigError, match=r"backbone 'tiny-clip-digits' .*backbone.options: unknown option 'flip'"):
        engine.check(config, REGISTRY)


@pytest.mark.parametrize("preset", ["gpu", "cpu"])
def test_every_preset_value_is_one_its_option_declares(preset):
    """The gpu preset (the released code's values) and the cpu preset pass the same declarations a user's value
    does, on every dataset entry a component names (promptgen.components.resolve.set_options)."""
    from promptgen.components.presets import declared_presets
    from promptgen.components.resolve import set_options

    for component in REGISTRY:
        entries = [e.split("/", 1)[1] for e in declared_presets(component.factory) if e.startswith(f"{preset}/")]
        for dataset in (None, *entries):
            values = set_options(REGISTRY, component.kind, component.name, Settings(preset, dataset))
            for name, value in values.items():
                assert component.options[name].out_of_range(value) is None, (component.name, name, value)
