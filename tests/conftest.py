"""Shared fixtures: tiny random-weight backbones and a way to install a plugin through a real entry point."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from promptgen_openclip.backbone import OpenClipBackbone


TEST_INSTALLER = "promptgen-tests"  # the INSTALLER of the distributions install_plugin writes


def pytest_configure(config):
    """The suite sees promptgen's own plugins and those its tests install, never the environment's: a third-party
    plugin someone installed can neither break a test nor change what it checks. (Before collection: some test
    modules build a registry when imported.)"""
    import promptgen.components.registry as registry

    everything = registry._entry_points

    def ours():
        return [ep for ep in everything() if ep.dist is not None and (
            ep.dist.name == "promptgen" or (ep.dist.read_text("INSTALLER") or "").strip() == TEST_INSTALLER)]

    registry._entry_points = ours
    registry.default_registry.cache_clear()


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    """Generated data and caches go to a temporary directory, never the user's cache."""
    path = tmp_path_factory.mktemp("promptgen-cache")
    previous = os.environ.get("PROMPTGEN_CACHE_DIR")
    os.environ["PROMPTGEN_CACHE_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("PROMPTGEN_CACHE_DIR")
    else:
        os.environ["PROMPTGEN_CACHE_DIR"] = previous


# digits-dg at 10 images per class and domain (6 train, 2 val, 2 test): runs of any method in seconds
SMALL_DIGITS = {"digits-dg": {"per_class": 10}}


@pytest.fixture(scope="session")
def tiny_backbone() -> OpenClipBackbone:
    return OpenClipBackbone("pg-tiny-vit-w64", device="cpu", options=OpenClipBackbone.Options(init_seed=0))


@pytest.fixture(scope="session")
def tiny_backbone_wide() -> OpenClipBackbone:
    return OpenClipBackbone("pg-tiny-vit-w128", device="cpu", options=OpenClipBackbone.Options(init_seed=1))


def stub_generator_plugin(name: str, options: str, *, imports: str = "", presets: dict | None = None) -> str:
    """The source of a plugin registering generator ``name``: a class that satisfies the Generator protocol and
    does nothing, whose ``__init__`` takes the hook's arguments and ``options`` (parameter source, e.g.
    ``"lr: float = 1e-3"``); for install_plugin, where a test is about a generator's declared options."""
    return textwrap.dedent('''
        from promptgen import hookimpl
        {imports}


        class Stub:
            presets = {presets!r}

            def __init__(self, feature_dim, n_ctx, ctx_dim, {options}):
                pass

            def fit(self, backbone, train, prompt_labels, val):
                return None

            def sample(self, features):
                raise NotImplementedError

            def state_dict(self):
                return {{}}

            def load_state_dict(self, state):
                pass


        @hookimpl
        def register_generators(register):
            register({name!r}, Stub)
        ''').format(name=name, options=options, imports=imports, presets=presets or {})


@pytest.fixture
def install_plugin(tmp_path, monkeypatch, request):
    """install_plugin(module_name, source, entry_point=None): a package with a *.dist-info on sys.path
    (``install_plugin.site``: that directory, for a subprocess's PYTHONPATH).

    Exactly what pip leaves behind for a plugin distribution: importlib.metadata finds the entry
    point in the 'promptgen' group, so loading goes through the real discovery path.
    """
    from promptgen.components.registry import default_registry

    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    # Commands load the installed plugins once per process: forget them now and after the test.
    default_registry.cache_clear()
    request.addfinalizer(default_registry.cache_clear)

    def install(module_name: str, source: str, entry_point: str | None = None) -> str:
        (site / f"{module_name}.py").write_text(textwrap.dedent(source))
        # Wheels name the folder <name with underscores>-<version>: importlib.metadata reads the name up to
        # the first '-', so 'pg-x-0.1.dist-info' would pass for a distribution called 'pg'.
        dist = site / f"{module_name}-0.1.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module_name.replace('_', '-')}\nVersion: 0.1\n")
        (dist / "entry_points.txt").write_text(f"[promptgen]\n{entry_point or module_name} = {module_name}\n")
        (dist / "INSTALLER").write_text(TEST_INSTALLER + "\n")  # pip writes "pip" here; ours marks the tests' own
        request.addfinalizer(lambda: sys.modules.pop(module_name, None))
        default_registry.cache_clear()
        return entry_point or module_name

    install.site = site  # for a subprocess: its PYTHONPATH
    return install
