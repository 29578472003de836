"""The plugin system: discovery through entry points, and the errors a plugin author meets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from promptgen import cli, hookimpl
from promptgen.errors import DuplicateComponentError, PluginError, PluginLoadError, ProtocolError, UnknownComponentError
from promptgen.components.registry import KINDS, load_registry

MEAN_PROMPT_PLUGIN = """
    import torch
    from promptgen import hookimpl

    class MeanPromptGenerator:
        '''Predicts the mean of the prompt labels for every image (a third-party example).'''

        def __init__(self, feature_dim, n_ctx, ctx_dim):
            self.prompt = torch.zeros(n_ctx, ctx_dim)

        def fit(self, backbone, train, prompt_labels, val):
            self.prompt = torch.stack([label.ctx for label in prompt_labels]).mean(0)

        def sample(self, features):
            return self.prompt.expand(len(features), -1, -1).clone()

        def state_dict(self):
            return {"prompt": self.prompt}

        def load_state_dict(self, state):
            self.prompt = state["prompt"]

    @hookimpl
    def register_generators(register):
        register("mean-prompt", MeanPromptGenerator)
"""


def test_builtin_plugins_load_through_the_entry_point_group():
    registry = load_registry()
    assert registry.get("backbone", "openclip").plugin == "openclip"
    assert {"colors"} <= set(registry.names("dataset"))
    assert {"zeroshot"} <= set(registry.names("prompt_learner"))
    assert {"local"} <= set(registry.names("launcher"))
    assert not registry.errors


def test_third_party_generator_is_discovered_and_usable_by_name(install_plugin, tiny_backbone):
    from promptgen.values import FeatureSet, PromptLabel

    install_plugin("pg_mean_prompt", MEAN_PROMPT_PLUGIN, entry_point="mean_prompt")
    registry = load_registry()
    component = registry.get("generator", "mean-prompt")
    assert component.plugin == "mean_prompt"
    assert "third-party example" in component.description

    generator = registry.create("generator", "mean-prompt", feature_dim=64, n_ctx=2, ctx_dim=64)
    labels = [
        PromptLabel(ctx=torch.full((2, 64), value), fingerprint=tiny_backbone.fingerprint, domain=d, class_names=["a"])
        for value, d in ((1.0, "p"), (3.0, "q"))
    ]
    train = FeatureSet(torch.randn(4, 64), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 0, 1]))
    generator.fit(tiny_backbone, train, labels, None)
    prompts = generator.sample(torch.randn(5, 64))
    assert prompts.shape == (5, 2, 64)
    assert torch.allclose(prompts, torch.full_like(prompts, 2.0))


def test_entry_point_whose_import_raises_is_named_and_the_others_still_list(install_plugin, capsys):
    install_plugin("pg_broken", "raise RuntimeError('boom at import')\n", entry_point="broken_plugin")

    with pytest.raises(PluginLoadError) as caught:
        load_registry()
    message = str(caught.value)
    assert "broken_plugin" in message and "pg-broken" in message and "boom at import" in message

    lenient = load_registry(strict=False)
    assert "openclip" in lenient.names("backbone")
    assert [e.entry_point for e in lenient.errors] == ["broken_plugin"]

    assert cli.main(["plugins"]) == 1
    out, err = capsys.readouterr()
    assert "openclip" in out and "colors" in out
    assert "broken_plugin" in err and "boom at import" in err
    assert "Traceback" not in err


class _Colors:
    """A dataset conforming to the protocol."""

    domains = ("a",)
    classes = ("x",)

    def samples(self, domain, split):
        return []

    def load_image(self, sample):
        return None


def _plugin_registering(kind_hook: str, name: str, factory):
    class Plugin:
        pass

    def hook(register):
        register(name, factory)

    setattr(Plugin, kind_hook, staticmethod(hookimpl(hook)))
    return Plugin()


def test_two_plugins_registering_the_same_name_is_an_error_naming_both():
    first = _plugin_registering("register_datasets", "same", _Colors)
    second = _plugin_registering("register_datasets", "same", _Colors)
    first.__name__, second.__name__ = "plugin_one", "plugin_two"
    with pytest.raises(DuplicateComponentError) as caught:
        load_registry([first, second], entry_points=False)
    assert "dataset 'same'" in str(caught.value)
    assert "plugin_one" in str(caught.value) and "plugin_two" in str(caught.value)


def test_third_party_plugin_reusing_a_builtin_name_names_both_plugins(install_plugin):
    source = """
        from promptgen import hookimpl
        from promptgen_openclip.backbone import OpenClipBackbone

        @hookimpl
        def register_backbones(register):
            register("openclip", OpenClipBackbone)
    """
    install_plugin("pg_clash", source, entry_point="clash")
    with pytest.raises(DuplicateComponentError) as caught:
        load_registry()
    assert "'openclip' and 'clash'" in str(caught.value) or "'clash' and 'openclip'" in str(caught.value)


class _NoSample:
    def __init__(self, feature_dim, n_ctx, ctx_dim):
        pass

    def fit(self, backbone, train, prompt_labels, val):
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


class _NoClasses:
    domains = ("a",)

    def samples(self, domain, split):
        return []

    def load_image(self, sample):
        return None


class _SampleTakesNothing(_NoSample):
    def sample(self):
        return None


class _SampleIsNotAMethod(_NoSample):
    sample = 3


@pytest.mark.parametrize(
    "hook, factory, expected",
    [
        ("register_generators", _NoSample, "missing method 'sample(features"),
        ("register_datasets", _NoClasses, "missing attribute 'classes'"),
        ("register_generators", _SampleTakesNothing, "method 'sample()' cannot be called as 'sample(features"),
        ("register_generators", _SampleIsNotAMethod, "'sample' must be a method"),
    ],
)
def test_component_breaking_its_protocol_is_rejected_at_registration(hook, factory, expected):
    plugin = _plugin_registering(hook, "bad", factory)
    with pytest.raises(ProtocolError) as caught:
        load_registry([plugin], entry_points=False)
    message = str(caught.value)
    assert "'bad'" in message and factory.__qualname__ in message and expected in message


def test_factory_function_is_checked_when_it_builds():
    plugin = _plugin_registering("register_generators", "lazy", lambda **options: _NoSample(1, 1, 1))
    registry = load_registry([plugin], entry_points=False)
    with pytest.raises(ProtocolError, match="missing method 'sample"):
        registry.create("generator", "lazy")


def test_misspelled_hook_is_an_error_not_a_silent_no_op():
    class Typo:
        @hookimpl
        def register_generator(self, register):  # missing the final s
            pass

    with pytest.raises(PluginError, match="register_generator"):
        load_registry([Typo()], entry_points=False)


def test_hook_that_raises_is_reported_with_its_plugin():
    class Faulty:
        @hookimpl
        def register_datasets(self, register):
            raise KeyError("oops")

    with pytest.raises(PluginError, match="plugin 'Faulty' raised in register_datasets: KeyError"):
        load_registry([Faulty()], entry_points=False)


def test_unknown_component_lists_what_is_available():
    registry = load_registry()
    with pytest.raises(UnknownComponentError, match="unknown generator 'nope'; available:"):
        registry.get("generator", "nope")
    with pytest.raises(PluginError, match="kinds: " + ", ".join(KINDS)):
        registry.names("generators")


class _Method:
    """A method that learns nothing (a test double)."""

    inputs = "features"

    def __init__(self, generator: str = "g"):
        self.generator = generator

    def components(self):
        return [("generator", self.generator)]

    def fit(self, run):
        return {}

    def logits(self, run, split):
        return None

    def save(self, directory):
        pass

    def load(self, directory, run):
        pass


def test_methods_register_last_and_see_every_other_component():
    import functools

    class Plugin:
        @hookimpl
        def register_methods(self, register, registry):
            for name in registry.names("generator"):
                register(f"m-{name}", functools.partial(_Method, generator=name), aliases=(f"alias-{name}",))

        @hookimpl
        def register_generators(self, register):  # called before the methods hook, whatever the order here
            register("late", MeanPromptForTests)

    registry = load_registry([Plugin()], entry_points=False)
    assert registry.names("method") == ["m-late"]
    assert registry.get("method", "alias-late").name == "m-late" and registry.canonical("method", "alias-late") == "m-late"
    assert registry.get("method", "m-late").options["generator"].default == "late"
    assert "method" in KINDS and KINDS[-1] == "method"


def test_a_method_hook_without_the_registry_argument_is_fine_and_aliases_clash_like_names():
    class One:
        @hookimpl
        def register_methods(self, register):
            register("one", _Method, aliases=("shared",))

    class Two:
        @hookimpl
        def register_methods(self, register):
            register("two", _Method, aliases=("shared",))

    assert load_registry([One()], entry_points=False).canonical("method", "shared") == "one"
    with pytest.raises(DuplicateComponentError, match="method 'shared' is registered by two plugins: 'One' and 'Two'"):
        load_registry([One(), Two()], entry_points=False)


def test_plugins_command_lists_methods_with_their_aliases(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "method          spg-cgan (= spg)" in out and "method          zero-shot" in out


class MeanPromptForTests:
    """A generator double with the protocol's methods."""

    def __init__(self, feature_dim, n_ctx, ctx_dim):
        pass

    def fit(self, backbone, train, prompt_labels, val):
        pass

    def sample(self, features):
        return features

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


ODD_PLUGIN = '''
from promptgen import hookimpl


class Odd:
    def __init__(self, must_have):  # an option without a default, that no test would ever pass
        self.must_have = must_have


@hookimpl
def register_generators(register):
    register("aaa-odd", Odd)


@hookimpl
def register_prompt_learners(register):
    register("coop", Odd)  # the name of a built-in
'''


@pytest.mark.slow
def test_an_installed_third_party_plugin_changes_nothing_in_the_test_suite(tmp_path):
    """A plugin installed in the environment (here: odd on purpose: a built-in's name, an option without a
    default) is visible to users but not to the tests, which build their registry from promptgen's own plugins
    and the ones they install themselves: the engine tests pass beside it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    site = tmp_path / "site"
    (site / "odd_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "odd_plugin.py").write_text(ODD_PLUGIN)
    (site / "odd_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: odd-plugin\nVersion: 0.1\n")
    (site / "odd_plugin-0.1.dist-info" / "entry_points.txt").write_text("[promptgen]\nodd = odd_plugin\n")
    (site / "odd_plugin-0.1.dist-info" / "INSTALLER").write_text("pip\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    seen = subprocess.run([sys.executable, "-m", "promptgen", "plugins"], env=env, capture_output=True, text=True)
    assert "odd" in seen.stdout + seen.stderr  # users see it (here: as a name conflict)
    root = Path(__file__).parent.parent
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            str(root / "tests" / "test_engine.py")], env=env, capture_output=True, text=True, cwd=root)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]


def test_a_lazy_factory_imports_its_target_only_when_used(tmp_path, monkeypatch):
    import pickle

    from promptgen import lazy
    from promptgen.errors import PluginError

    (tmp_path / "pg_lazy_target.py").write_text(
        'IMPORTS = []\nIMPORTS.append(1)\n\n\nclass Thing:\n    """A thing: made on demand.\n\n    More text."""\n\n'
        '    presets = {"cpu": {"size": 2}}\n\n    def __init__(self, size: int = 1, colour: str = "red"):\n'
        '        self.size, self.colour = size, colour\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "pg_lazy_target", raising=False)
    factory = lazy("pg_lazy_target:Thing", colour="blue")
    factory.rank = 7
    registry = load_registry(entry_points=False)
    registry._add("dataset", "thing", factory, "test")
    component = registry.get("dataset", "thing")
    assert component.description == "A thing: made on demand." and factory.rank == 7
    assert "pg_lazy_target" not in sys.modules  # described, named and ranked without importing it
    assert set(component.options) == {"size", "colour"} and component.options["colour"].default == "blue"
    assert "pg_lazy_target" in sys.modules  # options need the signature: now it is imported
    assert factory.presets == {"cpu": {"size": 2}}  # what the class declares, through the reference
    built = pickle.loads(pickle.dumps(factory))(size=3)  # pickles by name, with its keywords and attributes
    assert (built.size, built.colour) == (3, "blue") and pickle.loads(pickle.dumps(factory)).rank == 7
    with pytest.raises(PluginError, match="pg_lazy_target:Missing.*cannot be loaded"):
        lazy("pg_lazy_target:Missing")()
    with pytest.raises(PluginError, match="expected 'package.module:Attribute'"):
        lazy("no_colon")


def test_every_builtin_plugin_registers_without_importing_torch():
    code = ("import sys\nfrom promptgen.components.registry import load_registry\nregistry = load_registry(strict=True)\n"
            "assert len(list(registry)) > 30\nprint(sorted(m for m in ('torch', 'open_clip') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr[-2000:]


def test_every_plugin_facing_name_is_importable_from_promptgen_toolkit():
    """docs/plugins.md's one documented place: each name resolves, the table there lists them all, and importing
    the module itself loads no torch."""
    import subprocess
    import sys
    from pathlib import Path

    import promptgen.toolkit as toolkit

    documented = (Path(__file__).parent.parent / "docs" / "plugins.md").read_text()
    for name in toolkit.__all__:
        assert getattr(toolkit, name) is not None
        assert f"`{name}`" in documented, f"{name} is exported but docs/plugins.md does not list it"
    with pytest.raises(AttributeError, match="plugin-facing names"):
        toolkit.no_such_name  # noqa: B018
    # a name the toolkit gave before says where it went, in one line (a plugin written for an older promptgen)
    for old, new_home in (("resolve", "renamed load_factory"), ("loop_settings", "renamed loop_arguments"),
                          ("SCHEDULES", "renamed LR_SCHEDULES"), ("resolve_device", "renamed choose_device"),
                          ("FeatureCache", "import it from promptgen.storage.cache"),
                          ("BackboneConfig", "import it from promptgen.runs.config")):
        with pytest.raises(AttributeError, match=rf"^promptgen\.toolkit\.{old}: .*{new_home}"):
            getattr(toolkit, old)
    from promptgen.storage.cache import FeatureCache  # noqa: F401  (the homes named are real)
    from promptgen.runs.config import BackboneConfig  # noqa: F401
    assert {"load_factory", "loop_arguments", "LR_SCHEDULES", "choose_device"} <= set(toolkit.__all__)
    code = "import sys, promptgen.toolkit; from promptgen.toolkit import option; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_every_kind_has_its_hook_and_every_register_hook_a_kind():
    """promptgen.components.kinds is the one table of kinds: each row's hook is a hook specification taking
    ``register``, and every ``register_*`` specification is a row's."""
    import inspect

    from promptgen.components import hookspecs, kinds, protocols

    specified = {name for name, value in vars(hookspecs).items() if name.startswith("register_") and callable(value)}
    assert {kind.hook for kind in kinds.COMPONENT_KINDS} == specified
    for kind in kinds.COMPONENT_KINDS:
        assert "register" in inspect.signature(getattr(hookspecs, kind.hook)).parameters
        assert getattr(protocols, kind.protocol.__name__) is kind.protocol
        doc = getattr(hookspecs, kind.hook).__doc__  # the contract names what the factory gets besides options
        assert all(f"{argument}=..." in doc for argument in kind.hook_arguments), kind
    assert kinds.KINDS == KINDS and KINDS[-1] == "method"
