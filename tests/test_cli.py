"""The promptgen command and python -m promptgen."""

import json
import subprocess
import sys

import pytest

from promptgen import cli


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
    from promptgen import engine

    monkeypatch.setattr(engine, "prepare", lambda *a, **k: pytest.fail("the dry run built the backbone"))
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "spg", "--dry-run", "--set", "coop.epochs=2",
                 "--set", "digits-dg.per_class=10", "--seed", "3", "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "sources handwritten, typeset, sketch -> targets photo" in shown and "test/photo 20" in shown
    assert "prompt learner coop: " in shown and "epochs=2" in shown and "seed=3" in shown
    assert "stage I (coop)" in shown and f"would write: {out}" in shown and not out.exists()
    suite_out = tmp_path / "suite"
    assert benchmarks_run.main(["--dry-run", "--out", str(suite_out), "--set", "digits-dg.per_class=10"]) == 0
    shown = capsys.readouterr().out
    assert "dry run: suite default: 32 jobs" in shown and "the first job:" in shown and not suite_out.exists()
