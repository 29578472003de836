"""Methods are plugins: every registered method (and so every generator, through SPG) trains a run with the
cpu preset's values and with the gpu preset's values (on the CPU), and the core names no built-in plugin."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from promptgen.config import BackboneConfig, RunConfig
from promptgen.context import RunContext
from promptgen.engine import check, run, unsupported
from promptgen.registry import load_registry

ROOT = Path(__file__).parents[1]
REGISTRY = load_registry()
METHODS = REGISTRY.names("method")
TINY = {"digits-dg": {"per_class": 5}}  # 3 train, 1 val, 1 test image per class and domain


def _config(method: str, preset: str, **overrides) -> RunConfig:
    backbone = {"device": "cpu"}
    if unsupported(REGISTRY.get("method", method).factory, BackboneConfig(**backbone)):
        backbone.update(name="openclip", model="pg-tiny-vit-w64")  # e.g. a ViT-only method: a ViT with random weights
    return RunConfig(targets="photo", method=method, preset=preset, backbone=backbone,
                     overrides={**TINY, **overrides})


def test_every_generator_has_an_spg_method():
    assert {f"spg-{name}" for name in REGISTRY.names("generator")} <= set(METHODS)
    assert REGISTRY.canonical("method", "spg") == "spg-cgan"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_with_the_cpu_preset(tmp_path, method):
    metrics = run(_config(method, "cpu"), tmp_path, registry=REGISTRY, progress=False)
    assert metrics["preset"] == "cpu" and 0 <= metrics["test_accuracy"]["photo"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_with_the_gpu_preset_values_on_the_cpu(tmp_path, method):
    """The gpu preset's values (the official epochs, batch sizes, clipping) with the device overridden."""
    for dataset_preset in ("digits-dg", "pacs"):
        checked = check(_config(method, "gpu"), REGISTRY)  # pacs's entries (the CGAN's clipping) must check too
        assert checked.preset == "gpu"
    # every component's gpu values (epochs, batch sizes, clipping); 2 views, not the gpu's 8, so that
    # fifty epochs of CoCoOp's B x C prompts per step stay under a minute on 2 cores
    config = attrs.evolve(_config(method, "gpu"), views=2)
    metrics = run(config, tmp_path, registry=REGISTRY, progress=False)
    assert metrics["preset"] == "gpu" and 0 <= metrics["test_accuracy"]["photo"] <= 1


def test_each_component_gets_only_its_own_options(tmp_path, monkeypatch):
    """The preset and overrides of one generator never reach another (the gpu preset crashed cvae and diffusion
    with the CGAN's grad_clip)."""
    seen = {}
    create = RunContext.create

    def spy(self, kind, name, **arguments):
        seen[(kind, name)] = self.options(kind, name)
        return create(self, kind, name, **arguments)

    monkeypatch.setattr(RunContext, "create", spy)
    overrides = {"cgan": {"epochs": 1, "grad_clip": "official"}, "cvae": {"epochs": 1, "warmup_epochs": 0},
                 "coop": {"epochs": 1, "warmup_epochs": 0}}
    run(_config("spg-cvae", "cpu", **overrides), tmp_path, registry=REGISTRY, progress=False)
    assert "grad_clip" not in seen[("generator", "cvae")] and seen[("generator", "cvae")]["epochs"] == 1
    assert set(seen[("generator", "cvae")]) <= set(REGISTRY.get("generator", "cvae").options)
    assert ("generator", "cgan") not in seen


def test_the_official_clipping_lives_in_the_cgan_plugin_and_the_gpu_preset_selects_it():
    from promptgen.context import resolve_options
    from promptgen_cgan.generator import OFFICIAL_CLIP, CGANGenerator

    assert resolve_options(REGISTRY, "generator", "cgan", "gpu", "pacs", {})["grad_clip"] == "official"
    assert "grad_clip" not in resolve_options(REGISTRY, "generator", "cgan", "gpu", "office-home", {})
    generator = CGANGenerator(feature_dim=8, n_ctx=1, ctx_dim=8, grad_clip="official", progress=False)
    assert generator.options["grad_clip"] == OFFICIAL_CLIP


def _builtin_names() -> set[str]:
    """Names of the components and modules the built-in plugins (this distribution's entry points) provide."""
    import importlib.metadata

    modules = {ep.value for ep in importlib.metadata.entry_points(group="promptgen")
               if ep.dist is not None and ep.dist.name == "promptgen"}
    names = {c.name for c in REGISTRY if c.plugin in {ep.name for ep in importlib.metadata.entry_points(
        group="promptgen") if ep.value in modules}}
    return names | {alias for c in REGISTRY for alias in c.aliases if c.name in names} | modules


def test_the_core_names_no_built_in_plugin_except_its_documented_defaults():
    names = _builtin_names()
    assert {"cgan", "coop", "zeroshot", "zero-shot", "spg", "digits-dg", "promptgen_cgan"} <= names
    pattern = re.compile(r"""["'](%s)["']|\b(%s)\b""" % (
        "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)),
        "|".join(re.escape(m) for m in sorted(n for n in names if n.startswith("promptgen_")))))
    allowed = {ROOT / "promptgen" / "defaults.py"}
    offenders = []
    for path in sorted([*(ROOT / "promptgen").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        if path in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "the core names built-in plugins:\n" + "\n".join(offenders)
