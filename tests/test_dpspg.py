"""DPSPG as a plugin: the negative prompt learner, the transformer generator, the dual-path methods, their
files and their bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from promptgen import cli
from promptgen.config import RunConfig
from promptgen.engine import evaluate_run, run
from promptgen.evaluate import prompt_logits
from promptgen.prompts import PromptAssembler, phrase_embedding
from promptgen.registry import load_registry
from promptgen.values import FeatureSet

REGISTRY = load_registry()
SMALL = {"digits-dg": {"per_class": 10}, "coop": {"epochs": 2}, "negative-coop": {"epochs": 2},
         "transformer": {"epochs": 2}, "cgan": {"epochs": 2}}


def _config(method: str, **overrides) -> RunConfig:
    return RunConfig(targets="photo", method=method, preset="cpu", views=1, backbone={"device": "cpu"},
                     overrides={**SMALL, **overrides})


def test_the_plugin_registers_its_parts_through_the_hooks():
    assert {"dpspg", "dpspg-positive", "spg-cgan+neg", "spg-cvae+neg", "spg-transformer"} <= set(REGISTRY.names("method"))
    assert REGISTRY.canonical("method", "spg-transformer+neg") == "dpspg"
    assert REGISTRY.get("prompt_learner", "negative-coop").plugin == "dpspg"
    assert REGISTRY.get("generator", "transformer").plugin == "dpspg"


def test_the_negative_learner_learns_to_rank_the_true_class_last_on_a_toy_problem(tiny_backbone):
    """A toy problem: each image feature is its class's text feature plus noise, so the initial
    "a photo without a" ranks the true class *first* (a random text encoder does not know "without").
    The BCE against the complementary labels must fall and the learned context must rank the true class
    last on images it never saw (chance: 1 in 5). It takes a small step and many epochs: with lr 0.02 the
    context only shifts every logit alike (measured: the argmin accuracy stays at 0.00-0.21)."""
    from promptgen_dpspg.negative import NegativeCoOp

    classes = ["cat", "dog", "bird", "fish", "frog"]
    text = tiny_backbone.encode_text([f"a photo of a {name}." for name in classes])

    def images(n: int, seed: int) -> FeatureSet:
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % len(classes)
        noisy = text[labels] + 0.05 * torch.randn(n, text.shape[1], generator=g)
        return FeatureSet(torch.nn.functional.normalize(noisy, dim=1), labels, torch.zeros(n, dtype=torch.long))

    train, val, test = images(200, 0), images(200, 1), images(200, 2)
    learner = NegativeCoOp(epochs=40, warmup_epochs=0, lr=1e-3, progress=False)
    label = learner.fit(tiny_backbone, classes, train, val, "toy")
    history = label.metadata["history"]
    assert history[-1]["train_loss"] < 0.5 * history[0]["train_loss"]
    assert label.metadata["config"]["n_ctx"] == label.n_ctx == 4  # "a photo without a"
    assembler = PromptAssembler(tiny_backbone, classes, label.n_ctx)
    with torch.no_grad():
        logits = prompt_logits(tiny_backbone, assembler, label.ctx, test.features)
        initial = prompt_logits(tiny_backbone, assembler, phrase_embedding(tiny_backbone, "a photo without a"),
                                test.features)
    assert NegativeCoOp.score(initial, test.labels) < 0.2  # the untrained prompt ranks the true class first
    assert NegativeCoOp.score(logits, test.labels) > 0.5  # learned: last, 2.5x chance or better
    # the score: the class whose "not" logit is lowest is the prediction
    toy = torch.tensor([[3.0, -1.0, 2.0], [0.5, 1.0, -2.0]])
    assert NegativeCoOp.score(toy, torch.tensor([1, 2])) == 1.0
    assert NegativeCoOp.score(toy, torch.tensor([0, 0])) == 0.0


def test_dpspg_trains_saves_and_reloads_to_the_same_scores(tmp_path):
    out = tmp_path / "dpspg"
    metrics = run(_config("dpspg"), out, registry=REGISTRY, progress=False)
    assert (out / "prompt_labels_negative").is_dir() and (out / "generator_negative.safetensors").exists()
    again = evaluate_run(out, registry=REGISTRY)
    assert again["test_accuracy"] == metrics["test_accuracy"] and again["val_accuracy"] == metrics["val_accuracy"]
    history = json.loads((out / "history.json").read_text())
    assert {row["path"] for row in history} == {"positive", "negative"}


def test_the_negative_path_changes_the_scores_and_alpha_zero_removes_it(tmp_path):
    dual = run(_config("spg-cgan+neg", **{"spg-cgan+neg": {"alpha": 0.0}}), tmp_path / "a0",
               registry=REGISTRY, progress=False)
    positive = run(_config("spg-cgan"), tmp_path / "spg", registry=REGISTRY, progress=False)
    # alpha = 0: the negative path is trained but weighs nothing; the positive path is SPG's CGAN exactly
    assert dual["test_accuracy"] == positive["test_accuracy"]


@pytest.mark.parametrize("alpha", ["1.5", "-0.1"])
def test_alpha_outside_zero_one_is_refused_before_any_work(capsys, alpha):
    assert cli.main(["train", "--method", "dpspg", "--target", "photo", "--set", f"dpspg.alpha={alpha}"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "alpha must be a number in [0, 1]" in error[0] and "dpspg" in error[0]


def test_a_run_saved_without_negatives_is_named_when_a_dual_path_method_loads_it(tmp_path, capsys):
    out = tmp_path / "dpspg"
    run(_config("dpspg"), out, registry=REGISTRY, progress=False)
    import shutil

    shutil.rmtree(out / "prompt_labels_negative")
    assert cli.main(["evaluate", str(out)]) in (1, 2)
    error = capsys.readouterr().err
    assert str(out) in error and ("prompt_labels_negative" in error or "negative prompt labels" in error)
