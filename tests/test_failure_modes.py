"""Bad input and bad luck (issue 26): each case gets one line naming what is at fault (the flag, file, plugin,
component or option) and the fix, its exit code (2 bad input, 1 a failure of the run, 130 Ctrl-C, 143 SIGTERM), no
traceback, and loses nothing already written: damaged, truncated, full and read-only caches, runs killed at any
point, generators that return garbage, broken plugins. Many cases run the real command in a fresh process, as a
user would, and compare the files before and after byte for byte. How one error becomes one line
(promptgen.errors, promptgen.cli.failures) is tested in test_errors.py."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks import run as benchmarks_run
from promptgen import cli
from promptgen.components.registry import load_registry
from promptgen.errors import CacheError, GeneratorError
from promptgen.runs.config import RunConfig
from promptgen.runs.engine import evaluate_run, run
from promptgen.storage.cache import FeatureCache
from promptgen.storage.cache_maintenance import salvage_files
from promptgen.storage.lmdb_env import DamagedCacheError

ROOT = Path(__file__).parents[1]
SMALL = {"digits-dg": {"per_class": 10}}  # overrides of a RunConfig
SMALL_FLAGS = ["--set", "digits-dg.per_class=5", "--quiet"]
TRAIN = ["train", "--target", "photo", "--method", "zero-shot", *SMALL_FLAGS]
SUITE = ('description = "{name}"\ntargets = ["photo"]\nmethods = ["zero-shot"]\n[backbone]\ndevice = "cpu"\n'
         '[overrides.digits-dg]\nper_class = 5\n')
TINY_SUITE = SUITE.format(name="tiny")


def _env(site: Path | None = None, **variables: str) -> dict:
    paths = [str(site)] if site else []
    paths += [str(ROOT), os.environ.get("PYTHONPATH", "")]  # benchmarks importable from any working directory
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, paths)),
            "PYTHONDONTWRITEBYTECODE": "1", **variables}  # no __pycache__ beside a test's plugin


def _run(tmp_path: Path, program: str, arguments: list[str], site: Path | None = None, **variables: str):
    """``promptgen ARGUMENTS`` or ``python -m benchmarks.run ARGUMENTS`` in a fresh process, in ``tmp_path``."""
    module = "promptgen" if program == "promptgen" else "benchmarks.run"
    return subprocess.run([sys.executable, "-m", module, *arguments], cwd=tmp_path, env=_env(site, **variables),
                          capture_output=True, text=True, timeout=300)


def _files(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``: a regular file's bytes, None for anything else (folders, FIFOs are not read)."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _one_line(result, code: int, *fragments: str, ignore_warnings: bool = False) -> str:
    lines = [line for line in result.stderr.splitlines() if line and not (ignore_warnings and "warning:" in line)]
    assert result.returncode == code, result.stderr
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _bad_files(tmp: Path) -> dict[str, Path]:
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


@pytest.fixture
def shared_cache() -> str:
    """The session's private cache (tests/conftest.py), which the subprocesses inherit too."""
    return os.environ["PROMPTGEN_CACHE_DIR"]


# --- bad input: one line, its exit code, nothing left behind ------------------------------------------------------

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
    files = _bad_files(tmp_path)
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
    suite.write_text(SUITE.format(name="x"))
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


# --- 1. SIGTERM ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_during_a_run_exits_143_with_one_line_and_leaves_no_partial_directory(tmp_path):
    kept = tmp_path / "runs" / "an-earlier-run"
    kept.mkdir(parents=True)
    (kept / "metrics.json").write_text('{"test_accuracy": {"photo": 0.9}}')
    before = _files(tmp_path)
    out = tmp_path / "runs" / "coop"
    command = [sys.executable, "-m", "promptgen", "train", "--target", "photo", "--method", "coop", "--set",
               "coop.epochs=500", "--seed", "3", "--out", str(out), *SMALL_FLAGS]
    process = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.time() + 120
    while not list(out.parent.glob(".coop.partial-*")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert list(out.parent.glob(".coop.partial-*")), "the run never started writing"
    time.sleep(1.0)  # into its work: extracting features or learning prompts
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    _one_line(result, 143, "interrupted by SIGTERM", "rerun the same command")
    assert not out.exists() and not list(out.parent.glob(".coop.partial-*"))
    assert _files(tmp_path) == before


# --- 2. a target, method or seed listed twice ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("program, arguments, fragment", [
    ("benchmarks", ["--targets", "photo", "photo"], "--targets: 'photo' is listed twice"),
    ("promptgen", [*TRAIN, "--target", "photo", "photo"], "--target lists 'photo' twice"),
], ids=["--targets", "train --target"])
def test_a_domain_listed_twice_is_refused_naming_it(tmp_path, program, arguments, fragment):
    before = _files(tmp_path)
    result = _run(tmp_path, program, arguments)
    _one_line(result, 2, fragment, "once")
    assert _files(tmp_path) == before


@pytest.mark.parametrize("key, values, flags", [
    ("targets", '["photo", "sketch", "photo"]', ["--targets", "sketch", "sketch"]),
    ("methods", '["zero-shot", "coop", "zero-shot"]', ["--methods", "coop", "coop"]),
    ("seeds", "[0, 1, 0]", ["--seeds", "1", "1"]),
])
def test_a_suite_listing_a_target_method_or_seed_twice_is_refused(tmp_path, capsys, monkeypatch, key, values,
                                                                 flags):
    monkeypatch.chdir(tmp_path)  # results/ would appear here
    twice, tiny = tmp_path / "twice.toml", tmp_path / "tiny.toml"
    twice.write_text(f"{key} = {values}\n" + TINY_SUITE.replace(f"{key} = ", f"# {key} = "))
    tiny.write_text(TINY_SUITE)
    before = _files(tmp_path)
    for arguments, fragment in ((["--suite", str(twice)], f"twice.toml: {key}: "),
                                (["--suite", str(tiny), *flags], f"{flags[0]}: ")):
        assert benchmarks_run.main(arguments) == 2
        line = capsys.readouterr().err.strip()
        assert fragment in line and "is listed twice; list each once" in line and len(line.splitlines()) == 1
    assert _files(tmp_path) == before


# --- 3. two sweeps on one --out -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_sweep_on_the_same_out_is_refused_and_a_dead_ones_lock_blocks_nothing(tmp_path):
    from benchmarks import out_dir
    suite, out = tmp_path / "tiny.toml", tmp_path / "out"
    suite.write_text(TINY_SUITE)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with open(out / out_dir.LOCK, "w") as lock:  # another sweep holds --out: this test process
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        before = _files(tmp_path)
        result = _run(tmp_path, "benchmarks", ["--suite", str(suite), "--out", str(out), "--quiet"])
        _one_line(result, 2, f"another sweep is running on {out} (pid {os.getpid()})", "choose another --out")
        assert _files(tmp_path) == before
        assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--dry-run", "--quiet"]) == 0
    # The lock's holder is gone (its file, with its pid, stays): the next sweep runs.
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--quiet"]) == 0
    assert len(list((out / "records").glob("*.json"))) == 1 and (out / "notes.txt").read_text() == "mine"
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--report", "--quiet"]) == 0


# --- 4. an empty class folder -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_empty_class_folder_of_the_folder_dataset_is_refused_naming_it(tmp_path):
    from PIL import Image

    root = tmp_path / "shapes"
    for domain in ("a", "b", "c"):
        for name in ("cat", "dog"):
            (root / domain / name).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(root / domain / name / f"{i}.png")
    (root / "a" / "bird").mkdir()
    before = _files(tmp_path)
    result = _run(tmp_path, "promptgen", ["train", "--dataset", "folder", "--data-root", str(root), "--target", "b",
                                          "--method", "zero-shot", "--quiet"])
    _one_line(result, 2, f"class folder {root / 'a' / 'bird'} holds no images", "or remove the folder")
    assert _files(tmp_path) == before


# --- 5. --pretrained that is not a file ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backbone, what, fragment", [
    (["--backbone", "openclip", "--model", "pg-tiny-vit-w64"], "directory", "is a directory, not a checkpoint file"),
    ([], "fifo", "is not a regular file"),
], ids=["openclip-directory", "tiny-clip-digits-fifo"])
def test_pretrained_naming_a_directory_or_a_fifo_says_what_it_is(tmp_path, backbone, what, fragment):
    path = tmp_path / what
    path.mkdir() if what == "directory" else os.mkfifo(path)
    before = _files(tmp_path)
    result = _run(tmp_path, "promptgen", [*TRAIN, *backbone, "--pretrained", str(path)])
    _one_line(result, 2, f"--pretrained {path} {fragment}")
    assert _files(tmp_path) == before


def test_every_backbone_says_what_a_pretrained_path_that_is_not_a_file_is(tmp_path):
    from promptgen.errors import BackboneLoadError
    from promptgen_digits.backbone import TinyClipDigits
    from promptgen_openclip.loading import load_model

    os.mkfifo(tmp_path / "fifo")
    for path, fragment in ((tmp_path, "is a directory, not a checkpoint file"),
                           (tmp_path / "fifo", "is not a regular file"),
                           (tmp_path / "none.pt", "not found")):
        with pytest.raises(BackboneLoadError, match=fragment):
            load_model("pg-tiny-vit-w64", str(path))
        with pytest.raises(BackboneLoadError, match="not a checkpoint file|not a regular file|does not exist"):
            TinyClipDigits(pretrained=str(path), device="cpu")


# --- 6. a plugin that fails to import -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_plugin_that_fails_to_import_is_one_warning_everywhere_and_the_others_work(tmp_path, install_plugin):
    install_plugin("pg_broken", "import pg_no_such_dependency\n", entry_point="broken")
    site = install_plugin.site
    before = _files(tmp_path)
    warnings = []
    for arguments in (["data", "info", "--dataset", "colors"], [*TRAIN, "--dry-run"]):
        result = _run(tmp_path, "promptgen", arguments, site=site)
        warnings.append(_one_line(result, 0, "plugin entry point 'broken'", "pg_no_such_dependency",
                                  "PROMPTGEN_DISABLE_PLUGINS=broken"))
    assert warnings[0] == warnings[1]  # data info and train say the same, and both go on
    quiet = _run(tmp_path, "promptgen", ["data", "info", "--dataset", "colors"], site=site,
                 PROMPTGEN_DISABLE_PLUGINS="broken")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert _files(tmp_path) == before


# --- 7. an exception inside a plugin's code -----------------------------------------------------------------------

FAULTY = '''
from promptgen import hookimpl


class Faulty:
    """A dataset whose listing has a bug."""

    domains = ("a", "b")
    classes = ("x", "y")

    def __init__(self, root=None, seed: int = 0, fail_in_init: bool = False):
        self.table = {}
        if fail_in_init:
            self.table["options"]["seed"] = seed

    def samples(self, domain, split):
        return self.table["missing-key"]

    def load_image(self, sample):
        raise NotImplementedError


@hookimpl
def register_datasets(register):
    register("faulty", Faulty)
'''


@pytest.mark.slow
@pytest.mark.parametrize("arguments", [
    ["data", "info", "--dataset", "faulty"],
    ["train", "--dataset", "faulty", "--target", "a", "--method", "zero-shot", "--quiet", "--set",
     "faulty.fail_in_init=true"],
], ids=["in-a-method", "in-its-factory"])
def test_a_bug_in_a_plugin_is_reported_naming_the_plugin(tmp_path, arguments, install_plugin):
    install_plugin("pg_faulty", FAULTY, entry_point="faulty")
    site = install_plugin.site
    before = _files(tmp_path)
    result = _run(tmp_path, "promptgen", arguments, site=site)
    _one_line(result, 1, "plugin 'faulty' (distribution pg-faulty 0.1; dataset 'faulty') at pg_faulty.py:",
              "raised KeyError:", "a bug in that plugin", "--debug")
    assert _files(tmp_path) == before


# --- 8. a name that a disabled plugin provides --------------------------------------------------------------------


def test_an_unknown_name_from_a_disabled_plugin_names_the_variable(tmp_path):
    result = _run(tmp_path, "promptgen", ["train", "--dataset", "colors", "--target", "solid", "--quiet"],
                  PROMPTGEN_DISABLE_PLUGINS="colors,cvae")
    _one_line(result, 2, "unknown dataset 'colors'", "comes from plugin 'colors'",
              "PROMPTGEN_DISABLE_PLUGINS=colors,cvae disables")
    result = _run(tmp_path, "promptgen", ["train", "--method", "spg-cvae", "--target", "photo", "--quiet"],
                  PROMPTGEN_DISABLE_PLUGINS="colors,cvae")
    _one_line(result, 2, "unknown method 'spg-cvae'", "may come from the disabled plugin 'cvae'")
    assert list(tmp_path.iterdir()) == []


# --- 9. did you mean ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("program, arguments, fragment", [
    ("promptgen", ["train", "--target", "photo", "--method", "zero-shoot"], "unknown method 'zero-shoot'"),
    ("promptgen", [*TRAIN, "--dataset", "digits-gd"], "unknown dataset 'digits-gd'"),
    ("promptgen", [*TRAIN, "--backbone", "tiny-clip-digit"], "unknown backbone 'tiny-clip-digit'"),
    ("promptgen", ["train", "--target", "photo", "--method", "spg", "--generator", "cgn"],
     "generator 'cgn', which is not registered"),
    ("promptgen", ["train", "--target", "photo", "--method", "spg", "--learner", "cop"],
     "prompt learner 'cop', which is not registered"),
    ("promptgen", [*TRAIN, "--set", "zeroshto.n_ctx=4"], "no component is named 'zeroshto'"),
    ("promptgen", [*TRAIN, "--set", "coop.epocs=1"], "unknown option 'epocs'"),
    ("promptgen", ["train", "--target", "phota", "--method", "zero-shot", *SMALL_FLAGS],
     "unknown target domain 'phota'"),
    ("promptgen", ["plugins", "--options", "cgna"], "no component is named 'cgna'"),
    ("promptgen", ["data", "info", "--dataset", "colrs"], "unknown dataset 'colrs'"),
    ("benchmarks", ["--suite", "defualt"], "unknown suite 'defualt'"),
])
def test_a_misspelt_name_gets_the_closest_one(tmp_path, program, arguments, fragment):
    expected = {"zero-shoot": "zero-shot", "digits-gd": "digits-dg", "tiny-clip-digit": "tiny-clip-digits",
                "cgn": "cgan", "cop": "coop", "zeroshto": "zeroshot", "epocs": "epochs", "phota": "photo",
                "cgna": "cgan", "colrs": "colors", "defualt": "default"}
    misspelt = fragment.split("'")[1]
    result = _run(tmp_path, program, arguments)
    line = _one_line(result, 2, fragment)
    assert line.endswith(f"; did you mean {expected[misspelt]!r}?")
    assert list(tmp_path.iterdir()) == []


def test_a_misspelt_launcher_is_refused_before_the_output_directory_is_made(tmp_path, capsys):
    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--launcher", "procesess", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("did you mean 'processes'?") and not out.exists()


# --- nothing lost -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_force_never_deletes_a_folder_that_is_not_a_run(tmp_path, shared_cache):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("three years of work")
    for force in ([], ["--force"]):
        result = _run(tmp_path, "promptgen", [*TRAIN, "--cache-dir", shared_cache, "--out", str(folder), *force])
        line = _one_line(result, 2, ignore_warnings=True)
        assert "is not empty and is not a run directory (it holds thesis.txt)" in line
        assert "choose another --out" in line
        assert (folder / "thesis.txt").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no partial directory either


@pytest.mark.slow
def test_force_still_replaces_a_run(tmp_path, shared_cache):
    out = tmp_path / "run"
    assert _run(tmp_path, "promptgen", [*TRAIN, "--cache-dir", shared_cache, "--out", str(out)]).returncode == 0
    first = json.loads((out / "manifest.json").read_text())["run_id"]
    result = _run(tmp_path, "promptgen", [*TRAIN, "--cache-dir", shared_cache, "--out", str(out)])
    _one_line(result, 2, "already holds a run; pass --force", ignore_warnings=True)
    assert _run(tmp_path, "promptgen", [*TRAIN, "--cache-dir", shared_cache, "--out", str(out), "--force"]
                ).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["run_id"] != first


@pytest.mark.slow
def test_report_never_rewrites_another_suites_tables(tmp_path, shared_cache):
    suite = tmp_path / "mine.toml"
    suite.write_text(SUITE.format(name="mine"))
    out = tmp_path / "out"
    assert _run(tmp_path, "benchmarks", ["--suite", str(suite), "--out", str(out), "--cache-dir", shared_cache,
                                         "--quiet"]).returncode == 0
    before = _files(out)
    for extra in (["--report"], []):
        result = _run(tmp_path, "benchmarks", ["--suite", "default", "--out", str(out), "--cache-dir", shared_cache,
                                               *extra])
        _one_line(result, 2, "holds the results of suite 'mine'", "pass --suite mine", ignore_warnings=True)
        assert _files(out) == before
    # records without a summary (a first sweep that was killed): --report of another suite still refuses
    (out / "summary.json").unlink()
    before = _files(out)
    other = tmp_path / "other.toml"
    other.write_text(SUITE.format(name="other").replace('"photo"', '"sketch"'))
    result = _run(tmp_path, "benchmarks", ["--suite", str(other), "--out", str(out), "--cache-dir", shared_cache,
                                           "--report"])
    _one_line(result, 2, "none of the 1 records under", ignore_warnings=True)
    assert _files(out) == before


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "[0.5, nan]"])
def test_non_finite_settings_are_refused_before_anything_runs(tmp_path, value):
    result = _run(tmp_path, "promptgen", ["train", "--target", "photo", "--method", "coop", "--set",
                                          f"coop.lr={value}", "--dry-run"])
    _one_line(result, 2, "option 'lr' must be a finite number", ignore_warnings=True)
    result = _run(tmp_path, "benchmarks", ["--set", f"coop.lr={value}", "--dry-run"])
    _one_line(result, 2, "must be a finite number", ignore_warnings=True)
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_logits_are_not_finite_fails_and_is_not_saved(tmp_path, shared_cache, monkeypatch, capsys):
    """A method that diverged (its logits NaN) is a failed run, not a saved one at chance accuracy."""
    from promptgen_zeroshot.method import ZeroShot

    monkeypatch.setattr(ZeroShot, "logits", lambda self, run, split: torch.full((len(run.samples(split)), 10),
                                                                                        float("nan")))
    out = tmp_path / "run"
    assert cli.main([*TRAIN, "--cache-dir", shared_cache, "--out", str(out)]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "method 'zero-shot' on val" in line and "NaN or infinite logits: the training diverged" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_an_emptied_cache_file_is_damage_not_an_empty_cache(tmp_path):
    cache = tmp_path / "cache"
    assert _run(tmp_path, "promptgen", [*TRAIN, "--cache-dir", str(cache), "--out", str(tmp_path / "run")]
                ).returncode == 0
    (cache / "features.lmdb" / "data.mdb").write_bytes(b"")
    result = _run(tmp_path, "promptgen", ["cache", "verify", "--cache-dir", str(cache)])
    assert "data.mdb is empty (0 bytes) though it held" in result.stdout
    _one_line(result, 1, "--repair", ignore_warnings=True)
    result = _run(tmp_path, "promptgen", ["cache", "info", "--cache-dir", str(cache)])
    _one_line(result, 1, "its features are gone", ignore_warnings=True)
    assert _run(tmp_path, "promptgen", ["cache", "verify", "--repair", "--cache-dir", str(cache)]).returncode == 0
    assert "ok: 0 entries" in _run(tmp_path, "promptgen", ["cache", "verify", "--cache-dir", str(cache)]).stdout


@pytest.mark.slow
def test_an_empty_cache_variable_is_refused(tmp_path):
    result = _run(tmp_path, "promptgen", ["cache", "info"], PROMPTGEN_CACHE_DIR="")
    _one_line(result, 2, "$PROMPTGEN_CACHE_DIR is set but empty: unset it", ignore_warnings=True)


@pytest.mark.slow
def test_out_inside_the_cache_database_is_refused(tmp_path, shared_cache):
    database = Path(shared_cache) / "features.lmdb"
    before = sorted(p.name for p in database.iterdir())
    for program, arguments in (("promptgen", TRAIN), ("benchmarks", ["--targets", "photo"])):
        result = _run(tmp_path, program, [*arguments, "--cache-dir", shared_cache, "--out", str(database / "run")])
        _one_line(result, 2, "is inside the feature cache's database directory", ignore_warnings=True)
    assert sorted(p.name for p in database.iterdir()) == before


@contextlib.contextmanager
def full_disk(tmp_path: Path):
    """A 1 MiB tmpfs filled to the last block (needs root and mount), else None."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        yield None
        return
    try:
        descriptor = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        with contextlib.suppress(OSError):
            while True:
                os.write(descriptor, b"\0" * 4096)
        os.close(descriptor)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_when_the_cache_is_opened_is_a_message_not_a_bus_error(tmp_path, monkeypatch):
    with full_disk(tmp_path) as mount:
        if mount is not None:  # the real thing: before, LMDB's lock file was extended through its map (SIGBUS)
            cache = mount / "cache"
            for arguments in (["cache", "info"], ["cache", "verify"], [*TRAIN, "--out", str(tmp_path / "run")]):
                result = _run(tmp_path, "promptgen", [*arguments, "--cache-dir", str(cache)])
                # exit 1, not 135 (SIGBUS)
                _one_line(result, 1, "no space left on the disk holding the feature cache", ignore_warnings=True)
                assert not (cache / "features.lmdb" / "lock.mdb").exists()
            assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))
            return
    # No tmpfs to mount here: a file system that reports no space when the lock file is allocated.
    from promptgen.storage import lmdb_env

    def no_space(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lmdb_env.os, "posix_fallocate", no_space)
    with pytest.raises(CacheError, match="no space left on the disk holding the feature cache"):
        FeatureCache(tmp_path / "cache")
    assert not (tmp_path / "cache" / "features.lmdb" / "lock.mdb").exists()


# --- damaged caches -----------------------------------------------------------------------------------------------


def _samples(dataset):
    return [s for domain in ("photo", "sketch") for split in ("val", "test") for s in dataset.samples(domain, split)]


@pytest.fixture(scope="module")
def intact(tmp_path_factory, tiny_backbone):
    """A small cache of eval features (digits-dg at 10 per class, the tiny random backbone) and its contents."""
    from promptgen_digits.dataset import DigitsDG

    root = tmp_path_factory.mktemp("intact")
    dataset = DigitsDG(options=DigitsDG.Options(per_class=10, cache_dir=root))
    with FeatureCache(root) as cache:
        features = cache.get(tiny_backbone, dataset, "digits-dg", _samples(dataset), progress=False).features
    return root, dataset, features


def _in_child(function, *args):
    """Run ``function(*args)`` in a forked process: (its exit code, what it returned). A signal is a negative code."""
    context = multiprocessing.get_context("fork")
    parent, child = context.Pipe(duplex=False)

    def target():
        torch.set_num_threads(1)  # OpenMP's thread pool does not survive a fork: one thread, no pool
        try:
            child.send(("ok", function(*args)))
        except BaseException as error:  # sent back as text: the parent asserts on it
            child.send(("error", f"{type(error).__name__}: {error}"))

    process = context.Process(target=target)
    process.start()
    result = parent.recv() if parent.poll(120) else None
    process.join(30)
    return process.exitcode, result


def _damaged_cache_behaviour(root, dataset, backbone, intact_features):
    """What a user's commands do with a damaged cache: open, verify, read, repair, read again."""
    outcome = {}

    def read(cache):
        got = cache.get(backbone, dataset, "digits-dg", _samples(dataset), progress=False).features
        # equal up to float16 rounding: an entry computed again (damaged, or its key damaged) is encoded in a
        # batch of another size, which changes the last bits; a damaged value used would be far off
        return "equal" if torch.allclose(got, intact_features, rtol=0, atol=5e-3) else "DIFFERENT"

    try:
        cache = FeatureCache(root)
    except DamagedCacheError as error:  # damage that LMDB must not even map: rebuilt from the file's bytes
        outcome["open"] = f"refused: {error}"
        outcome["salvaged"] = salvage_files(root)
        cache = FeatureCache(root)
        outcome["read"] = read(cache)
    else:
        outcome["problems"] = len(cache.verify())
        try:
            outcome["read"] = read(cache)
            outcome["recomputed"] = cache.recomputed
        except CacheError as error:
            outcome["read"] = f"refused: {error}"
        cache.repair()
    with cache:
        outcome["after repair"] = read(cache)
    return outcome


@pytest.mark.slow
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blobs=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.binary(min_size=16, max_size=16)),
                      min_size=1, max_size=200) | st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                                     st.binary(min_size=1, max_size=16)),
                                                           min_size=1, max_size=3))
def test_random_damage_is_never_used_and_never_kills_the_process(intact, tiny_backbone, tmp_path_factory, blobs):
    root, dataset, features = intact
    copy = tmp_path_factory.mktemp("damaged")
    shutil.copytree(root / "features.lmdb", copy / "features.lmdb")
    data = copy / "features.lmdb" / "data.mdb"
    size = data.stat().st_size
    with open(data, "r+b") as file:
        for fraction, blob in blobs:
            file.seek(int(fraction * (size - 16)))
            file.write(blob)
    code, result = _in_child(_damaged_cache_behaviour, copy, dataset, tiny_backbone, features)
    assert code == 0, f"the process died (exit {code}) on a cache damaged at {[round(f, 4) for f, _ in blobs]}"
    status, outcome = result
    assert status == "ok", outcome
    # a damaged entry is never used: a read returns the intact features (recomputing what it must) or refuses
    assert outcome["read"] == "equal" or outcome["read"].startswith("refused: the feature cache at"), outcome
    assert outcome["after repair"] == "equal", outcome  # repair keeps the intact, recomputes the rest


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fraction=st.floats(0.05, 0.95))
def test_a_truncated_cache_is_named_and_can_be_cleared(intact, tmp_path_factory, fraction, capsys):
    root, _, _ = intact
    copy = tmp_path_factory.mktemp("truncated")
    shutil.copytree(root / "features.lmdb", copy / "features.lmdb")
    data = copy / "features.lmdb" / "data.mdb"
    os.truncate(data, int(fraction * data.stat().st_size))
    for command in (["cache", "verify"], ["cache", "info"], ["cache", "clear", "--dataset", "digits-dg"]):
        code, _ = _in_child(cli.main, [*command, "--cache-dir", str(copy)])
        assert code == 0  # cli.main returned (its own exit code is below): no signal
        assert cli.main([*command, "--cache-dir", str(copy)]) in (1, 2)
        captured = capsys.readouterr()
        said = [line for line in (captured.out + captured.err).splitlines() if line]
        assert len(said) <= 2 and "truncated" in said[0] and "Traceback" not in captured.err
    assert cli.main(["cache", "clear", "--all", "--cache-dir", str(copy)]) == 0
    assert cli.main(["cache", "verify", "--cache-dir", str(copy)]) == 0
    assert "ok: 0 entries" in capsys.readouterr().out


def test_an_overwritten_header_is_named_and_clear_all_still_works(intact, tmp_path, capsys):
    root, _, _ = intact
    shutil.copytree(root / "features.lmdb", tmp_path / "features.lmdb")
    data = tmp_path / "features.lmdb" / "data.mdb"
    with open(data, "r+b") as file:
        file.write(os.urandom(64))
    assert cli.main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 1
    assert "meta pages (its first bytes) is damaged" in capsys.readouterr().out
    assert cli.main(["cache", "clear", "--all", "--cache-dir", str(tmp_path)]) == 0
    assert cli.main(["cache", "verify", "--cache-dir", str(tmp_path)]) == 0


def test_a_read_only_cache_serves_its_features_and_stores_nothing(intact, tiny_backbone, tmp_path, monkeypatch):
    from promptgen.storage import lmdb_env
    from promptgen.errors import ConfigError

    root, dataset, features = intact
    shutil.copytree(root / "features.lmdb", tmp_path / "features.lmdb")
    before = (tmp_path / "features.lmdb" / "data.mdb").read_bytes()

    def read_only(path, what):  # what writable_dir meets on a read-only file system (root ignores chmod)
        raise ConfigError(f"{what}: cannot write to {path} (Read-only file system)")

    monkeypatch.setattr(lmdb_env, "writable_dir", read_only)
    with FeatureCache(tmp_path) as cache:
        assert cache.readonly
        assert torch.equal(cache.get(tiny_backbone, dataset, "digits-dg", _samples(dataset), progress=False).features,
                           features)
        more = dataset.samples("handwritten", "val")[:5]  # not cached: computed, not stored
        cache.get(tiny_backbone, dataset, "digits-dg", more, progress=False)
        assert cache.unstored == 5
    assert (tmp_path / "features.lmdb" / "data.mdb").read_bytes() == before


def test_a_full_disk_says_so_and_keeps_what_was_stored(intact, tiny_backbone, tmp_path, monkeypatch):
    import collections

    import lmdb

    from promptgen.storage import lmdb_env

    root, dataset, features = intact
    shutil.copytree(root / "features.lmdb", tmp_path / "features.lmdb")
    with FeatureCache(tmp_path) as cache:
        Usage = collections.namedtuple("Usage", "total used free")
        monkeypatch.setattr(lmdb_env.shutil, "disk_usage", lambda path: Usage(100, 100, 0))

        def no_space(txn):
            raise lmdb.Error("mdb_txn_commit: Input/output error")

        with pytest.raises(CacheError, match=r"no space left on the disk holding the feature cache .* features already "
                                             r"stored stay valid"):
            cache._write(no_space)
        assert torch.equal(cache.get(tiny_backbone, dataset, "digits-dg", _samples(dataset), progress=False).features,
                           features)


def test_a_changed_image_is_encoded_again(tiny_backbone, tmp_path):
    """Disk datasets key their features by the file's content identity (size + mtime, or a hash)."""
    from PIL import Image

    for domain in ("a", "b"):
        for cls in ("cat", "dog"):
            (tmp_path / "data" / domain / cls).mkdir(parents=True)
            for i in range(5):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "data" / domain / cls / f"{i}.png")
    registry = load_registry()

    def features(**options):
        dataset = registry.create("dataset", "folder", root=str(tmp_path / "data"), progress=False,
                                  cache_dir=str(tmp_path), **options)
        with FeatureCache(tmp_path) as cache:
            before = sum(row["entries"] for row in cache.info())
            cache.get(tiny_backbone, dataset, "folder", dataset.samples("a", "test"), progress=False)
            return sum(row["entries"] for row in cache.info()) - before

    assert features() == 10
    assert features() == 0
    Image.new("RGB", (8, 8), (0, 200, 0)).save(tmp_path / "data" / "a" / "cat" / "3.png")  # new pixels, same name
    assert features() == 1
    assert features(content_hash=True) == 10  # keyed by hashes now: every image once more
    os.utime(tmp_path / "data" / "a" / "dog" / "1.png")  # touched, bytes unchanged: the hash keeps its features
    assert features(content_hash=True) == 0


# --- generators that return garbage -------------------------------------------------------------------------------

BROKEN_GENERATOR = '''
import torch
from promptgen import hookimpl


class Broken:
    """Returns NaN prompts, or prompts of the wrong shape (a test plugin)."""

    def __init__(self, feature_dim, n_ctx, ctx_dim, mode: str = "nan"):
        self.shape, self.mode = (n_ctx, ctx_dim), mode

    def fit(self, backbone, train, prompt_labels, val):
        return {}

    def sample(self, features):
        if self.mode == "nan":
            return torch.full((len(features), *self.shape), float("nan"))
        return torch.zeros(len(features), self.shape[0] + 1, self.shape[1])

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


@hookimpl
def register_generators(register):
    register("broken", Broken)
'''


@pytest.mark.parametrize("mode, message", [
    ("nan", r"generator 'broken': sample\(\) returned non-finite prompts \(NaN or inf\) for \d+ of \d+ images"),
    ("shape", r"generator 'broken': sample\(\) returned prompts of shape \(\d+, 5, \d+\); expected \[N=\d+, n_ctx=4"),
])
def test_a_generator_returning_garbage_is_stopped_and_named_and_leaves_no_run(install_plugin, tmp_path, mode, message):
    install_plugin("promptgen_broken_generator", BROKEN_GENERATOR)
    config = RunConfig(targets="photo", method="spg-broken", views=1, backbone={"device": "cpu"},
                       overrides={**SMALL, "coop": {"epochs": 1, "warmup_epochs": 0}, "broken": {"mode": mode}})
    with pytest.raises(GeneratorError, match=message):
        run(config, tmp_path / "run", registry=load_registry(), progress=False)
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))


# --- runs killed --------------------------------------------------------------------------------------------------

KILL_RUN = ["--target", "photo", "--method", "spg", "--views", "1", "--quiet", "--set", "digits-dg.per_class=5",
            "--set", "coop.epochs=2", "--set", "cgan.epochs=3", "--set", "cgan.batch_size=16"]


def _train(out: Path, cache: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PROMPTGEN_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "promptgen", "train", *KILL_RUN, "--out", str(out), *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _whole_or_absent(out: Path) -> None:
    if out.exists():
        evaluate_run(out, progress=False)  # verifies the manifest first


@pytest.mark.slow
def test_runs_killed_in_extraction_stage_ii_and_writing_rerun_to_the_uninterrupted_result(tmp_path):
    """kill -9 at three points of one run (from its measured timeline), each followed by the same command."""
    reference_out, cache = tmp_path / "reference", tmp_path / "cache"
    start = time.perf_counter()
    reference = _train(reference_out, tmp_path / "reference-cache")
    assert reference.wait(120) == 0, reference.stderr.read().decode()
    total = time.perf_counter() - start
    expected = json.loads((reference_out / "metrics.json").read_text())
    seconds = expected["seconds"]
    startup = max(0.5, total - sum(seconds.values()))
    points = {  # seconds after launch: during extraction, during stage II, while the outputs are written
        "extraction": startup + 0.5 * seconds.get("features", 0.2),
        "stage II": startup + seconds.get("features", 0) + seconds.get("stage1", 0) + 0.5 * seconds["stage2"],
        "writing": total - 0.05,
    }
    out = tmp_path / "run"
    for where, delay in points.items():
        process = _train(out, cache, "--force")
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        _whole_or_absent(out)  # never half a run, whatever the point
    final = _train(out, cache, "--force")
    assert final.wait(120) == 0, final.stderr.read().decode()
    got = json.loads((out / "metrics.json").read_text())
    assert got["test_accuracy"] == expected["test_accuracy"] and got["val_accuracy"] == expected["val_accuracy"]
    assert got["generator_quality"] == expected["generator_quality"]
    with FeatureCache(cache) as resumed, FeatureCache(tmp_path / "reference-cache") as fresh:
        assert resumed.verify() == [] and sum(r["entries"] for r in resumed.info()) == sum(
            r["entries"] for r in fresh.info())


@pytest.mark.slow
def test_ctrl_c_in_a_sweep_says_one_line_exits_130_and_the_rerun_resumes(tmp_path):
    suite = tmp_path / "interrupted.toml"
    suite.write_text('description = "ctrl-c"\nmethods = ["zero-shot", "coop"]\nseeds = [0, 1, 2]\n'
                     'targets = ["photo"]\nviews = 1\n[backbone]\ndevice = "cpu"\n'
                     '[overrides.digits-dg]\nper_class = 10\n[overrides.coop]\nepochs = 8\n')  # long enough to interrupt
    out, env = tmp_path / "out", {**os.environ, "PROMPTGEN_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "benchmarks.run", "--suite", str(suite), "--out", str(out), "--quiet"]
    sweep = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             cwd=Path(__file__).parent.parent)
    deadline = time.time() + 120
    while not list((out / "records").glob("*.json")) and time.time() < deadline:  # the first job finished
        time.sleep(0.2)
    sweep.send_signal(signal.SIGINT)
    assert sweep.wait(60) == 130
    lines = sweep.stderr.read().decode().strip().splitlines()
    assert lines[-1] == "benchmarks.run: interrupted; rerun the same command to resume"
    assert not any("Traceback" in line for line in lines)
    done = len(list((out / "records").glob("*.json")))
    assert 1 <= done < 4
    again = subprocess.run(command, env=env, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert again.returncode == 0, again.stderr
    assert f"4 jobs, {done} already done" in again.stdout


# --- plugins ------------------------------------------------------------------------------------------------------

COMMANDS_RAISE = '''
from promptgen import hookimpl

@hookimpl
def add_commands(commands):
    raise RuntimeError("this plugin is broken")
'''

CLASHES = '''
from promptgen import hookimpl
from promptgen_cgan.generator import CGANGenerator

@hookimpl
def register_generators(register):
    register("cgan", CGANGenerator)
'''


def test_a_broken_plugin_is_reported_and_the_rest_of_the_tool_works(install_plugin, capsys, tmp_path):
    install_plugin("pg_commands_raise", COMMANDS_RAISE)
    install_plugin("pg_import_fails", "raise ImportError('a missing dependency')")
    install_plugin("pg_clashes", CLASHES)
    with pytest.raises(SystemExit) as help_exit:
        cli.main(["--help"])
    assert help_exit.value.code == 0 and "COMMAND" in capsys.readouterr().out
    assert cli.main(["plugins"]) == 1
    captured = capsys.readouterr()
    assert "method          zero-shot" in captured.out  # everything else still listed
    for fragment in ("pg_commands_raise' raised in add_commands: RuntimeError: this plugin is broken",
                     "'pg_import_fails' (from distribution 'pg-import-fails') failed to import",
                     "generator 'cgan' is registered by two plugins: 'cgan' and 'pg_clashes'"):
        assert fragment in captured.err
    out = tmp_path / "run"
    assert cli.main(["train", "--target", "photo", "--method", "zero-shot", "--set", "digits-dg.per_class=5",
                     "--quiet", "--out", str(out)]) == 0  # a command that needs none of them works
    assert "promptgen: warning:" in capsys.readouterr().err


def test_a_plugin_can_be_disabled_by_name(install_plugin, monkeypatch, capsys):
    install_plugin("pg_import_fails", "raise ImportError('a missing dependency')")
    monkeypatch.setenv("PROMPTGEN_DISABLE_PLUGINS", "pg_import_fails,cvae")
    registry = load_registry()  # strict: the broken plugin is not even imported
    assert "cvae" not in registry.names("generator") and "spg-cvae" not in registry.names("method")
    assert set(registry.disabled) == {"pg_import_fails", "cvae"}
    assert cli.main(["plugins"]) == 0
    assert "disabled: plugin cvae (by $PROMPTGEN_DISABLE_PLUGINS)" in capsys.readouterr().err
