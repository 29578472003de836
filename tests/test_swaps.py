"""Swapping components with confidence: hypothesis draws a combination of registered components — backbone,
prompt learner, generator (a third-party one included, installed through its entry point), dataset, n_ctx,
batch size, precision — runs the whole pipeline for a few steps and checks the contracts between them."""

from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from promptgen.toolkit.checkpoints import load_generator, save_generator
from promptgen.toolkit.data import extract_features
from promptgen.toolkit.evaluate import instance_logits
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.components.registry import create, load_registry

pytestmark = pytest.mark.slow  # each hypothesis search runs the whole pipeline many times: a minute, not seconds

# A third-party generator, installed the way pip would: least squares from the feature to the prompt.
LINEAR_PLUGIN = '''
import torch
from promptgen import hookimpl


class LinearGenerator:
    """Least squares from the image feature to its domain's prompt label (a third-party test plugin)."""

    def __init__(self, feature_dim, n_ctx, ctx_dim, ridge=1e-3, **options):
        self.shape, self.ridge = (n_ctx, ctx_dim), ridge
        self.weight = torch.zeros(feature_dim + 1, n_ctx * ctx_dim)

    def fit(self, backbone, train, prompt_labels, val):
        x = torch.cat([train.features.float().cpu(), torch.ones(len(train), 1)], dim=1)
        y = torch.stack([label.ctx for label in prompt_labels]).float().reshape(len(prompt_labels), -1)
        y = y[train.domain_ids.cpu()]
        gram = x.T @ x + self.ridge * torch.eye(x.shape[1])
        self.weight = torch.linalg.solve(gram, x.T @ y)
        return {}

    def sample(self, features):
        x = torch.cat([features.float().cpu(), torch.ones(len(features), 1)], dim=1)
        return (x @ self.weight).view(len(features), *self.shape)

    def state_dict(self):
        return {"weight": self.weight}

    def load_state_dict(self, state):
        self.weight = state["weight"].clone()


@hookimpl
def register_generators(register):
    register("linear", LinearGenerator)
'''

BACKBONES = {
    "pg-tiny-vit-w64": dict(name="openclip", model="pg-tiny-vit-w64", init_seed=0),
    "pg-tiny-vit-w128": dict(name="openclip", model="pg-tiny-vit-w128", init_seed=1),
    "tiny-clip-digits": dict(name="tiny-clip-digits"),
}


@functools.cache
def _backbone(key: str, precision: str):
    options = dict(BACKBONES[key])
    return create("backbone", options.pop("name"), device="cpu", precision=precision, **options)


@functools.cache
def _features(backbone_key: str, precision: str, dataset_name: str, per_domain: int):
    """Train and val features of a dataset's first two domains (a few images per domain) and the test features
    of its third."""
    backbone, dataset = _backbone(backbone_key, precision), create("dataset", dataset_name)
    sources, target = dataset.domains[:2], dataset.domains[2]

    def take(domains, split, count):
        return [s for d in domains for s in dataset.samples(d, split)[:: max(1, len(dataset.samples(d, split)) // count)][:count]]

    out = {split: extract_features(backbone, dataset, take(domains, split, per_domain), progress=False)
           for split, domains in (("train", sources), ("val", sources), ("test", [target]))}
    return dataset.classes, out


def _declared(registry, kind: str, name: str, **wanted) -> dict:
    """The ``wanted`` options that component ``name`` declares: an installed third-party component is given no
    option it never promised (its hook's arguments are all it can count on)."""
    declared = registry.get(kind, name).options
    return {key: value for key, value in wanted.items() if key in declared}


def test_any_combination_of_components_keeps_the_contracts(install_plugin, tmp_path):
    install_plugin("promptgen_linear_generator", LINEAR_PLUGIN)
    registry = load_registry()
    generators = registry.names("generator")
    assert "linear" in generators and {"cgan", "cvae", "diffusion"} <= set(generators)

    @settings(max_examples=20, deadline=None)
    @given(data=st.data())
    def run_pipeline(data):
        _check_pipeline(registry, generators, data, tmp_path)

    run_pipeline()


def _check_pipeline(registry, generators, data, tmp_path):
    backbone_key = data.draw(st.sampled_from(sorted(BACKBONES)), label="backbone")
    precision = data.draw(st.sampled_from(["fp32", "bf16"]), label="precision")
    dataset_name = data.draw(st.sampled_from(["colors", "digits-dg"]), label="dataset")
    learner_name = data.draw(st.sampled_from(registry.names("prompt_learner")), label="prompt learner")
    generator_name = data.draw(st.sampled_from(generators), label="generator")
    n_ctx = data.draw(st.integers(1, 4), label="n_ctx")
    batch_size = data.draw(st.integers(2, 16), label="batch size")

    backbone = _backbone(backbone_key, precision)
    classes, features = _features(backbone_key, precision, dataset_name, 12)
    domain_ids = features["train"].domain_ids.unique().tolist()

    # stage I: a prompt label per source domain, in the backbone's token-embedding space
    labels = []
    for domain_id in domain_ids:
        keep = features["train"].domain_ids == domain_id
        part = type(features["train"])(*(t[keep] for t in (features["train"].features, features["train"].labels,
                                                           features["train"].domain_ids)))
        options = _declared(registry, "prompt_learner", learner_name, epochs=1, batch_size=batch_size, progress=False)
        if "n_ctx" in registry.get("prompt_learner", learner_name).options:  # learned from scratch: n_ctx vectors
            options.update(ctx_init=None, n_ctx=n_ctx)
        label = registry.create("prompt_learner", learner_name, **options).fit(backbone, classes, part, None,
                                                                              str(domain_id))
        assert label.ctx.shape[1] == backbone.ctx_dim and torch.isfinite(label.ctx).all()
        assert label.fingerprint == backbone.fingerprint and tuple(label.class_names) == tuple(classes)
        labels.append(label)
    n = labels[0].n_ctx
    if "n_ctx" in options:  # a learner without an init phrase learns n_ctx vectors
        assert n == n_ctx
    else:  # the hand-written prompt: one vector per token of "a photo of a"
        assert n == int(backbone.tokenize(["a photo of a"]).eot_index[0]) - 1 == 4

    # stage II: the generator, a few steps
    remap = torch.full((max(domain_ids) + 1,), -1, dtype=torch.long)
    remap[torch.tensor(domain_ids)] = torch.arange(len(domain_ids))
    train = type(features["train"])(features["train"].features, features["train"].labels,
                                     remap[features["train"].domain_ids])
    options = {"feature_dim": backbone.embed_dim, "n_ctx": n, "ctx_dim": backbone.ctx_dim, "seed": 0}
    extra = _declared(registry, "generator", generator_name, epochs=1, batch_size=batch_size, progress=False)
    generator = registry.create("generator", generator_name, **options, **extra)
    generator.fit(backbone, train, labels, None)

    # test: one prompt per image, shaped like the labels, and finite logits over every class
    prompts = generator.sample(features["test"].features)
    assert prompts.shape == (len(features["test"]), n, backbone.ctx_dim) and torch.isfinite(prompts).all()
    assembler = PromptAssembler(backbone, classes, n)
    logits = instance_logits(backbone, assembler, generator, features["test"].features)
    assert logits.shape == (len(features["test"]), len(classes)) and torch.isfinite(logits).all()

    # save and load: the same predictions
    save_generator(generator, generator_name, {**options, **extra}, tmp_path / "generator")
    loaded, _, _ = load_generator(tmp_path / "generator", registry)
    assert torch.equal(instance_logits(backbone, assembler, loaded, features["test"].features), logits)


def _cheap_overrides(registry, method: str, batch_size: int, backbone: dict) -> dict:
    """One epoch and a drawn batch size, for the method and each of its components, but only where the
    component declares the option: a component is given no option it never promised."""
    from promptgen.runs.config import RunConfig
    from promptgen.runs.engine import check

    checked = check(RunConfig(targets="-", method=method, backbone=backbone), registry)
    overrides = {}
    for kind, name in (("method", checked.method_name), *checked.components):
        values = _declared(registry, kind, name, epochs=1, warmup_epochs=0, batch_size=batch_size)
        if values:
            overrides[registry.get(kind, name).name] = values
    return overrides


METHOD_BACKBONES = {"tiny-clip-digits": {"device": "cpu"},
                    "pg-tiny-vit-w64": {"name": "openclip", "model": "pg-tiny-vit-w64", "device": "cpu"}}


def test_any_method_on_any_backbone_and_dataset_trains_scores_and_reloads(install_plugin, tmp_path):
    """Methods are swapped like components: hypothesis draws a registered method (a third-party generator's
    spg-<name> included), a backbone it runs on, a dataset and a batch size; the run's scores are accuracies and
    the run directory re-evaluates to the same numbers."""
    from promptgen.runs.config import BackboneConfig, RunConfig
    from promptgen.runs.engine import evaluate_run, run, unsupported

    install_plugin("promptgen_linear_generator", LINEAR_PLUGIN)
    registry = load_registry()
    assert "spg-linear" in registry.names("method")

    @settings(max_examples=12, deadline=None)
    @given(data=st.data())
    def run_method(data):
        backbone = data.draw(st.sampled_from(sorted(METHOD_BACKBONES)), label="backbone")
        runnable = [m for m in registry.names("method")
                    if not unsupported(registry.get("method", m).factory, BackboneConfig(**METHOD_BACKBONES[backbone]))]
        method = data.draw(st.sampled_from(runnable), label="method")
        dataset = data.draw(st.sampled_from(["colors", "digits-dg"]), label="dataset")
        batch_size = data.draw(st.integers(4, 16), label="batch size")
        target = registry.create("dataset", dataset).domains[-1]
        config = RunConfig(targets=target, dataset=dataset, method=method, preset="cpu", views=1,
                           backbone=METHOD_BACKBONES[backbone], cache_dir=str(tmp_path / "cache"),
                           overrides={dataset: {"per_class": 5},
                                      **_cheap_overrides(registry, method, batch_size, METHOD_BACKBONES[backbone])})
        out = tmp_path / "runs" / f"{method}-{backbone}-{dataset}-{batch_size}"
        metrics = run(config, out, registry=registry, progress=False, force=True)
        accuracy = metrics["test_accuracy"][target]
        assert 0 <= accuracy <= 1 and 0 <= metrics["val_accuracy"] <= 1
        again = evaluate_run(out, registry=registry, progress=False)
        assert again["test_accuracy"][target] == accuracy and again["val_accuracy"] == metrics["val_accuracy"]

    run_method()
