"""Bad input and bad luck lose nothing (issue 26): each case runs as the user runs it, in a subprocess, and is
checked for its exit code, the one line that names the problem and the fix, and that files already there
are as they were."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TRAIN = ["train", "--target", "photo", "--method", "zero-shot", "--quiet", "--set", "digits-dg.per_class=5"]
SUITE = ('description = "{name}"\ntargets = ["photo"]\nmethods = ["zero-shot"]\n[backbone]\ndevice = "cpu"\n'
         '[overrides.digits-dg]\nper_class = 5\n')


def run(program: str, *arguments: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = ([sys.executable, "-m", "promptgen"] if program == "promptgen"
               else [sys.executable, "-m", "benchmarks.run"]) + list(arguments)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    if program == "benchmarks":
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1]),
                                                                  environment.get("PYTHONPATH")]))
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=300)


def one_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip() and "warning:" not in line]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


@pytest.fixture
def shared_cache() -> str:
    """The session's private cache (tests/conftest.py), which the subprocesses inherit too."""
    return os.environ["PROMPTGEN_CACHE_DIR"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_force_never_deletes_a_folder_that_is_not_a_run(tmp_path, shared_cache):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "thesis.txt").write_text("three years of work")
    for force in ([], ["--force"]):
        result = run("promptgen", *TRAIN, "--cache-dir", shared_cache, "--out", str(folder), *force, cwd=tmp_path)
        assert result.returncode == 2
        line = one_line(result)
        assert "is not empty and is not a run directory (it holds thesis.txt)" in line and "choose another --out" in line
        assert (folder / "thesis.txt").read_text() == "three years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis"]  # no partial directory either


@pytest.mark.slow
def test_force_still_replaces_a_run(tmp_path, shared_cache):
    out = tmp_path / "run"
    assert run("promptgen", *TRAIN, "--cache-dir", shared_cache, "--out", str(out), cwd=tmp_path).returncode == 0
    first = json.loads((out / "manifest.json").read_text())["run_id"]
    result = run("promptgen", *TRAIN, "--cache-dir", shared_cache, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2 and "already holds a run; pass --force" in one_line(result)
    assert run("promptgen", *TRAIN, "--cache-dir", shared_cache, "--out", str(out), "--force",
               cwd=tmp_path).returncode == 0
    assert json.loads((out / "manifest.json").read_text())["run_id"] != first


@pytest.mark.slow
def test_report_never_rewrites_another_suites_tables(tmp_path, shared_cache):
    suite = tmp_path / "mine.toml"
    suite.write_text(SUITE.format(name="mine"))
    out = tmp_path / "out"
    assert run("benchmarks", "--suite", str(suite), "--out", str(out), "--cache-dir", shared_cache, "--quiet",
               cwd=tmp_path).returncode == 0
    before = snapshot(out)
    for extra in (["--report"], []):
        result = run("benchmarks", "--suite", "default", "--out", str(out), "--cache-dir", shared_cache, *extra,
                     cwd=tmp_path)
        assert result.returncode == 2
        line = one_line(result)
        assert "holds the results of suite 'mine'" in line and "pass --suite mine" in line
        assert snapshot(out) == before
    # records without a summary (a first sweep that was killed): --report of another suite still refuses
    (out / "summary.json").unlink()
    before = snapshot(out)
    other = tmp_path / "other.toml"
    other.write_text(SUITE.format(name="other").replace('"photo"', '"sketch"'))
    result = run("benchmarks", "--suite", str(other), "--out", str(out), "--cache-dir", shared_cache, "--report",
                 cwd=tmp_path)
    assert result.returncode == 2 and "none of the 1 records under" in one_line(result)
    assert snapshot(out) == before


@pytest.mark.slow
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e309", "[0.5, nan]"])
def test_non_finite_settings_are_refused_before_anything_runs(tmp_path, value):
    result = run("promptgen", "train", "--target", "photo", "--method", "coop", "--set", f"coop.lr={value}",
                 "--dry-run", cwd=tmp_path)
    assert result.returncode == 2
    assert "option 'lr' must be a finite number" in one_line(result)
    result = run("benchmarks", "--set", f"coop.lr={value}", "--dry-run", cwd=tmp_path)
    assert result.returncode == 2 and "must be a finite number" in one_line(result)
    assert list(tmp_path.iterdir()) == []


def test_a_run_whose_logits_are_not_finite_fails_and_is_not_saved(tmp_path, shared_cache, monkeypatch, capsys):
    """A method that diverged (its logits NaN) is a failed run, not a saved one at chance accuracy."""
    import torch

    from promptgen import cli
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
    assert run("promptgen", *TRAIN, "--cache-dir", str(cache), "--out", str(tmp_path / "run"), cwd=tmp_path
               ).returncode == 0
    (cache / "features.lmdb" / "data.mdb").write_bytes(b"")
    result = run("promptgen", "cache", "verify", "--cache-dir", str(cache), cwd=tmp_path)
    assert result.returncode == 1 and "data.mdb is empty (0 bytes) though it held" in result.stdout
    assert "--repair" in one_line(result)
    result = run("promptgen", "cache", "info", "--cache-dir", str(cache), cwd=tmp_path)
    assert result.returncode == 1 and "its features are gone" in one_line(result)
    assert run("promptgen", "cache", "verify", "--repair", "--cache-dir", str(cache), cwd=tmp_path).returncode == 0
    assert "ok: 0 entries" in run("promptgen", "cache", "verify", "--cache-dir", str(cache), cwd=tmp_path).stdout


@pytest.mark.slow
def test_an_empty_cache_variable_is_refused(tmp_path):
    result = run("promptgen", "cache", "info", cwd=tmp_path, env={"PROMPTGEN_CACHE_DIR": ""})
    assert result.returncode == 2
    assert "$PROMPTGEN_CACHE_DIR is set but empty: unset it" in one_line(result)


@pytest.mark.slow
def test_out_inside_the_cache_database_is_refused(tmp_path, shared_cache):
    database = Path(shared_cache) / "features.lmdb"
    before = sorted(p.name for p in database.iterdir())
    for program, arguments in (("promptgen", TRAIN), ("benchmarks", ["--targets", "photo"])):
        result = run(program, *arguments, "--cache-dir", shared_cache, "--out", str(database / "run"), cwd=tmp_path)
        assert result.returncode == 2
        assert "is inside the feature cache's database directory" in one_line(result)
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
                result = run("promptgen", *arguments, "--cache-dir", str(cache), cwd=tmp_path)
                assert result.returncode == 1, result.stderr  # not 135 (SIGBUS)
                assert "no space left on the disk holding the feature cache" in one_line(result)
                assert not (cache / "features.lmdb" / "lock.mdb").exists()
            assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run.partial-*"))
            return
    # No tmpfs to mount here: a file system that reports no space when the lock file is allocated.
    from promptgen.storage import lmdb_env
    from promptgen.storage.cache import FeatureCache
    from promptgen.errors import CacheError

    def no_space(descriptor, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lmdb_env.os, "posix_fallocate", no_space)
    with pytest.raises(CacheError, match="no space left on the disk holding the feature cache"):
        FeatureCache(tmp_path / "cache")
    assert not (tmp_path / "cache" / "features.lmdb" / "lock.mdb").exists()
