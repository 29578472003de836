"""What a new user tripped on in the first hour: a schedule that is all warm-up is refused before anything trains;
the dry run prints the n_ctx a run uses; a third-party generator's per-epoch history is its run's stage II history
and curves; the README says which methods the default suite runs, and `--methods all` adds the user's own."""

from __future__ import annotations

import json
import re
from pathlib import Path

import attrs
import pytest

from benchmarks import protocols, suites
from benchmarks import run as benchmarks_run
from promptgen import cli
from promptgen.toolkit.checkpoints import load_prompt_label
from promptgen.runs.config import RunConfig
from promptgen.runs.curves import curve_sets
from promptgen.runs.engine import check
from promptgen.errors import ConfigError
from promptgen.components.registry import default_registry

ROOT = Path(__file__).parents[1]
SMALL = ["--set", "digits-dg.per_class=5", "--views", "1", "--quiet"]
VIT = {"name": "openclip", "model": "pg-tiny-vit-w64", "device": "cpu"}  # VPT and MaPLe need a ViT image tower


def _error_lines(captured) -> list[str]:
    return [line for line in captured.err.splitlines() if line and "warning:" not in line]


# --- a schedule that is all warm-up -----------------------------------------------------------------------------

@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("method, setting, message", [
    ("coop", "coop.epochs=1", "coop: epochs=1 is not more than warmup_epochs=1: the whole run would be warm-up at "
                              "1e-05; set coop.warmup_epochs=0 or more epochs"),
    ("spg", "cgan.epochs=1", "cgan: epochs=1 is not more than warmup_epochs=1: the whole run would be warm-up, the "
                             "learning rate still rising to 0.0002; set cgan.warmup_epochs=0 or more epochs"),
])
def test_a_run_that_is_all_warm_up_is_refused_in_one_line_before_it_trains(tmp_path, capsys, method, setting,
                                                                           message, dry_run):
    out = tmp_path / "run"
    code = cli.main(["train", "--target", "photo", "--method", method, "--set", setting, "--out", str(out), *SMALL,
                     *(["--dry-run"] if dry_run else [])])
    captured = capsys.readouterr()
    assert code == 2 and _error_lines(captured) == [f"promptgen: error: {message}"], captured.err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _warm_up_components(registry) -> dict[tuple[str, str], str]:
    """{(component, preset): a method that uses it under that preset} for every registered component with both
    epochs and warmup_epochs (a method's components may differ by preset: DPSPG's joint stage I on gpu)."""
    found = {}
    for preset in ("cpu", "gpu"):
        for method in protocols.all_methods(registry):
            checked = check(RunConfig(targets="photo", method=method, backbone=VIT, preset=preset), registry)
            for kind, name in (("method", checked.method_name), *checked.components):
                options = registry.get(kind, name).options
                if {"epochs", "warmup_epochs"} <= set(options):
                    found.setdefault((registry.get(kind, name).name, preset), method)
    return found


def test_every_component_with_a_warm_up_is_refused_when_it_is_all_warm_up():
    """One generic rule over the option names, so a built-in or third-party component is covered alike."""
    registry = default_registry()
    components = _warm_up_components(registry)
    assert {"coop", "spg-coop", "negative-coop", "dpspg-coop", "cgan", "cvae", "diffusion", "transformer", "cocoop",
            "dpl", "vp", "vpt", "maple"} <= {name for name, _ in components}
    for (name, preset), method in components.items():
        config = RunConfig(targets="photo", method=method, backbone=VIT, preset=preset,
                           overrides={name: {"epochs": 2, "warmup_epochs": 2}})
        with pytest.raises(ConfigError, match=rf"^{re.escape(name)}: epochs=2 is not more than warmup_epochs=2: "
                                              rf".*; set {re.escape(name)}\.warmup_epochs=0 or more epochs$"):
            check(config, registry)
        check(attrs.evolve(config, overrides={name: {"epochs": 3, "warmup_epochs": 2}}), registry)


def test_the_presets_and_the_shipped_suites_are_not_refused():
    """The gpu preset's official schedules (and the cpu preset's) on every dataset they have entries for, and
    every method of every shipped accuracy suite with the suite's own overrides."""
    registry = default_registry()
    for preset in ("gpu", "cpu"):
        for dataset in ("digits-dg", "pacs", "vlcs", "office-home", "terra-incognita", "domainnet"):
            for method in protocols.all_methods(registry):
                check(RunConfig(targets="photo", dataset=dataset, method=method, preset=preset, backbone=VIT), registry)
    for name in suites.available():
        suite = suites.load(name)
        if suite.kind == "perf":
            continue
        for part in suite.parts() if suite.datasets else [suite]:
            example = part.example()
            for method in protocols.resolve_methods(part.methods, name, registry, example.backbone):
                check(attrs.evolve(example, method=method), registry)


@pytest.mark.parametrize("dry_run", [False, True])
def test_a_suite_set_to_all_warm_up_is_refused_before_its_first_job(tmp_path, capsys, dry_run):
    out = tmp_path / "out"
    code = benchmarks_run.main(["--dataset", "digits-dg", "--set", "digits-dg.per_class=5", "--set", "coop.epochs=1",
                                "--out", str(out), "--quiet", *(["--dry-run"] if dry_run else [])])
    lines = _error_lines(capsys.readouterr())
    assert code == 2 and len(lines) == 1
    assert lines[0].endswith("coop: epochs=1 is not more than warmup_epochs=1: the whole run would be warm-up at "
                             "1e-05; set coop.warmup_epochs=0 or more epochs")
    assert not out.exists()


# --- the dry run prints what runs ------------------------------------------------------------------------------

def test_the_dry_run_prints_the_n_ctx_of_the_prompt_the_run_learns(tmp_path, capsys):
    """CoOp's context is one vector per word of ctx_init ("a photo of a": 4), not its 16 without one."""
    args = ["train", "--target", "photo", "--method", "coop", "--set", "coop.epochs=2", "--out", str(tmp_path / "run"),
            *SMALL]
    assert cli.main([*args, "--dry-run"]) == 0
    shown = re.search(r"^prompt learner coop: .*\bn_ctx=(\d+)\b", capsys.readouterr().out, re.M)
    assert cli.main(args) == 0
    label = load_prompt_label(tmp_path / "run" / "prompt_label")
    assert int(shown.group(1)) == label.n_ctx == label.metadata["config"]["n_ctx"] == 4


def test_an_n_ctx_that_contradicts_ctx_init_is_refused_and_without_ctx_init_it_is_used(tmp_path, capsys):
    base = ["train", "--target", "photo", "--method", "coop", "--out", str(tmp_path / "run"), "--dry-run", *SMALL]
    assert cli.main([*base, "--set", "coop.n_ctx=8"]) == 2
    assert _error_lines(capsys.readouterr()) == [
        "promptgen: error: coop: n_ctx=8 contradicts ctx_init 'a photo of a', which initialises 4 context vectors "
        "(one per word); leave n_ctx unset, or set coop.ctx_init= (empty: a random initialisation) to learn 8"]
    assert cli.main([*base, "--set", "coop.n_ctx=4"]) == 0
    assert cli.main([*base, "--set", "coop.n_ctx=8", "--set", "coop.ctx_init="]) == 0
    assert re.search(r"^prompt learner coop: ctx_init=, n_ctx=8,", capsys.readouterr().out, re.M)
    assert cli.main([*base[:4], "cocoop", *base[5:], "--set", "cocoop.n_ctx=2"]) == 2
    assert "cocoop: n_ctx=2 contradicts ctx_init" in capsys.readouterr().err


# --- a third-party generator's per-epoch history ----------------------------------------------------------------

GENERATOR = '''
import torch

from promptgen import hookimpl


class MeanPrompt:
    """Every image gets the domains' mean prompt label, approached a step per epoch (a per-epoch history)."""

    def __init__(self, feature_dim, n_ctx, ctx_dim, epochs: int = 3, broken: bool = False):
        self.epochs, self.broken = epochs, broken
        self.prompt = torch.zeros(n_ctx, ctx_dim)

    def fit(self, backbone, train, prompt_labels, val):
        target = torch.stack([label.ctx for label in prompt_labels]).mean(0)
        history = []
        for epoch in range(self.epochs):
            self.prompt = self.prompt + 0.5 * (target - self.prompt)
            history.append({"epoch": epoch, "loss": (self.prompt - target).pow(2).mean().item()})
        if self.broken:  # no "epoch": not the protocol's history
            history = [{"step": row["epoch"], "loss": row["loss"]} for row in history]
        return {"best_epoch": self.epochs - 1, "history": history}

    def sample(self, features):
        return self.prompt.expand(len(features), -1, -1).clone()

    def state_dict(self):
        return {"prompt": self.prompt}

    def load_state_dict(self, state):
        self.prompt = state["prompt"]


@hookimpl
def register_generators(register):
    register("mean-prompt", MeanPrompt)
'''


@pytest.mark.slow
def test_a_third_party_generators_history_is_its_runs_stage_ii_history_and_curves(install_plugin, tmp_path, capsys):
    install_plugin("pg_mean_prompt", GENERATOR)
    out = tmp_path / "run"
    train = ["train", "--target", "photo", "--method", "spg-mean-prompt", "--set", "coop.epochs=2", *SMALL]
    assert cli.main([*train, "--out", str(out)]) == 0
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2] and history[2]["loss"] < history[0]["loss"]
    assert [row["loss"] for row in curve_sets(out)["fit"]] == [row["loss"] for row in history]
    assert (out / "curves.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["fit"]["best_epoch"] == 2

    capsys.readouterr()
    assert cli.main([*train, "--out", str(tmp_path / "broken"), "--set", "mean-prompt.broken=true"]) == 1
    (line,) = _error_lines(capsys.readouterr())
    assert line.startswith("promptgen: error: generator 'mean-prompt' (plugin pg_mean_prompt): fit returned a "
                           "'history' whose row 0 has 'epoch' None")
    assert "docs/plugins.md" in line and not (tmp_path / "broken").exists()


@pytest.mark.parametrize("report, problem", [
    ([{"epoch": 0}], "fit returned a list, not a dict"),
    ({"history": {"epoch": 0}}, "a 'history' that is a dict, not a list"),
    ({"history": [0.5]}, "row 0 is a float, not a dict"),
    ({"history": [{"epoch": 0}, {"epoch": 0}]}, "row 1 has 'epoch' 0: it must be an int, from 0, increasing"),
    ({"history": [{"epoch": 0, "loss": "low"}]}, "row 0 has 'loss' = 'low': every value must be a number"),
])
def test_a_malformed_generator_report_is_named(report, problem):
    from promptgen.errors import GeneratorError
    from promptgen.components.protocols import check_fit_report

    with pytest.raises(GeneratorError, match=r"^generator 'g' \(plugin p\): .*" + re.escape(problem)):
        check_fit_report(report, "generator 'g' (plugin p)")
    assert check_fit_report(None, "g") == {}
    good = {"best_epoch": 1, "history": [{"epoch": 0, "loss": 1.0, "val_accuracy": None}, {"epoch": 1, "loss": 0.5}]}
    assert check_fit_report(good, "g") is good


# --- the default suite, the README and --methods all -------------------------------------------------------------

METHOD = '''
from promptgen import hookimpl
from promptgen.toolkit.methods import SharedPromptMethod


class MyCoOp(SharedPromptMethod):
    """CoOp under a third party's name."""

    def __init__(self, learner: str = "coop"):
        super().__init__(learner)


@hookimpl
def register_methods(register):
    register("my-coop", MyCoOp)
'''


def test_the_readme_names_the_methods_of_the_default_suite():
    """The README's sentence about the default suite lists exactly the suite file's methods, and says how to
    run every registered method instead."""
    methods = list(suites.load("default").methods)
    readme = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"the `default` benchmark suite: its fixed list of methods \(([^:)]*)[:)]", readme)
    assert listed, "the README no longer describes the default suite's methods"
    assert [name.strip("` ") for name in listed.group(1).split(",")] == methods
    assert "`python -m benchmarks.run --methods all`" in readme


def test_methods_all_puts_third_party_methods_and_generators_in_the_default_suite(install_plugin, tmp_path, capsys):
    install_plugin("pg_my_coop", METHOD)
    install_plugin("pg_mean_prompt", GENERATOR)
    out = tmp_path / "out"
    args = ["--dataset", "digits-dg", "--targets", "photo", "--set", "digits-dg.per_class=5", "--out", str(out),
            "--dry-run"]
    assert benchmarks_run.main(args) == 0
    default = capsys.readouterr().out
    assert benchmarks_run.main([*args, "--methods", "all"]) == 0
    everything = capsys.readouterr().out
    jobs = re.findall(r"^  digits-dg\.multi-source\.to-photo\.(.+)\.seed0\.\w+$", everything, re.M)
    assert {"my-coop", "spg-mean-prompt", "spg-cvae", "coop", "spg-cgan"} <= set(jobs)
    assert "methods = all: skipping vpt: needs a ViT image tower" in everything
    assert "my-coop" not in default and "spg-mean-prompt" not in default
    assert not out.exists()
