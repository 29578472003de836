"""Methods are plugins: every registered method (and so every generator, through SPG) trains a run with the
cpu preset's values and with the gpu preset's values (on the CPU), and the core names no built-in plugin."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from promptgen.runs.config import BackboneConfig, RunConfig
from promptgen.runs.context import RunContext
from promptgen.runs.engine import check, run, unsupported
from promptgen.components.registry import load_registry

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


# linear-probe (the cheapest, under a second) stays in the quick selection; every other method is slow
@pytest.mark.parametrize("method", [m if m == "linear-probe" else pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS])
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


@pytest.mark.slow
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


def test_the_official_clipping_lives_in_the_cgan_plugin_and_the_gpu_preset_selects_it_on_every_dataset():
    """docs/parity.md rows 3, 5, 2 and 11: the released scripts' argparse limits on every dataset, lr 2e-3
    everywhere, the normalised condition and AdamW's default betas."""
    from promptgen.components.resolve import Settings, set_options
    from promptgen_cgan.generator import OFFICIAL_CLIP, CGANGenerator

    for dataset in ("pacs", "vlcs", "office-home", "terra-incognita", "domainnet", "digits-dg"):
        options = set_options(REGISTRY, "generator", "cgan", Settings("gpu", dataset, {}))
        assert (options["grad_clip"], options["lr"], options["condition"], tuple(options["betas"]), options["update"],
                options["init"]) == ("official", 2e-3, "normalised", (0.9, 0.999), "d-first", "kaiming")
    cpu = set_options(REGISTRY, "generator", "cgan", Settings("cpu", "digits-dg", {}))
    assert "grad_clip" not in cpu and "condition" not in cpu and "betas" not in cpu  # the defaults: departures
    # train.py:274-279 (argparse defaults: what every released script runs)
    assert OFFICIAL_CLIP == {"d_weight": 5e-2, "d_bias": 5e-1, "d_last": 5.0, "g_weight": 5e-3, "g_bias": 5e-8,
                             "g_bias_last": 1.0}
    generator = CGANGenerator(8, 1, 8, CGANGenerator.Options(grad_clip="official", progress=False))
    assert generator.options.grad_clip == OFFICIAL_CLIP


def test_the_clipped_parameters_and_their_limits_are_the_official_name_matching():
    """spg_cgan.py:208-227 and 242-261 applied to the official networks' nn.Sequential indices, written out by
    hand from the official module lists (docs/parity.md row 3): BatchNorm parameters are clipped, the
    discriminator's first Linear takes the 'last' limit through its '0.weight' match."""
    from promptgen_cgan.generator import OFFICIAL_CLIP, CGANGenerator, clip_limits

    cgan = CGANGenerator(512, 4, 512, CGANGenerator.Options(progress=False))
    d, g = OFFICIAL_CLIP, OFFICIAL_CLIP
    assert clip_limits(cgan.discriminator, "d", OFFICIAL_CLIP) == {
        "net.0.weight": d["d_last"], "net.0.bias": d["d_last"], "net.2.weight": d["d_weight"],
        "net.2.bias": d["d_bias"], "net.5.weight": d["d_weight"], "net.5.bias": d["d_bias"],
        "net.8.weight": d["d_last"], "net.8.bias": d["d_last"]}
    expected = {f"net.{i}.weight": g["g_weight"] for i in (0, 2, 3, 5, 6, 8, 9, 11)}  # Linear and BatchNorm
    expected.update({f"net.{i}.bias": g["g_bias"] for i in (0, 2, 3, 5, 6, 8)})
    expected.update({"net.9.bias": g["g_bias_last"], "net.11.bias": g["g_bias_last"]})
    assert clip_limits(cgan.generator, "g", OFFICIAL_CLIP) == expected
    assert [type(cgan.generator.net[i]).__name__ for i in (3, 6, 9, 11)] == ["BatchNorm1d"] * 3 + ["Linear"]
    assert clip_limits(cgan.generator, "g", {"g_weight": 1.0}) == {k: 1.0 for k in expected if k.endswith("weight")}


def _cgan_step(update: str):
    """One training step of a small CGAN, recording the discriminator's last-layer weights at each of its calls."""
    import torch

    from promptgen.values import FeatureSet, PromptLabel
    from promptgen_cgan.generator import CGANGenerator

    class Backbone:
        device = torch.device("cpu")

    cgan = CGANGenerator(8, 2, 4, CGANGenerator.Options(batch_size=4, update=update, init="kaiming", progress=False))
    train = FeatureSet(torch.nn.functional.normalize(torch.randn(8, 8), dim=1), torch.zeros(8, dtype=torch.long),
                       torch.tensor([0, 1] * 4))
    labels = [PromptLabel(torch.randn(2, 4) * 0.1, "fp", domain, ("a", "b")) for domain in ("x", "y")]
    trainer = cgan.trainer(Backbone(), train, labels)
    seen = []
    cgan.discriminator.register_forward_hook(lambda module, args, out: seen.append(module.net[8].weight.clone()))
    trainer.step(torch.arange(4), torch.Generator().manual_seed(0))
    return seen, cgan.discriminator.net[8].weight.detach()


@pytest.mark.slow
def test_d_first_the_generators_loss_sees_the_discriminator_after_its_step():
    """docs/parity.md row 4: spg_cgan.py:179-263 steps D on real + fake, then G against the updated D."""
    import torch

    seen, final = _cgan_step("d-first")
    assert len(seen) == 3 and torch.equal(seen[0], seen[1])  # D's real and fake calls, before its step
    assert not torch.equal(seen[2], seen[0]) and torch.equal(seen[2], final)  # G's call: D after its step
    seen, final = _cgan_step("g-first")  # promptgen's earlier order: G against D before D's step
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[1], seen[2]) and not torch.equal(seen[0], final)


def test_kaiming_init_is_the_official_one_on_both_networks():
    """docs/parity.md row 6: kaiming_uniform_(fan_in, leaky_relu, a=0): U(+-sqrt(6 / fan_in)); biases PyTorch's
    default U(+-1 / sqrt(fan_in)), not zero."""
    import math

    import torch

    from promptgen.components.resolve import Settings, set_options
    from promptgen_cgan.generator import CGANGenerator

    gpu = set_options(REGISTRY, "generator", "cgan", Settings("gpu", "pacs", {}))
    assert (gpu["update"], gpu["init"]) == ("d-first", "kaiming")
    official = CGANGenerator(512, 4, 512, CGANGenerator.Options(init="kaiming", progress=False))
    earlier = CGANGenerator(512, 4, 512, CGANGenerator.Options(init="gan", progress=False))
    for net in (official.generator, official.discriminator):
        for layer in (m for m in net.modules() if isinstance(m, torch.nn.Linear)):
            bound = math.sqrt(6 / layer.in_features)
            assert layer.weight.abs().max() <= bound
            if layer.weight.numel() > 10_000:
                assert layer.weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
            assert layer.bias.abs().max() <= 1 / math.sqrt(layer.in_features) and layer.bias.abs().max() > 0
    ratio = official.discriminator.net[2].weight.std() / earlier.discriminator.net[2].weight.std()
    assert ratio.item() == pytest.approx(math.sqrt(6), rel=0.05)  # the earlier D started 2.45x smaller


def test_the_normalised_condition_feeds_the_unit_feature_and_the_scaled_one_sqrt_d_times_it():
    import torch

    from promptgen_cgan.networks import conditioned

    features = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    assert torch.equal(conditioned(features, "normalised"), features)
    assert torch.allclose(conditioned(features, "scaled"), 4.0 * features)


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
    allowed = {ROOT / "promptgen" / "runs" / "defaults.py"}
    offenders = []
    for path in sorted([*(ROOT / "promptgen").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]):
        if path in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "the core names built-in plugins:\n" + "\n".join(offenders)
