"""DPSPG as a plugin: the negative prompt learner, the transformer generator, the dual-path methods, their
files and their bad inputs."""

from __future__ import annotations

import json

import pytest
import torch

from promptgen import cli
from promptgen.config import RunConfig
from promptgen.engine import evaluate_run, run
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


def test_the_negative_learner_lowers_its_loss_and_scores_by_the_class_it_matches_least(tiny_backbone):
    """A toy problem: each image feature is its class's text feature plus noise. The BCE against the
    complementary labels falls; whether the learned context then ranks the true class *last* depends on
    the text encoder understanding "without" (a shared context shifts every class's logit alike), which
    random weights do not: that is measured in the notes, not asserted here."""
    from promptgen_dpspg.negative import NegativeCoOp

    classes = ["cat", "dog", "bird", "fish", "frog"]
    g = torch.Generator().manual_seed(0)
    text = tiny_backbone.encode_text([f"a photo of a {name}." for name in classes])
    labels = torch.arange(200) % len(classes)
    features = torch.nn.functional.normalize(text[labels] + 0.05 * torch.randn(200, text.shape[1], generator=g), dim=1)
    train = FeatureSet(features, labels, torch.zeros(200, dtype=torch.long))
    label = NegativeCoOp(epochs=6, warmup_epochs=0, lr=0.2, progress=False).fit(tiny_backbone, classes, train, None,
                                                                               "toy")
    history = label.metadata["history"]
    assert history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    assert label.metadata["config"]["n_ctx"] == label.n_ctx == 4  # "a photo without a"
    # the score: the class whose "not" logit is lowest is the prediction
    logits = torch.tensor([[3.0, -1.0, 2.0], [0.5, 1.0, -2.0]])
    assert NegativeCoOp.score(logits, torch.tensor([1, 2])) == 1.0
    assert NegativeCoOp.score(logits, torch.tensor([0, 0])) == 0.0


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
