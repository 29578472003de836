"""The plugin examples in docs/plugins.md work exactly as written: installed through a real entry point, they
train through `promptgen train` and through a benchmark suite, and registering without an entry point works
for a run too."""

import json
import re
import types
from pathlib import Path

import pytest
import torch

from benchmarks import run as benchmarks_run
from benchmarks.records import RecordStore
from promptgen import cli
from promptgen.runs.config import RunConfig
from promptgen.runs.curves import curve_sets
from promptgen.runs.engine import run
from promptgen.components.protocols import check_fit_report
from promptgen.components.registry import load_registry
from promptgen.values import FeatureSet, PromptLabel

DOC = Path(__file__).parents[1] / "docs" / "plugins.md"
SMALL = ["--set", "digits-dg.per_class=10", "--set", "coop.epochs=1", "--set", "coop.warmup_epochs=0", "--views", "1",
         "--quiet"]


def _block_after(marker: str, language: str) -> str:
    text = DOC.read_text()
    start = text.index(marker)
    return re.search(rf"```{language}\n(.*?)```", text[start:], re.S).group(1)


def _install_generator(install_plugin) -> str:
    source = _block_after("`promptgen_nearest_domain.py`:", "python")
    entry_point = re.search(r"\n(\w+) = \"promptgen_nearest_domain\"", _block_after("`pyproject.toml` of your package:", "toml"))
    return install_plugin("promptgen_nearest_domain", source, entry_point=entry_point.group(1))


def _install_method(install_plugin) -> str:
    source = _block_after("`promptgen_domain_ensemble.py`:", "python")
    entry_point = re.search(r"`(\w+) = \"promptgen_domain_ensemble\"`", DOC.read_text()).group(1)
    return install_plugin("promptgen_domain_ensemble", source, entry_point=entry_point)


def _suite(tmp_path, methods: list[str]) -> str:
    path = tmp_path / "doc-suite.toml"
    path.write_text(f'description = "the docs plugins"\ntargets = ["photo"]\nmethods = {json.dumps(methods)}\n'
                    'views = 1\n[backbone]\ndevice = "cpu"\n[overrides.digits-dg]\nper_class = 10\n'
                    '[overrides.coop]\nepochs = 1\nwarmup_epochs = 0\n')
    return str(path)


def test_generator_plugin_example_installs_and_learns(install_plugin):
    _install_generator(install_plugin)
    registry = load_registry()
    assert registry.get("generator", "nearest-domain").plugin == "nearest_domain"
    assert registry.get("method", "spg-nearest-domain").plugin == "spg"  # SPG offers every generator
    generator = registry.create("generator", "nearest-domain", feature_dim=2, n_ctx=1, ctx_dim=3)

    labels = [PromptLabel(ctx=torch.full((1, 3), float(d)), fingerprint="f", domain=str(d), class_names=["a"]) for d in range(2)]
    features = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    train = FeatureSet(features, torch.zeros(4, dtype=torch.long), torch.tensor([0, 0, 1, 1]))
    report = check_fit_report(generator.fit(None, train, labels, None), "the example")  # the contract holds
    assert [row["epoch"] for row in report["history"]] == list(range(generator.options.epochs))
    assert report["history"][-1]["loss"] < report["history"][0]["loss"]
    prompts = generator.sample(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert prompts.shape == (2, 1, 3)
    assert prompts[:, 0, 0].tolist() == [1.0, 0.0]


@pytest.mark.slow
def test_generator_plugin_example_trains_through_the_cli_and_a_suite(install_plugin, tmp_path, capsys):
    _install_generator(install_plugin)
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "spg-nearest-domain", "--out", str(out), *SMALL]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["components"] == {"prompt_learner": "spg-coop", "generator": "nearest-domain"}
    history = json.loads((out / "history.json").read_text())  # its per-epoch report is the run's stage II history
    assert len(history) == 20 and {"epoch", "loss", "val_domain_accuracy"} <= set(history[0])
    assert {"loss", "val_domain_accuracy"} <= set(curve_sets(out)["fit"][0]) and (out / "curves.png").is_file()
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]

    assert benchmarks_run.main(["--suite", _suite(tmp_path, ["spg-nearest-domain"]), "--out", str(tmp_path / "sweep"),
                                "--quiet"]) == 0
    (record,) = RecordStore(tmp_path / "sweep").records()
    assert record["status"] == "ok" and record["job"]["method"] == "spg-nearest-domain"


@pytest.mark.slow
def test_method_plugin_example_trains_with_its_own_learner_through_the_cli_and_a_suite(install_plugin, tmp_path,
                                                                                      capsys):
    _install_method(install_plugin)
    for learner in ("averaged-phrases", None):
        out = tmp_path / f"run-{learner}"
        chosen = ["--learner", learner] if learner else []
        assert cli.main(["train", "--target", "photo", "--method", "domain-ensemble", *chosen, "--out", str(out),
                         *SMALL]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["components"] == {"prompt_learner": learner or "coop"}
        assert metrics["fit"]["domains"] == metrics["sources"]
        capsys.readouterr()
        assert cli.main(["evaluate", str(out), "--quiet"]) == 0
        assert json.loads(capsys.readouterr().out)["test_accuracy"] == metrics["test_accuracy"]

    assert benchmarks_run.main(["--suite", _suite(tmp_path, ["domain-ensemble", "zero-shot"]), "--out",
                                str(tmp_path / "sweep"), "--quiet"]) == 0
    records = {r["job"]["method"]: r for r in RecordStore(tmp_path / "sweep").records()}
    assert set(records) == {"domain-ensemble", "zero-shot"} and all(r["status"] == "ok" for r in records.values())
    assert "| domain-ensemble |" in (tmp_path / "sweep" / "table.md").read_text()


@pytest.mark.slow
def test_registering_without_an_entry_point_works_for_a_run(tmp_path):
    module = types.ModuleType("promptgen_domain_ensemble_inline")
    exec(_block_after("`promptgen_domain_ensemble.py`:", "python"), module.__dict__)
    registry = load_registry([module])
    config = RunConfig(targets="photo", method="domain-ensemble", views=1, backbone={"device": "cpu"},
                       overrides={"domain-ensemble": {"learner": "averaged-phrases"}, "digits-dg": {"per_class": 10}})
    metrics = run(config, tmp_path, registry=registry, progress=False)
    assert metrics["components"] == {"prompt_learner": "averaged-phrases"}
    assert 0 <= metrics["test_accuracy"]["photo"] <= 1


def test_the_cost_table_in_spg_md_is_what_cost_table_prints():
    from benchmarks.cost_table import table

    text = (DOC.parent / "spg.md").read_text()
    assert table() in text
