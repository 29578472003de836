"""A sweep on a Ray cluster whose nodes share no disk with the driver (docs/distributed.md): a head and two worker
nodes started on this machine, each worker node with its own cache, temp and working directories and a guard
(tests/no_shared_disk) that fails any file operation of its processes under the driver's directory. The records,
run directories and features come home; the table equals the local launcher's; a node killed mid-sweep loses
nothing; no feature is extracted twice."""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from pathlib import Path

import pytest

from benchmarks import run
from promptgen import cli
from promptgen_ray import RayLauncher
from benchmarks.records import RecordStore
from promptgen.runs import rundir

ray = pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")
from ray.cluster_utils import Cluster  # noqa: E402

GUARD = Path(__file__).parent / "no_shared_disk"
SUITE = """description = "2 methods x 2 targets on a cluster"
targets = ["photo", "sketch"]
methods = ["zero-shot", "coop"]
[backbone]
device = "cpu"
[overrides.digits-dg]
per_class = 10
[overrides.coop]
epochs = 6
warmup_epochs = 0
"""


def _cluster(tmp_path, monkeypatch, driver: Path) -> tuple[Cluster, dict]:
    """A head that runs no job (0 CPUs) and worker nodes a and b of one CPU each, each started from its own
    working directory with its own PROMPTGEN_CACHE_DIR and TMPDIR, and the guard on."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = {}
    for name in "ab":
        home = tmp_path / f"node-{name}"
        for folder in ("cache", "tmp", "work"):
            (home / folder).mkdir(parents=True)
        monkeypatch.chdir(home / "work")  # the node's processes start here: the driver's --out is not below
        env = {"PROMPTGEN_CACHE_DIR": str(home / "cache"), "TMPDIR": str(home / "tmp"),
               "PROMPTGEN_TEST_DRIVER_DIR": str(driver), "PROMPTGEN_TEST_NODE": name,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(GUARD), os.environ.get("PYTHONPATH")]))}
        nodes[name] = (cluster.add_node(num_cpus=1, env_vars=env), home)
    monkeypatch.chdir(tmp_path)
    return cluster, nodes


def test_the_guard_refuses_the_drivers_directory_and_nothing_else(tmp_path):
    """What each worker node of the cluster test runs with: a process that imports it can neither write nor read
    under $PROMPTGEN_TEST_DRIVER_DIR, and can beside it."""
    import subprocess
    import sys

    driver, beside = tmp_path / "driver", tmp_path / "driver-not"
    driver.mkdir()
    (driver / "cache").mkdir()
    probe = ("import os, sys\n"
             "for path in sys.argv[1:]:\n"
             "    try:\n"
             "        open(os.path.join(path, 'x'), 'w').close(); os.listdir(path); print('ok')\n"
             "    except PermissionError as error:\n"
             "        print(error)\n")
    env = {**os.environ, "PYTHONPATH": str(GUARD), "PROMPTGEN_TEST_DRIVER_DIR": str(driver),
           "PROMPTGEN_TEST_NODE": "z"}
    beside.mkdir()
    done = subprocess.run([sys.executable, "-c", probe, str(driver / "cache"), str(beside)], env=env,
                          capture_output=True, text=True, check=True)
    refused, allowed = done.stdout.splitlines()
    assert refused.startswith("node z has no disk of the driver's: open ") and allowed == "ok"
    assert not (driver / "cache" / "x").exists()


@ray.remote(num_cpus=1)
def _write(path: str) -> str:
    try:
        Path(path).write_text("x")
    except PermissionError as error:
        return str(error)
    return "written"


def _kill_when_busy(cluster: Cluster, node, home: Path, records: Path, killed: list) -> None:
    """Remove ``node`` once the driver has written a record and a job of the node's is running (its scratch
    directory exists): a node lost mid-sweep, mid-job."""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        running = list((home / "tmp").glob("promptgen-job-*"))
        if list(records.glob("*.json")) and running:
            killed.append((running[0].name, {p.name: p.read_bytes() for p in records.glob("*.json")}))
            cluster.remove_node(node)
            return
        time.sleep(0.05)


def _keys(root: Path) -> list[bytes]:
    from promptgen.storage.cache import FeatureCache
    from promptgen.storage.lmdb_env import scan

    with FeatureCache(root) as cache, cache._begin_read() as txn:
        return [key for key, _ in scan(txn)]


def _accuracies(out: Path) -> dict:
    return {r["job"]["id"]: r["test_accuracy"] for r in RecordStore(out).records()}


@pytest.mark.slow
def test_a_sweep_on_two_nodes_without_a_shared_disk_comes_home_whole(tmp_path, monkeypatch, capsys):
    import torch

    suite = tmp_path / "cluster.toml"
    suite.write_text(SUITE)
    driver = tmp_path / "driver"
    threads = torch.get_num_threads()
    try:  # the reference: the local launcher, one thread as each Ray task has (OMP_NUM_THREADS=1)
        start = time.perf_counter()
        assert run.main(["--suite", str(suite), "--out", str(driver / "local"), "--cache-dir",
                         str(tmp_path / "local-cache"), "--quiet", "--threads", "1"]) == 0
        local_seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    cluster, nodes = _cluster(tmp_path, monkeypatch, driver)
    out, cache = driver / "cluster", driver / "cache"
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        # the guard works: a node cannot touch the driver's directory
        assert "has no disk of the driver's" in ray.get(_write.remote(str(driver / "probe")))
        ray.shutdown()

        killed: list = []
        watcher = threading.Thread(target=_kill_when_busy, args=(cluster, nodes["b"][0], nodes["b"][1],
                                                                 out / "records", killed), daemon=True)
        watcher.start()
        command = ["--suite", str(suite), "--out", str(out), "--cache-dir", str(cache), "--launcher", "ray",
                   "--set", f"ray.address={cluster.address}"]
        start = time.perf_counter()
        assert run.main(command) == 0
        cluster_seconds = time.perf_counter() - start
        watcher.join(timeout=5)
        printed = capsys.readouterr().out

        # every record and run directory is under the driver's --out, whole, and written by the driver
        records = RecordStore(out).records()
        assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
        for record in records:
            run_dir = out / "runs" / record["job"]["id"]
            assert record["run_dir"] == str(run_dir)
            rundir.verify(run_dir)
            assert record["node"]["cache"] in {str(home / "cache") for _, home in nodes.values()}
            assert record["cache"]["encoded"] == 0  # every feature came in the pack
            assert 0 < record["shipped"]["run_bytes"] < 2**20
        for _, home in nodes.values():  # nothing of the sweep's landed in a node's working directory
            assert not any((home / "work").iterdir())
        # the table equals the local launcher's: same seeds, identical accuracies, and the very same trained
        # prompts (features extracted in shards on the nodes are the local extraction's, bit for bit)
        assert _accuracies(out) == _accuracies(driver / "local")
        for record in records:
            job = record["job"]["id"]
            assert (out / "runs" / job / "prompt_label.safetensors").read_bytes() == \
                (driver / "local" / "runs" / job / "prompt_label.safetensors").read_bytes()
        # each feature extracted once on the cluster: the shards computed every planned feature, the jobs none
        features = json.loads((out / "features.json").read_text())
        assert features["extracted"] == features["planned"] > 0 and features["shards"] == 2
        assert f"{features['planned']} not in this machine's cache" in printed

        # node b was removed while one of its jobs ran: that job ran again on node a, the finished ones did not
        assert killed, "node b was never seen running a job"
        scratch, before = killed[0]
        lost = next(r for r in records if scratch.startswith(f"promptgen-job-{r['job']['id']}-"))
        assert lost["node"]["cache"] == str(nodes["a"][1] / "cache")
        for name, data in before.items():
            assert (out / "records" / name).read_bytes() == data  # not run (nor written) again

        # a resume runs nothing: every job is done
        assert run.main(command) == 0
        assert "4 jobs, 4 already done, running 0" in capsys.readouterr().out
        # `promptgen cache extract` on the cluster: the shards' entries come home, the same ones the sweep planned
        assert cli.main(["cache", "extract", "--dataset", "digits-dg", "--set", "digits-dg.per_class=10", "--device",
                         "cpu", "--cache-dir", str(driver / "extracted"), "--shards", "2", "--launcher", "ray",
                         "--ray-address", cluster.address, "--quiet"]) == 0
        assert set(_keys(driver / "extracted")) == set(_keys(cache))

        # the guard holds through the harness too: jobs told the nodes share the driver's disk fail on it
        assert run.main(["--suite", str(suite), "--out", str(driver / "shared"), "--cache-dir", str(cache),
                         "--launcher", "ray", "--set", f"ray.address={cluster.address}", "--set",
                         "ray.shared_disk=true", "--methods", "zero-shot", "--targets", "photo", "--quiet"]) == 1
        (refused,) = RecordStore(driver / "shared").records()
        assert refused["status"] == "failed" and "has no disk of the driver's" in refused["error"]

        # a job whose worker dies, with no retries left, is the launcher's error for the driver to record
        seen = {}
        launcher = RayLauncher(RayLauncher.Options(address=cluster.address, max_retries=0, progress=False))
        launcher.run(functools.partial(os._exit), [3], done=seen.__setitem__)
        assert isinstance(seen[0], ray.exceptions.WorkerCrashedError)

        print(f"\nlocal launcher: {local_seconds:.1f} s; 2-node cluster: {cluster_seconds:.1f} s; features pack "
              f"{features['pack_bytes']} bytes; run archives {[r['shipped']['run_bytes'] for r in records]} bytes")
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow
def test_the_shipping_benchmark_measures_each_step_and_projects_domainnet(tmp_path, capsys):
    from benchmarks import shipping

    assert shipping.main(["--features", "3000", "--width", "64", "--nodes", "4", "--quiet",
                          "--out", str(tmp_path / "shipping.json")]) == 0
    numbers = json.loads((tmp_path / "shipping.json").read_text())
    measured, projection = numbers["measured"], numbers["projection"]
    assert measured["stored"] == measured["later_present"] == measured["features"] == 3000
    assert measured["pack_mb"] > 3000 * 64 * 2 / 2**20  # the floats and the keys
    for step in ("pack_s", "put_s", "store_s", "later_job_s"):
        assert measured[step] >= 0
    assert projection["nodes"] == 4 and projection["ship_s"] > 0 and projection["extract_per_node_h"] > 0
    assert "DomainNet" in capsys.readouterr().out


@pytest.mark.slow
def test_the_one_machine_cluster_in_the_docs_runs_as_written(tmp_path):
    """docs/distributed.md's block: Ray's own `ray start` for a head and a worker node, the sweep with
    --ray-address auto, `ray stop`."""
    import re
    import subprocess
    import sys

    doc = (Path(__file__).parents[1] / "docs" / "distributed.md").read_text()
    block = re.search(r"Try it on one machine first.*?```bash\n(.*?)```", doc, re.S).group(1)
    env = {**os.environ, "PROMPTGEN_CACHE_DIR": str(tmp_path / "driver-cache"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    done = subprocess.run(["bash", "-ec", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = RecordStore(tmp_path / "cluster-demo").records()
    assert {r["job"]["method"] for r in records} == {"coop", "zero-shot"}
    assert {r["status"] for r in records} == {"ok"}
    assert {r["node"]["cache"] for r in records} == {str(tmp_path / "node-cache")}
    assert (tmp_path / "cluster-demo" / "table.md").is_file()
