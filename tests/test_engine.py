"""The engine: a run writes its directory, the directory re-evaluates to the same accuracy, and the run's plan
(sources, targets, shared classes) is checked before any work."""

from __future__ import annotations

import json

import pytest
import torch

from promptgen import cli
from promptgen.runs.config import RunConfig
from promptgen.runs.engine import evaluate_run, run
from promptgen.errors import ConfigError
from promptgen.runs.plan import class_key, class_map, shared_classes
from promptgen.values import FeatureSet

# digits-dg at 10 images per class and domain (6 train, 2 val, 2 test), one view, one epoch each
SMALL = {"digits-dg": {"per_class": 10}, "coop": {"epochs": 1, "warmup_epochs": 0},
         "cgan": {"epochs": 1, "warmup_epochs": 0, "batch_size": 64}}


def _config(method: str, **changes) -> RunConfig:
    values = dict(dataset="digits-dg", targets="photo", method=method, views=1, overrides=SMALL,
                  backbone={"device": "cpu"})
    return RunConfig(**{**values, **changes})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zero-shot", "coop", "spg"])
def test_run_directory_re_evaluates_to_the_same_accuracy(tmp_path, method):
    metrics = run(_config(method), tmp_path, progress=False)
    sources = [d for d in metrics["sources"]]
    assert "photo" not in sources and len(sources) >= 3
    assert 0.0 <= metrics["test_accuracy"]["photo"] <= 1.0 and 0.0 <= metrics["val_accuracy"] <= 1.0
    assert metrics["sizes"] == {"train": 60 * len(sources), "val": 20 * len(sources), "test/photo": 20}
    assert set(metrics["seconds"]) >= {"stage1", "test"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    again = evaluate_run(tmp_path, progress=False)
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["val_accuracy"] == metrics["val_accuracy"]
    assert again["generator_quality"] == metrics["generator_quality"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["run"]["method"] == method and config["preset"] == "cpu"
    if method == "spg":
        assert config["method"] == "spg-cgan" and metrics["components"] == {"prompt_learner": "spg-coop",
                                                                             "generator": "cgan"}
        assert config["options"]["generator/cgan"]["epochs"] == 1  # the override, on top of the cpu preset
        assert config["options"]["generator/cgan"]["lr"] == 2e-4  # the cpu preset's
        quality = metrics["generator_quality"]
        assert quality["fid"] >= 0 and 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
        assert {p.name for p in (tmp_path / "prompt_labels").iterdir()} == {
            f"{d}.{ext}" for d in sources for ext in ("json", "safetensors")}
        assert (tmp_path / "generator.safetensors").is_file() and "stage2" in metrics["seconds"]
    if method == "zero-shot":
        assert "features" not in metrics["seconds"] or metrics["seconds"]["features"] < 30


def test_zero_shot_reads_no_training_features(tmp_path, monkeypatch):
    from promptgen.runs.context import RunContext

    asked = []
    features = RunContext.features
    monkeypatch.setattr(RunContext, "features", lambda self, split: asked.append(split) or features(self, split))
    run(_config("zero-shot"), tmp_path, progress=False)
    assert "train" not in asked and asked == ["val", "test/photo"]


@pytest.mark.slow
def test_a_run_leaves_the_callers_random_state_alone(tmp_path):
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    run(_config("coop"), tmp_path, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_bad_method_and_target_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown method 'gan'; registered: .*coop.*spg-cgan.*zero-shot"):
        run(_config("gan"), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown target domain 'cartoon'; domains of digits-dg: handwritten"):
        run(_config("zero-shot", targets="cartoon"), tmp_path, progress=False)
    assert not (tmp_path / "config.json").exists()  # nothing written before the checks pass


def test_a_misspelled_override_fails_before_any_work(tmp_path, monkeypatch):
    from promptgen.runs import engine

    monkeypatch.setattr(engine, "make_plan", lambda *a, **k: pytest.fail("the plan was made"))
    with pytest.raises(ConfigError, match=r"coop: unknown option 'epocs'; options of .*coop.*epochs"):
        run(_config("coop", overrides={"coop": {"epocs": 1}}), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"option 'epochs' must be int, got 'one'"):
        run(_config("coop", overrides={"coop": {"epochs": "one"}}), tmp_path, progress=False)
    with pytest.raises(ConfigError, match=r"overrides: no component is named 'cgna'"):
        run(_config("coop", overrides={"cgna": {"epochs": 1}}), tmp_path, progress=False)


@pytest.mark.slow  # the default digits-dg (200 images per class): generating and encoding it is most of its time
def test_train_command_prints_accuracy_and_writes_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "sketch", "--method", "zero-shot", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "metrics.json").read_text())
    sketch = saved["test_accuracy"]["sketch"]
    assert f"zero-shot on digits-dg, sources {'+'.join(saved['sources'])}: test accuracy sketch " \
           f"{100 * sketch:.2f}%" in printed
    assert cli.main(["evaluate", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"]["sketch"] == sketch


def test_train_takes_a_generator_for_methods_that_take_one(tmp_path, capsys):
    assert cli.main(["train", "--target", "photo", "--method", "coop", "--generator", "cvae", "--quiet",
                     "--out", str(tmp_path / "x")]) == 2
    assert "method 'coop' takes no --generator; its options: learner" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_single_source_run_tests_every_other_domain(tmp_path):
    metrics = run(_config("zero-shot", sources="handwritten", targets=("typeset", "photo", "sketch")), tmp_path,
                  progress=False)
    assert metrics["sources"] == ["handwritten"] and list(metrics["test_accuracy"]) == ["typeset", "photo", "sketch"]


def test_a_domain_cannot_be_source_and_target(tmp_path):
    with pytest.raises(ConfigError, match=r"domains \['photo'\] are both sources and targets"):
        run(_config("zero-shot", sources=("photo", "sketch")), tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown source domain 'cartoon'; domains of digits-dg"):
        run(_config("zero-shot", sources="cartoon"), tmp_path, progress=False)


@pytest.mark.slow
def test_cross_dataset_run_uses_the_shared_classes(tmp_path):
    metrics = run(_config("coop", target_dataset="digits-c", targets=("inverted",),
                          overrides={**SMALL, "digits-c": {"per_class": 10}}), tmp_path, progress=False)
    assert metrics["target_dataset"] == "digits-c" and metrics["classes"] == 10
    assert "inverted" not in metrics["sources"] and metrics["sizes"]["test/inverted"] > 0
    assert evaluate_run(tmp_path, progress=False)["test_accuracy"] == metrics["test_accuracy"]
    with pytest.raises(ConfigError, match="digits-dg and colors share no class names"):
        run(_config("zero-shot", target_dataset="colors", targets=("solid",)), tmp_path, progress=False)


def test_shared_classes_keep_source_order_and_relabel():
    assert shared_classes(("Dog", "elephant", "giraffe", "house"), ("house", "dog", "car")) == ("Dog", "house")
    features = FeatureSet(torch.eye(4), torch.tensor([0, 1, 2, 3]), torch.zeros(4, dtype=torch.long))
    kept = features.restrict(class_map(("Dog", "elephant", "giraffe", "house"), ("Dog", "house")))
    assert kept.labels.tolist() == [0, 1] and torch.equal(kept.features, torch.eye(4)[[0, 3]])


def test_class_names_compare_one_way_everywhere():
    from promptgen_dg_datasets import splits

    assert class_key("Alarm_Clock") == class_key("alarm  clock") == class_key("alarm-clock") == "alarm clock"
    assert splits.normal is class_key  # the dataset plugin's split checks use the engine's comparison
