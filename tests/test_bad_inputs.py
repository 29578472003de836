"""Every everyday mistake gets one line that names what is wrong, the right exit code (2: bad input, 1: a
failure of the run), no traceback, and leaves nothing behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from benchmarks import run as benchmarks_run
from promptgen import cli

TRAIN = ["train", "--target", "photo", "--method", "zero-shot", "--quiet", "--set", "digits-dg.per_class=5"]


def _files(tmp: Path) -> dict[str, Path]:
    """The bad files the cases point at."""
    files = {"file": tmp / "a-file", "empty_safetensors": tmp / "empty.safetensors",
             "text_safetensors": tmp / "text.safetensors", "cut_safetensors": tmp / "cut.safetensors",
             "latin1_toml": tmp / "latin1.toml", "bad_toml": tmp / "bad.toml", "epocs_toml": tmp / "epocs.toml",
             "one_toml": tmp / "one.toml", "loop": tmp / "loop"}
    files["file"].write_text("not a directory")
    files["empty_safetensors"].write_bytes(b"")
    files["text_safetensors"].write_text("this is not a safetensors file")
    from promptgen_digits.backbone import WEIGHTS

    files["cut_safetensors"].write_bytes(WEIGHTS.read_bytes()[:100_000])
    files["latin1_toml"].write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    files["bad_toml"].write_text('description = "x"\nmethods = [zero-shot]\n')
    files["epocs_toml"].write_text('description = "x"\n[overrides.coop]\nepocs = 1\n')
    files["one_toml"].write_text('description = "x"\n[overrides.coop]\nepochs = "one"\n')
    for domain in ("a", "b"):
        (files["loop"] / domain / "cat").mkdir(parents=True)
        (files["loop"] / domain / "cat" / "1.png").write_bytes(b"\x89PNG")
    os.symlink(files["loop"] / "a", files["loop"] / "a" / "cat" / "back")  # a/cat/back -> a: a loop
    return files


# (command, arguments with {placeholders}, exit code, a fragment of the one line printed)
CASES = [
    ("promptgen", [*TRAIN, "--dataset", "digit-dg"], 2, "unknown dataset 'digit-dg'; registered:"),
    ("promptgen", ["train", "--target", "photo", "--method", "gan"], 2, "unknown method 'gan'"),
    ("promptgen", [*TRAIN[:2], "cartoon", *TRAIN[3:]], 2, "unknown target domain 'cartoon'"),
    ("promptgen", [*TRAIN, "--sources", "cartoon"], 2, "unknown source domain 'cartoon'"),
    ("promptgen", [*TRAIN, "--backbone", "nope"], 2, "unknown backbone 'nope'"),
    ("promptgen", [*TRAIN, "--seed", "-1"], 2, "--seed must be an integer >= 0"),
    ("promptgen", [*TRAIN, "--seed", "99999999999999999999"], 2, "--seed must be an integer >= 0 and <= 4294967295"),
    ("promptgen", [*TRAIN, "--seed", "two"], 2, "argument --seed: invalid int value: 'two'"),
    ("promptgen", [*TRAIN, "--views", "0"], 2, "--views must be an integer >= 1"),
    ("promptgen", [*TRAIN, "--preset", "fast"], 2, "argument --preset: invalid choice: 'fast'"),
    ("promptgen", [*TRAIN, "--set", "coop.epocs=1"], 2, "coop: unknown option 'epocs'"),
    ("promptgen", [*TRAIN, "--set", "coop.epochs=one"], 2, "option 'epochs' must be int, got 'one'"),
    ("promptgen", [*TRAIN, "--set", "epochs"], 2, "--set 'epochs': expected COMPONENT.OPTION=VALUE"),
    ("promptgen", [*TRAIN, "--set", "cgna.epochs=1"], 2, "no component is named 'cgna'"),
    ("promptgen", ["train", "--target", "photo", "--method", "coop", "--generator", "cvae"], 2,
     "method 'coop' takes no --generator"),
    ("promptgen", ["train", "--target", "photo", "--method", "spg", "--learner", "nope"], 2,
     "uses prompt learner 'nope', which is not registered"),
    ("promptgen", [*TRAIN, "--out", "{file}"], 2, "is a file, not a directory"),
    ("promptgen", [*TRAIN, "--out", "{file}/run"], 2, "a parent of it is a file"),
    ("promptgen", [*TRAIN, "--backbone", "openclip", "--model", "pg-tiny-vit-w64", "--pretrained", "{tmp}/none.pt"],
     2, "checkpoint file not found"),
    ("promptgen", [*TRAIN, "--backbone", "openclip", "--model", "pg-tiny-vit-w64", "--pretrained",
                   "{empty_safetensors}"], 2, "empty.safetensors"),
    ("promptgen", [*TRAIN, "--backbone", "openclip", "--model", "pg-tiny-vit-w64", "--pretrained",
                   "{text_safetensors}"], 2, "text.safetensors"),
    ("promptgen", [*TRAIN, "--pretrained", "{cut_safetensors}"], 2, "cut.safetensors"),
    ("promptgen", [*TRAIN, "--pretrained", "{tmp}/none.safetensors"], 2, "none.safetensors"),
    ("promptgen", [*TRAIN, "--model", "ViT-B-16"], 2, "backbone tiny-clip-digits has one model"),
    ("promptgen", [*TRAIN, "--backbone", "openclip", "--model", "ViT-Z-99"], 2, "unknown open_clip model 'ViT-Z-99'"),
    ("promptgen", [*TRAIN, "--device", "gpu"], 2, "--device must be one of auto, cpu, cuda"),
    ("promptgen", [*TRAIN, "--device", "cuda"], 2, "CUDA is not available here"),
    ("promptgen", [*TRAIN, "--precision", "fp8"], 2, "--precision must be one of auto, fp32, bf16, fp16"),
    ("promptgen", [*TRAIN, "--target-dataset", "colors", "--target", "solid"], 2, "share no class names"),
    ("promptgen", [*TRAIN, "--cache-dir", "{file}"], 2, "feature cache: cannot write to"),
    ("promptgen", [*TRAIN, "--dataset", "pacs", "--target", "photo", "--data-root", "{tmp}/PACS"], 2,
     "pacs: data root"),
    ("promptgen", [*TRAIN[:2], "b", *TRAIN[3:], "--dataset", "folder", "--data-root", "{loop}"], 2,
     "symbolic link loop"),
    ("promptgen", ["evaluate", "{tmp}/no-run"], 1, "is not a run directory"),
    ("promptgen", ["evaluate", "{file}"], 1, "is not a run directory"),
    ("promptgen", ["evaluate", "{tmp}"], 1, "manifest.json is missing"),
    ("promptgen", ["cache", "clear", "--cache-dir", "{tmp}/c"], 2, "choose what to delete"),
    ("promptgen", ["plugins", "--options", "nope"], 2, "no component is named 'nope'"),
    ("promptgen", ["data", "info", "--dataset", "pacs", "--data-root", "{tmp}/PACS"], 2, "pacs: data root"),
    ("promptgen", ["nonsense"], 2, "argument COMMAND: invalid choice: 'nonsense'"),
    ("benchmarks", ["--suite", "nope"], 2, "unknown suite 'nope'"),
    ("benchmarks", ["--suite", "{latin1_toml}"], 2, "not UTF-8 text"),
    ("benchmarks", ["--suite", "{bad_toml}"], 2, "not valid TOML"),
    ("benchmarks", ["--suite", "{epocs_toml}", "--targets", "photo"], 2, "coop: unknown option 'epocs'"),
    ("benchmarks", ["--suite", "{one_toml}", "--targets", "photo"], 2, "option 'epochs' must be int, got 'one'"),
    ("benchmarks", ["--seeds", "-1"], 2, "--seeds: every seed must be an integer from 0"),
    ("benchmarks", ["--shard", "3/2"], 2, "--shard must be I/N with 0 <= I < N"),
    ("benchmarks", ["--out", "{file}"], 2, "is a file, not a directory"),
    ("benchmarks", ["--set", "coop.epochs=one"], 2, "option 'epochs' must be int, got 'one'"),
    ("benchmarks", ["--methods", "gan"], 2, "unknown method 'gan'"),
    ("benchmarks", ["--protocol", "cross-dataset"], 2, "a target dataset goes with, and only with"),
]


@pytest.mark.parametrize("program, arguments, code, fragment", CASES,
                         ids=[f"{i:02d}-{fragment[:40]}" for i, (_, _, _, fragment) in enumerate(CASES)])
def test_a_bad_input_gets_one_line_and_its_exit_code(tmp_path, capsys, monkeypatch, program, arguments, code,
                                                     fragment):
    monkeypatch.chdir(tmp_path)  # runs/ and results/ would appear here
    files = _files(tmp_path)
    placeholders = {"tmp": str(tmp_path), **{name: str(path) for name, path in files.items()}}
    filled = [argument.format(**placeholders) for argument in arguments]
    before = sorted(p.name for p in tmp_path.iterdir())
    main = cli.main if program == "promptgen" else benchmarks_run.main
    try:
        returned = main(filled)
    except SystemExit as exit:  # argparse's errors leave through SystemExit
        returned = exit.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line and "warning:" not in line]
    assert returned == code, captured.err
    assert len(lines) == 1, captured.err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing left behind
    assert len(CASES) >= 40


@pytest.mark.parametrize("name, message", [
    ("ENOSPC", "no space left on the disk holding"),
    ("EACCES", "permission denied:"),
    ("EROFS", "read-only file system:"),
])
def test_an_os_error_in_the_run_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch, name, message):
    """Writing the run directory fails: the disk is full, a path is not writable, the file system is read-only."""
    from promptgen.runs import rundir

    def refuse(path, value):
        raise OSError(getattr(errno, name), os.strerror(getattr(errno, name)), str(path))

    monkeypatch.setattr(rundir, "write_json", refuse)
    out = tmp_path / "run"
    assert cli.main([*TRAIN, "--out", str(out)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0] and "config.json" in error[0]
    assert not out.exists() and not list(tmp_path.glob(".run.partial-*"))


def test_debug_shows_the_traceback(tmp_path, capsys):
    with pytest.raises(Exception, match="unknown dataset 'digit-dg'"):
        cli.main([*TRAIN, "--dataset", "digit-dg", "--debug"])


def test_a_misspelled_dataset_is_named_before_the_backbone_is_built(monkeypatch, capsys):
    from promptgen.runs.config import BackboneConfig

    monkeypatch.setattr(BackboneConfig, "build", lambda *a, **k: pytest.fail("the backbone was built"))
    assert cli.main([*TRAIN, "--dataset", "digit-dg"]) == 2


@pytest.mark.slow
def test_an_empty_record_file_does_not_break_the_report(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text('description = "x"\ntargets = ["photo"]\nmethods = ["zero-shot"]\n[backbone]\ndevice = "cpu"\n'
                     '[overrides.digits-dg]\nper_class = 5\n')
    out = tmp_path / "out"
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--quiet"]) == 0
    (record,) = (out / "records").glob("*.json")
    record.write_text("")
    capsys.readouterr()
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--report"]) == benchmarks_run.PARTIAL
    captured = capsys.readouterr()
    assert "is unreadable" in captured.err and "1 of 1 jobs have no record yet" in captured.out
    assert f"{record.name} (unreadable)" in captured.err
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--quiet"]) == 0  # the job runs again
    assert "1 jobs, 0 already done, running 1" in capsys.readouterr().out
