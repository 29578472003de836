"""Cases that were safe but unclear (issue 26): each gets one line on stderr naming what is at fault and the fix,
the right exit code (2 bad input, 1 a failure of the run, 143 SIGTERM), and loses nothing already written.

Each case runs the real command in a fresh process, as a user would; files are compared byte for byte before
and after.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).parents[1]
SMALL = ["--set", "digits-dg.per_class=5", "--quiet"]
ZERO_SHOT = ["train", "--target", "photo", "--method", "zero-shot", *SMALL]
TINY_SUITE = ('description = "tiny"\ntargets = ["photo"]\nmethods = ["zero-shot"]\n[backbone]\ndevice = "cpu"\n'
              '[overrides.digits-dg]\nper_class = 5\n')


def _env(site: Path | None = None, **variables: str) -> dict:
    paths = [str(site)] if site else []
    paths += [str(ROOT), os.environ.get("PYTHONPATH", "")]  # benchmarks importable from any working directory
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, paths)),
            "PYTHONDONTWRITEBYTECODE": "1", **variables}  # no __pycache__ beside a test's plugin


def _run(tmp_path: Path, program: str, arguments: list[str], site: Path | None = None, **variables: str):
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


# --- 1. SIGTERM ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_during_a_run_exits_143_with_one_line_and_leaves_no_partial_directory(tmp_path):
    kept = tmp_path / "runs" / "an-earlier-run"
    kept.mkdir(parents=True)
    (kept / "metrics.json").write_text('{"test_accuracy": {"photo": 0.9}}')
    before = _files(tmp_path)
    out = tmp_path / "runs" / "coop"
    command = [sys.executable, "-m", "promptgen", "train", "--target", "photo", "--method", "coop", "--set",
               "coop.epochs=500", "--seed", "3", "--out", str(out), *SMALL]
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


# --- 2. a target, method or seed listed twice ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("program, arguments, fragment", [
    ("benchmarks", ["--targets", "photo", "photo"], "--targets: 'photo' is listed twice"),
    ("promptgen", [*ZERO_SHOT, "--target", "photo", "photo"], "--target lists 'photo' twice"),
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
    from benchmarks import run as benchmarks_run

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


# --- 3. two sweeps on one --out -----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_second_sweep_on_the_same_out_is_refused_and_a_dead_ones_lock_blocks_nothing(tmp_path):
    from benchmarks import out_dir
    from benchmarks import run as benchmarks_run

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


# --- 4. an empty class folder -------------------------------------------------------------------------------


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


# --- 5. --pretrained that is not a file ---------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backbone, what, fragment", [
    (["--backbone", "openclip", "--model", "pg-tiny-vit-w64"], "directory", "is a directory, not a checkpoint file"),
    ([], "fifo", "is not a regular file"),
], ids=["openclip-directory", "tiny-clip-digits-fifo"])
def test_pretrained_naming_a_directory_or_a_fifo_says_what_it_is(tmp_path, backbone, what, fragment):
    path = tmp_path / what
    path.mkdir() if what == "directory" else os.mkfifo(path)
    before = _files(tmp_path)
    result = _run(tmp_path, "promptgen", [*ZERO_SHOT, *backbone, "--pretrained", str(path)])
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


# --- 6. a plugin that fails to import -----------------------------------------------------------------------


@pytest.mark.slow
def test_a_plugin_that_fails_to_import_is_one_warning_everywhere_and_the_others_work(tmp_path, install_plugin):
    install_plugin("pg_broken", "import pg_no_such_dependency\n", entry_point="broken")
    site = install_plugin.site
    before = _files(tmp_path)
    warnings = []
    for arguments in (["data", "info", "--dataset", "colors"], [*ZERO_SHOT, "--dry-run"]):
        result = _run(tmp_path, "promptgen", arguments, site=site)
        warnings.append(_one_line(result, 0, "plugin entry point 'broken'", "pg_no_such_dependency",
                                  "PROMPTGEN_DISABLE_PLUGINS=broken"))
    assert warnings[0] == warnings[1]  # data info and train say the same, and both go on
    quiet = _run(tmp_path, "promptgen", ["data", "info", "--dataset", "colors"], site=site,
                 PROMPTGEN_DISABLE_PLUGINS="broken")
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert _files(tmp_path) == before


# --- 7. an exception inside a plugin's code -----------------------------------------------------------------

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


# --- 8. a name that a disabled plugin provides --------------------------------------------------------------


def test_an_unknown_name_from_a_disabled_plugin_names_the_variable(tmp_path):
    result = _run(tmp_path, "promptgen", ["train", "--dataset", "colors", "--target", "solid", "--quiet"],
                  PROMPTGEN_DISABLE_PLUGINS="colors,cvae")
    _one_line(result, 2, "unknown dataset 'colors'", "comes from plugin 'colors'",
              "PROMPTGEN_DISABLE_PLUGINS=colors,cvae disables")
    result = _run(tmp_path, "promptgen", ["train", "--method", "spg-cvae", "--target", "photo", "--quiet"],
                  PROMPTGEN_DISABLE_PLUGINS="colors,cvae")
    _one_line(result, 2, "unknown method 'spg-cvae'", "may come from the disabled plugin 'cvae'")
    assert list(tmp_path.iterdir()) == []


# --- 9. did you mean ----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("program, arguments, fragment", [
    ("promptgen", ["train", "--target", "photo", "--method", "zero-shoot"], "unknown method 'zero-shoot'"),
    ("promptgen", [*ZERO_SHOT, "--dataset", "digits-gd"], "unknown dataset 'digits-gd'"),
    ("promptgen", [*ZERO_SHOT, "--backbone", "tiny-clip-digit"], "unknown backbone 'tiny-clip-digit'"),
    ("promptgen", ["train", "--target", "photo", "--method", "spg", "--generator", "cgn"],
     "generator 'cgn', which is not registered"),
    ("promptgen", ["train", "--target", "photo", "--method", "spg", "--learner", "cop"],
     "prompt learner 'cop', which is not registered"),
    ("promptgen", [*ZERO_SHOT, "--set", "zeroshto.n_ctx=4"], "no component is named 'zeroshto'"),
    ("promptgen", [*ZERO_SHOT, "--set", "coop.epocs=1"], "unknown option 'epocs'"),
    ("promptgen", ["train", "--target", "phota", "--method", "zero-shot", *SMALL], "unknown target domain 'phota'"),
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
    from benchmarks import run as benchmarks_run

    suite = tmp_path / "tiny.toml"
    suite.write_text(TINY_SUITE)
    out = tmp_path / "out"
    assert benchmarks_run.main(["--suite", str(suite), "--out", str(out), "--launcher", "procesess", "--quiet"]) == 2
    assert capsys.readouterr().err.strip().endswith("did you mean 'processes'?") and not out.exists()
