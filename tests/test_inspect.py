"""promptgen.runs.inspect: where a prompt-generation run loses accuracy (labels, mapping, collapse)."""

from __future__ import annotations

import json

import pytest
import torch

from promptgen import cli
from promptgen.runs.inspect import COLLAPSE_RATIO, inspect_split, rms, verdict
from promptgen.toolkit.evaluate import prompt_logits
from promptgen.toolkit.prompts import PromptAssembler
from promptgen.values import FeatureSet, PromptLabel

CLASSES = ("zero", "one", "two")
SMALL = ["--set", "digits-dg.per_class=10", "--set", "spg-coop.epochs=1", "--set", "spg-coop.warmup_epochs=0",
         "--views", "1", "--quiet"]


def _toy(backbone, n: int = 12):
    """Two labels, n images: the first half's generated prompt is label a + 0.01, the second's label b - 0.01."""
    g = torch.Generator().manual_seed(0)
    shape = (2, backbone.ctx_dim)
    labels = [PromptLabel(ctx=torch.randn(*shape, generator=g) * 0.5, fingerprint=backbone.fingerprint, domain=d,
                          class_names=CLASSES) for d in ("a", "b")]
    features = torch.nn.functional.normalize(torch.randn(n, backbone.embed_dim, generator=g), dim=-1)
    targets = torch.arange(n) % len(CLASSES)
    feature_set = FeatureSet(features=features, labels=targets, domain_ids=torch.zeros(n, dtype=torch.long))
    half = n // 2
    prompts = torch.cat([labels[0].ctx.expand(half, *shape) + 0.01, labels[1].ctx.expand(n - half, *shape) - 0.01])
    return labels, feature_set, prompts


def test_the_figures_of_a_two_label_toy_by_hand(tiny_backbone):
    labels, features, prompts = _toy(tiny_backbone)
    drawn = torch.stack([prompts, prompts + 0.02])
    figures = inspect_split(tiny_backbone, CLASSES, labels, features, prompts, drawn)

    assembler = PromptAssembler(tiny_backbone, CLASSES, 2)
    right = [(prompt_logits(tiny_backbone, assembler, label.ctx, features.features).argmax(1) == features.labels)
             for label in labels]  # [2][N] which images each label gets right
    half = len(features.labels) // 2
    assert figures["labels"] == {"a": pytest.approx(right[0].float().mean().item()),
                                 "b": pytest.approx(right[1].float().mean().item())}
    # every prompt is nearest its own label: the first half reads label a, the second label b
    assert figures["nearest_share"] == {"a": 0.5, "b": 0.5}
    nearest = torch.cat([right[0][:half], right[1][half:]]).float().mean().item()
    assert figures["nearest_label"] == pytest.approx(nearest)
    assert figures["oracle_label"] == pytest.approx((right[0] | right[1]).float().mean().item())
    mean_right = prompt_logits(tiny_backbone, assembler, (labels[0].ctx + labels[1].ctx) / 2,
                               features.features).argmax(1) == features.labels
    assert figures["mean_label"] == pytest.approx(mean_right.float().mean().item())
    # distances: a prompt is 0.01 from its own label in every entry
    gap = rms(labels[0].ctx, labels[1].ctx).item()
    to_b_from_a = rms(labels[0].ctx + 0.01, labels[1].ctx).item()
    to_a_from_b = rms(labels[1].ctx - 0.01, labels[0].ctx).item()
    assert figures["distance_to_label"]["a"] == pytest.approx((0.01 + to_a_from_b) / 2, rel=1e-4)
    assert figures["distance_to_label"]["b"] == pytest.approx((to_b_from_a + 0.01) / 2, rel=1e-4)
    assert figures["distance_between_labels"] == {"a|b": pytest.approx(gap)}
    assert figures["distance_to_nearest"] == pytest.approx(0.01, rel=1e-4)
    scale = [label.ctx.pow(2).mean().sqrt().item() for label in labels]
    assert figures["label_scale"] == pytest.approx(sum(scale) / 2)
    assert figures["label_spread"] == pytest.approx(gap / 2, rel=1e-4)  # each label is half the gap from their mean
    assert figures["draw_spread"] == pytest.approx(0.01, rel=1e-3)  # two draws 0.02 apart: 0.01 from their mean
    assert figures["generated_draws"]["draws"] == 2 and not figures["collapsed"]


def test_one_fixed_prompt_for_every_image_is_collapsed(tiny_backbone):
    labels, features, _ = _toy(tiny_backbone)
    one = labels[0].ctx.expand(len(features.labels), *labels[0].ctx.shape).clone()
    figures = inspect_split(tiny_backbone, CLASSES, labels, features, one, one[None].expand(3, -1, -1, -1))
    assert figures["spread"] == pytest.approx(0, abs=1e-6) and figures["collapsed"]
    assert figures["nearest_share"]["a"] == 1
    assert figures["generated_draws"]["prediction_changes"] == 0 and figures["generated_draws"]["sd"] == 0
    reading = verdict(figures)
    assert reading.startswith("collapsed: the generated prompts spread ")
    assert f"around their mean, under {COLLAPSE_RATIO:g} of the labels'" in reading


def test_the_reading_names_the_step_that_loses():
    base = {"labels": {"a": 0.60, "b": 0.50}, "mean_label": 0.58, "oracle_label": 0.7, "collapsed": False,
            "spread": 1.0, "label_spread": 1.0}
    assert verdict({**base, "nearest_label": 0.59, "generated": 0.45}).startswith("lost in the generator's mapping")
    assert verdict({**base, "nearest_label": 0.50, "generated": 0.50}).startswith("lost in the choice of label")
    assert verdict({**base, "nearest_label": 0.60, "generated": 0.595}).startswith("no notable loss")


FIXED_PROMPT_PLUGIN = '''
import torch
from promptgen import hookimpl


class FixedPrompt:
    """A generator that ignores the image: one learned prompt for all (the label mean)."""

    def __init__(self, feature_dim, n_ctx, ctx_dim):
        self.prompt = torch.zeros(n_ctx, ctx_dim)

    def fit(self, backbone, train, prompt_labels, val):
        self.prompt = torch.stack([label.ctx for label in prompt_labels]).mean(0)
        return None

    def sample(self, features):
        return self.prompt.expand(len(features), *self.prompt.shape).clone()

    def state_dict(self):
        return {"prompt": self.prompt}

    def load_state_dict(self, state):
        self.prompt = state["prompt"]


@hookimpl
def register_generators(register):
    register("fixed-prompt", FixedPrompt)
'''


@pytest.mark.slow
def test_a_third_party_generator_gets_the_inspection_through_the_cli(tmp_path, capsys, install_plugin):
    install_plugin("pg_fixed_prompt", FIXED_PROMPT_PLUGIN)
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "spg-fixed-prompt", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--json", "--draws", "2", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["splits"]) == {"test/photo", "val"} and len(report["sources"]) == 3
    for figures in report["splits"].values():
        assert figures["collapsed"] and figures["spread"] == pytest.approx(0, abs=1e-6)
        # the one prompt is the labels' mean: the generated prompts score what the mean label scores
        assert figures["generated"] == pytest.approx(figures["mean_label"])
        assert figures["method_accuracy"] == pytest.approx(figures["generated"])
        assert figures["verdict"].startswith("collapsed")
    assert cli.main(["inspect", str(out), "--quiet"]) == 0
    assert "reading: collapsed" in capsys.readouterr().out
    # every run records how far its prompts lie from its labels on the sources' val: what inspect measures there
    recorded = json.loads((out / "metrics.json").read_text())["prompt_distance"]
    val = report["splits"]["val"]
    assert recorded["split"] == "val" and recorded["to_nearest_label"] == pytest.approx(val["distance_to_nearest"])
    assert recorded["ratio"] == pytest.approx(val["distance_to_nearest"] / val["label_scale"])


def test_inspect_refuses_a_method_without_generated_prompts(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "zero-shot", *SMALL, "--out", str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["inspect", str(out), "--quiet"]) == 2
    assert "has no prompt labels and generated prompts to inspect" in capsys.readouterr().err
