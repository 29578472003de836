"""Nothing silently wrong, nothing lost: damaged and truncated caches, runs killed at any point, generators that
return garbage, changed images, broken plugins and read-only caches."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptgen import cli
from promptgen.storage.cache import FeatureCache
from promptgen.storage.cache_maintenance import salvage_files
from promptgen.storage.lmdb_env import DamagedCacheError
from promptgen.runs.config import RunConfig
from promptgen.runs.engine import evaluate_run, run
from promptgen.errors import CacheError, GeneratorError, RunDirectoryError
from promptgen.components.registry import load_registry

SMALL = {"digits-dg": {"per_class": 10}}


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


# --- generators that return garbage -----------------------------------------------------------------------------

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


# --- run directories --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_directory_is_replaced_only_when_asked_and_then_whole(tmp_path):
    config = RunConfig(targets="photo", method="coop", views=1, backbone={"device": "cpu"},
                       overrides={**SMALL, "coop": {"epochs": 1, "warmup_epochs": 0}})
    first = run(config, tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="already holds a run; pass --force"):
        run(config, tmp_path / "run", progress=False)
    second = run(attrs.evolve(config, seed=1), tmp_path / "run", progress=False, force=True)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["run"]["seed"] == 1 and json.loads((tmp_path / "run" / "metrics.json").read_text())["seed"] == 1
    assert first["seed"] == 0 and second["seed"] == 1


@pytest.mark.slow
def test_evaluate_names_what_a_run_directory_is_missing_or_mixed_from(tmp_path):
    config = RunConfig(targets="photo", method="coop", views=1, backbone={"device": "cpu"},
                       overrides={**SMALL, "coop": {"epochs": 1, "warmup_epochs": 0}})
    run(config, tmp_path / "run", progress=False)
    (tmp_path / "run" / "metrics.json").unlink()
    with pytest.raises(RunDirectoryError, match="not one whole run .*missing: metrics.json"):
        evaluate_run(tmp_path / "run", progress=False)
    shutil.rmtree(tmp_path / "run")
    run(config, tmp_path / "run", progress=False)
    label = tmp_path / "run" / "prompt_label.safetensors"
    label.write_bytes(label.read_bytes()[:-8] + bytes(8))  # another run's prompt beside this one's config
    with pytest.raises(RunDirectoryError, match="changed since the run wrote them: prompt_label.safetensors"):
        evaluate_run(tmp_path / "run", progress=False)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")
    with pytest.raises(RunDirectoryError, match="manifest.json is missing"):
        evaluate_run(tmp_path / "old", progress=False)


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


# --- plugins ----------------------------------------------------------------------------------------------------

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
