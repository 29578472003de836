"""The promptgen command and python -m promptgen."""

import json
import subprocess
import sys

import pytest

from promptgen import cli
from promptgen.cli.common import setup_logging
from promptgen.cli.parser import build_parser, leaf_parsers


def test_help_explains_itself():
    for command in (["promptgen", "--help"], [sys.executable, "-m", "promptgen", "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, check=True)
        assert "generative soft-prompt domain generalization" in result.stdout
        assert "plugins" in result.stdout and "backbone" in result.stdout


def test_plugins_lists_kind_name_and_plugin(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["kind", "name", "plugin"]
    assert any(row.split()[:3] == ["backbone", "openclip", "openclip"] for row in rows)
    assert any(row.split()[:3] == ["dataset", "colors", "colors"] for row in rows)
    assert any(row.split()[:3] == ["dataset", "digits-dg", "digits"] for row in rows)
    assert any(row.split()[:3] == ["backbone", "tiny-clip-digits", "digits"] for row in rows)


def test_plugins_json(capsys):
    assert cli.main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    launchers = {c["name"]: c["plugin"] for c in listing["components"] if c["kind"] == "launcher"}
    assert launchers == {"local": "local", "processes": "local", "ray": "ray"}
    assert listing["errors"] == []


def test_default_backbone_is_the_shipped_tiny_clip(capsys):
    assert cli.main(["backbone", "--json", "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backbone"] == "tiny-clip-digits" and info["fingerprint"].startswith("tiny-clip-digits@")
    assert info["context_length"] == 32


def test_backbone_info_and_errors_without_traceback(capsys):
    assert cli.main(["backbone", "--backbone", "openclip", "--model", "pg-tiny-vit-w64", "--json", "--device", "cpu"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["fingerprint"].startswith("pg-tiny-vit-w64@") and info["ctx_dim"] == 64

    assert cli.main(["backbone", "--backbone", "openclip", "--model", "pg-tiny-vit-w64", "--pretrained", "/missing.safetensors"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("promptgen: error: checkpoint file not found: /missing.safetensors")
    assert "Traceback" not in err


def test_dry_run_resolves_the_run_and_trains_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from benchmarks import run as benchmarks_run
    from promptgen.runs import engine

    monkeypatch.setattr(engine, "prepare", lambda *a, **k: pytest.fail("the dry run built the backbone"))
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "spg", "--dry-run", "--set", "coop.epochs=2",
                 "--set", "digits-dg.per_class=10", "--seed", "3", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "sources handwritten, typeset, sketch -> targets photo" in shown and "test/photo 20" in shown
    assert "prompt learner spg-coop: " in shown and "epochs=2" in shown and "seed=3" in shown
    assert "stage I (spg-coop)" in shown and f"would write: {out}" in shown and not out.exists()
    suite_out = tmp_path / "suite"
    assert benchmarks_run.main(["--dry-run", "--out", str(suite_out), "--set", "digits-dg.per_class=10"]) == 0
    shown = capsys.readouterr().out
    assert "dry run: suite default: 64 jobs" in shown and "the first job:" in shown and not suite_out.exists()


HEAVY = ("torch", "torchvision", "open_clip")
STARTS = {  # argv -> expected exit status; each imports none of HEAVY (checked in a fresh interpreter)
    ("--help",): 0,
    ("plugins",): 0,
    ("plugins", "--json"): 0,
    ("train", "--help"): 0,
    ("cache", "info", "--help"): 0,
    ("train", "--dataset", "digit-dg", "--target", "photo"): 2,  # a misspelt name: reported before torch
    ("train", "--method", "spg-cgn", "--target", "photo"): 2,
    ("train", "--set", "cgn.epochs=2", "--target", "photo"): 2,
}


@pytest.mark.parametrize("argv", list(STARTS), ids=" ".join)
def test_cli_starts_without_torch(argv):
    code = ("import sys\nfrom promptgen.cli import main\n"
            f"try:\n    status = main({list(argv)!r})\nexcept SystemExit as exit:\n    status = exit.code or 0\n"
            f"loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print('LOADED', loaded, 'STATUS', status, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    report = done.stderr.strip().splitlines()[-1]
    assert report == f"LOADED [] STATUS {STARTS[argv]}", done.stderr[-2000:]


def test_plugins_lists_distribution_and_version(capsys):
    from importlib.metadata import version

    assert cli.main(["plugins", "--json"]) == 0
    components = json.loads(capsys.readouterr().out)["components"]
    ours = [c for c in components if c["plugin"] == "openclip"]
    assert ours and ours[0]["distribution"] == "promptgen" and ours[0]["version"] == version("promptgen")
    assert all(c["description"] for c in components if c["distribution"] == "promptgen")  # read without importing


def test_every_command_takes_verbose_and_quiet():
    parser = build_parser()
    leaves = leaf_parsers(parser)
    assert len(leaves) >= 10  # plugins, backbone, cache x5, train, evaluate, the plugins' commands
    for leaf in leaves:
        options = {option for action in leaf._actions for option in action.option_strings}
        assert {"-v", "--verbose", "--quiet"} <= options, leaf.prog


def test_verbose_logs_info_and_quiet_only_errors():
    import logging

    setup_logging(verbose=True)
    assert logging.getLogger().level == logging.INFO
    setup_logging(quiet=True)
    assert logging.getLogger().level == logging.ERROR
    setup_logging()
    assert logging.getLogger().level == logging.WARNING


def test_a_closed_pipe_is_not_an_error():
    done = subprocess.run(f"{sys.executable} -m promptgen plugins | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.startswith("kind") and "error" not in done.stderr.lower(), done.stderr
