"""The two-stage engine: a run writes its directory, and the directory re-evaluates to the same accuracy."""

from __future__ import annotations

import json

import pytest

from promptgen import cli
from promptgen.config import BackboneConfig
from promptgen.engine import RunConfig, evaluate_run, run
from promptgen.errors import ConfigError

QUICK = {"coop": {"epochs": 1}, "generator": {"epochs": 1, "batch_size": 256}}


def _config(method: str, **changes) -> RunConfig:
    values = dict(dataset="digits-dg", target="photo", method=method, views=1, overrides=QUICK,
                  backbone=BackboneConfig(device="cpu"))
    return RunConfig(**{**values, **changes})


@pytest.mark.parametrize("method", ["zero-shot", "coop", "spg"])
def test_run_directory_re_evaluates_to_the_same_accuracy(tmp_path, method):
    metrics = run(_config(method), tmp_path, progress=False)
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and 0.0 <= metrics["val_accuracy"] <= 1.0
    assert metrics["sources"] == ["handwritten", "typeset", "sketch"]
    assert metrics["sizes"] == {"train": 3600, "val": 1200, "test": 400}
    assert set(metrics["seconds"]) >= {"features", "stage1", "test"}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]
    again = evaluate_run(tmp_path, progress=False)
    assert again["test_accuracy"] == metrics["test_accuracy"]
    assert again["val_accuracy"] == metrics["val_accuracy"]
    if method == "spg":
        assert {p.name for p in (tmp_path / "prompt_labels").iterdir()} == {
            f"{d}.{ext}" for d in ("handwritten", "typeset", "sketch") for ext in ("json", "safetensors")}
        assert (tmp_path / "generator.safetensors").is_file() and "stage2" in metrics["seconds"]


def test_zero_shot_run_matches_the_hand_written_prompt(tmp_path):
    metrics = run(_config("zero-shot"), tmp_path, progress=False)
    assert metrics["test_accuracy"] == pytest.approx(0.805, abs=0.005)  # docs/world.md: photo 80.5%


def test_bad_method_and_target_are_named(tmp_path):
    with pytest.raises(ConfigError, match="method must be one of zero-shot, coop, spg, spg-cgan; got 'gan'"):
        _config("gan")
    with pytest.raises(ConfigError, match="unknown target domain 'cartoon'; domains of digits-dg: handwritten"):
        run(_config("zero-shot", target="cartoon"), tmp_path, progress=False)


def test_train_command_prints_accuracy_and_writes_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "sketch", "--method", "zero-shot", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "zero-shot on digits-dg, target sketch: test accuracy" in printed
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == pytest.approx(0.9725, abs=0.005)
    assert cli.main(["evaluate", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(0.9725, abs=0.005)
