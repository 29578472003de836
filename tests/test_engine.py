"""The two-stage engine: a run writes its directory, and the directory re-evaluates to the same accuracy."""

from __future__ import annotations

import json

import pytest
import torch

from promptgen import cli
from promptgen.config import BackboneConfig
from promptgen.engine import RunConfig, _class_map, _restrict, evaluate_run, run, shared_classes
from promptgen.errors import ConfigError
from promptgen.values import FeatureSet

QUICK = {"coop": {"epochs": 1}, "generator": {"epochs": 1, "batch_size": 256}}


def _config(method: str, **changes) -> RunConfig:
    values = dict(dataset="digits-dg", targets="photo", method=method, views=1, overrides=QUICK,
                  backbone=BackboneConfig(device="cpu"))
    return RunConfig(**{**values, **changes})


@pytest.mark.parametrize("method", ["zero-shot", "coop", "spg"])
def test_run_directory_re_evaluates_to_the_same_accuracy(tmp_path, method):
    metrics = run(_config(method), tmp_path, progress=False)
    assert 0.0 <= metrics["test_accuracy"]["photo"] <= 1.0 and 0.0 <= metrics["val_accuracy"] <= 1.0
    assert metrics["sources"] == ["handwritten", "typeset", "sketch"]
    expected_sizes = {"val": 1200, "test/photo": 400} if method == "zero-shot" else {
        "train": 3600, "val": 1200, "test/photo": 400}  # zero-shot trains nothing, so reads no training features
    assert metrics["sizes"] == expected_sizes
    assert set(metrics["seconds"]) >= {"features", "stage1", "test"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    again = evaluate_run(tmp_path, progress=False)
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["val_accuracy"] == metrics["val_accuracy"]
    assert again["generator_quality"] == metrics["generator_quality"]
    if method == "spg":
        quality = metrics["generator_quality"]
        assert quality["fid"] >= 0 and 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
        assert quality["diversity"] >= 0 and quality["images"] == 1200
        assert {p.name for p in (tmp_path / "prompt_labels").iterdir()} == {
            f"{d}.{ext}" for d in ("handwritten", "typeset", "sketch") for ext in ("json", "safetensors")}
        assert (tmp_path / "generator.safetensors").is_file() and "stage2" in metrics["seconds"]


def test_zero_shot_run_matches_the_hand_written_prompt(tmp_path):
    metrics = run(_config("zero-shot"), tmp_path, progress=False)
    assert metrics["test_accuracy"]["photo"] == pytest.approx(0.805, abs=0.005)  # docs/world.md: photo 80.5%


def test_bad_method_and_target_are_named(tmp_path):
    with pytest.raises(ConfigError, match="method must be one of zero-shot, coop, spg, spg-cgan, spg-cvae, spg-diffusion; got 'gan'"):
        _config("gan")
    with pytest.raises(ConfigError, match="unknown target domain 'cartoon'; domains of digits-dg: handwritten"):
        run(_config("zero-shot", targets="cartoon"), tmp_path, progress=False)


def test_train_command_prints_accuracy_and_writes_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "sketch", "--method", "zero-shot", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot on digits-dg, sources handwritten+typeset+photo: test accuracy sketch 97." in printed
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"]["sketch"] == pytest.approx(0.9725, abs=0.005)
    assert cli.main(["evaluate", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"]["sketch"] == pytest.approx(0.9725, abs=0.005)


def test_single_source_run_tests_every_other_domain(tmp_path):
    metrics = run(_config("zero-shot", sources="handwritten", targets=("typeset", "photo", "sketch")), tmp_path,
                  progress=False)
    assert metrics["sources"] == ["handwritten"]
    # zero-shot ignores the sources: the per-domain numbers of docs/world.md
    assert metrics["test_accuracy"] == pytest.approx({"typeset": 0.770, "photo": 0.805, "sketch": 0.9725}, abs=0.005)


def test_a_domain_cannot_be_source_and_target(tmp_path):
    with pytest.raises(ConfigError, match=r"domains \['photo'\] are both sources and targets"):
        run(_config("zero-shot", sources=("photo", "sketch")), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown source domain 'cartoon'; domains of digits-dg"):
        run(_config("zero-shot", sources="cartoon"), tmp_path, progress=False)


def test_cross_dataset_run_uses_the_shared_classes(tmp_path):
    metrics = run(_config("coop", target_dataset="digits-c", targets=("inverted",)), tmp_path, progress=False)
    assert metrics["sources"] == ["handwritten", "typeset", "photo", "sketch"]
    assert metrics["target_dataset"] == "digits-c" and metrics["classes"] == 10
    assert metrics["sizes"]["test/inverted"] == 400
    assert evaluate_run(tmp_path, progress=False)["test_accuracy"] == metrics["test_accuracy"]
    with pytest.raises(ConfigError, match="digits-dg and colors share no class names"):
        run(_config("zero-shot", target_dataset="colors", targets=("solid",)), tmp_path, progress=False)


def test_shared_classes_keep_source_order_and_relabel():
    assert shared_classes(("Dog", "elephant", "giraffe", "house"), ("house", "dog", "car")) == ("Dog", "house")
    features = FeatureSet(torch.eye(4), torch.tensor([0, 1, 2, 3]), torch.zeros(4, dtype=torch.long))
    kept = _restrict(features, _class_map(("Dog", "elephant", "giraffe", "house"), ("Dog", "house")))
    assert kept.labels.tolist() == [0, 1] and torch.equal(kept.features, torch.eye(4)[[0, 3]])
