"""What travels between a sweep and workers that share no disk with it (benchmarks.remote, docs/distributed.md):
feature packs (promptgen.storage.feature_pack), run archives (promptgen.runs.rundir), the records the driver writes
as results arrive (benchmarks.records.run_jobs and every launcher's ``done``), and a launcher's settings kept out
of the jobs' identity."""

from __future__ import annotations

import io
import json
import tarfile

import attrs
import numpy as np
import pytest

from benchmarks.records import Job, RecordStore, run_jobs
from benchmarks.remote import ARCHIVE, Elsewhere, NodeJob
from promptgen.errors import CacheError, RunDirectoryError
from promptgen.runs import rundir
from promptgen.runs.config import RunConfig
from promptgen.storage import feature_pack
from promptgen.storage.cache import FeatureCache
from promptgen.storage.feature_format import META_TAG, encode_entry, feature_key

WIDTH = 8


def _fill(root, count: int, start: int = 0) -> list[bytes]:
    """A cache at ``root`` with ``count`` entries of one backbone; their keys."""
    rng = np.random.default_rng(start)
    keys = [feature_key("fp", "eval-x", 0, "data", f"s{i}") for i in range(start, start + count)]
    with FeatureCache(root) as cache:
        def put(txn):
            txn.put(META_TAG + b"fp", json.dumps({"embed_dim": WIDTH}).encode())
            for i, key in enumerate(keys):
                txn.put(key, encode_entry(i % 3, "d", rng.standard_normal(WIDTH).astype(np.float16)))
        cache._write(put)
    return keys


def _entries(root) -> dict[bytes, bytes]:
    from promptgen.storage.lmdb_env import scan

    with FeatureCache(root) as cache, cache._begin_read() as txn:
        return {key: bytes(value) for key, value in scan(txn)}


def test_a_feature_pack_carries_the_entries_asked_for_into_another_cache(tmp_path):
    keys = _fill(tmp_path / "driver", 20)
    with FeatureCache(tmp_path / "driver") as cache:
        pack = feature_pack.pack(cache, keys[:12] + [feature_key("fp", "eval-x", 0, "data", "absent")])
        assert feature_pack.missing(cache, keys + [b"f2|nope"]) == [b"f2|nope"]
    assert pack.entries == 12 and pack.data.dtype == np.uint8
    _fill(tmp_path / "node", 2)  # the node holds two of them already (other values: kept as they are)
    node_before = _entries(tmp_path / "node")
    with FeatureCache(tmp_path / "node") as cache:
        assert feature_pack.store(pack, cache) == {"copied": 10, "present": 2, "damaged": 0}
        assert feature_pack.store(pack, cache) == {"copied": 0, "present": 12, "damaged": 0}
    driver, node = _entries(tmp_path / "driver"), _entries(tmp_path / "node")
    assert all(node[key] == (node_before.get(key) or driver[key]) for key in keys[:12])
    assert keys[12] not in node


def test_a_damaged_pack_stores_nothing_and_a_damaged_entry_is_left_out(tmp_path):
    keys = _fill(tmp_path / "driver", 5)
    with FeatureCache(tmp_path / "driver") as cache:
        pack = feature_pack.pack(cache, keys)
    changed = pack.data.copy()
    with FeatureCache(tmp_path / "driver") as cache, cache._begin_read() as txn:
        first = 8 + len(keys[0]) + len(txn.get(keys[0]))
    changed[first - 1] ^= 0xFF  # the first entry's last feature byte
    with FeatureCache(tmp_path / "node") as cache:
        with pytest.raises(CacheError, match="shard 3: its digest does not match its bytes"):
            feature_pack.store(attrs.evolve(pack, data=changed), cache, "shard 3")
        with pytest.raises(CacheError, match="shard 3 is not a feature pack"):
            cut = changed[:-3]
            feature_pack.store(attrs.evolve(pack, data=cut, digest=feature_pack._digest(cut)), cache, "shard 3")
        assert _entries(tmp_path / "node") == {}  # nothing stored from either
        # sent intact, but an entry was damaged before it was packed: its checksum catches it
        resent = attrs.evolve(pack, data=changed, digest=feature_pack._digest(changed))
        assert feature_pack.store(resent, cache) == {"copied": 4, "present": 0, "damaged": 1}


def _run_dir(tmp_path):
    work = rundir.start(tmp_path / "run")
    (work / "metrics.json").write_text('{"test_accuracy": {"a": 0.5}}')
    (work / "sub").mkdir()
    (work / "sub" / "weights.bin").write_bytes(bytes(range(256)) * 4)
    rundir.finish(work, tmp_path / "run")
    return tmp_path / "run"


def test_a_run_archive_unpacks_whole_or_not_at_all(tmp_path):
    data = rundir.archive(_run_dir(tmp_path))
    home = tmp_path / "home" / "runs" / "job"
    rundir.unarchive(data, home)
    rundir.verify(home)
    assert (home / "sub" / "weights.bin").read_bytes() == bytes(range(256)) * 4
    old = (home / "metrics.json").read_bytes()
    with pytest.raises(RunDirectoryError, match="from node x cannot be unpacked"):
        rundir.unarchive(data[: len(data) // 2], home, "from node x")
    # an archive whose run lost a file it lists: not one whole run
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar, tarfile.open(fileobj=buffer, mode="w:gz") as out:
        for member in tar.getmembers():
            if member.name != "sub/weights.bin":
                out.addfile(member, tar.extractfile(member) if member.isfile() else None)
    with pytest.raises(RunDirectoryError, match="missing: sub/weights.bin"):
        rundir.unarchive(buffer.getvalue(), home)
    assert (home / "metrics.json").read_bytes() == old  # the run there stays as it was
    assert sorted(p.name for p in home.parent.iterdir()) == ["job"]  # no partial directory left beside it


def test_a_run_archive_cannot_write_outside_its_directory(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    with pytest.raises(RunDirectoryError, match="cannot be unpacked"):
        rundir.unarchive(buffer.getvalue(), tmp_path / "runs" / "job")
    assert not (tmp_path / "runs" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def _jobs():
    return [Job("multi-source", RunConfig(targets=(target,), sources=("s",), method="zero-shot"))
            for target in ("a", "b", "c")]


class _Launcher:
    """A launcher that could not run the second job (its node died) and runs the rest in reverse order."""

    def run(self, fn, jobs, done=None):
        for index in reversed(range(len(jobs))):
            done(index, RuntimeError("node died") if index == 1 else fn(jobs[index]))


def test_the_driver_writes_each_record_as_its_result_arrives_and_a_job_that_could_not_run_fails(tmp_path):
    store = RecordStore(tmp_path)
    records = run_jobs(_jobs(), lambda job: {"test_accuracy": {job.targets[0]: 0.5}}, store, launcher=_Launcher())
    assert [r["status"] for r in records] == ["ok", "failed", "ok"]
    assert records[1]["error"] == "RuntimeError: node died"
    assert {r["job"]["targets"][0]: r["status"] for r in store.records()} == {"a": "ok", "b": "failed", "c": "ok"}
    assert len(run_jobs(_jobs(), lambda job: {"test_accuracy": {}}, store)) == 1  # the failed one runs again


@attrs.frozen
class _Runner:
    """JobRunner's shape: writes a run directory under ``out`` and says where."""

    out: object
    cache_dir: object = None

    def __call__(self, job: Job) -> dict:
        if job.targets == ("c",):
            raise ValueError("no such domain on this node")
        work = rundir.start(self.out / "runs" / job.id)
        (work / "metrics.json").write_text("{}")
        rundir.finish(work, self.out / "runs" / job.id)
        return {"test_accuracy": {job.targets[0]: 0.5}, "run_dir": str(self.out / "runs" / job.id)}


def test_jobs_elsewhere_come_home_under_out_with_where_they_ran(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTGEN_CACHE_DIR", str(tmp_path / "node-cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "node-tmp"))
    (tmp_path / "node-tmp").mkdir()
    out = tmp_path / "out"
    keys = _fill(tmp_path / "driver-cache", 3)
    with FeatureCache(tmp_path / "driver-cache") as cache:
        pack = feature_pack.pack(cache, keys)
    store = RecordStore(out)
    records = run_jobs(_jobs(), _Runner(tmp_path / "nowhere"), store, elsewhere=Elsewhere(out, pack))
    ok, failed = records[0], records[2]
    assert ok["run_dir"] == str(out / "runs" / _jobs()[0].id) and ARCHIVE not in ok
    rundir.verify(out / "runs" / _jobs()[0].id)
    assert ok["node"]["cache"] == str(tmp_path / "node-cache")
    assert ok["shipped"]["features_stored"] == 3 and records[1]["shipped"]["features_stored"] == 0  # once per node
    assert ok["shipped"]["features_bytes"] == pack.nbytes and ok["shipped"]["run_bytes"] > 0
    assert failed["status"] == "failed" and failed["error"] == "ValueError: no such domain on this node"
    assert failed["node"]["cache"] == str(tmp_path / "node-cache")
    assert not (tmp_path / "nowhere").exists() and not any((tmp_path / "node-tmp").iterdir())  # scratch removed
    assert set(_entries(tmp_path / "node-cache")) == set(_entries(tmp_path / "driver-cache"))


def test_a_run_that_cannot_be_unpacked_at_home_fails_its_job(tmp_path):
    job = _jobs()[0]
    record = Elsewhere(tmp_path).bring_home(job, {"status": "ok", ARCHIVE: b"not a tar", "node": {"host": "n1"}})
    assert record["status"] == "failed" and "cannot be unpacked" in record["error"] and ARCHIVE not in record
    assert NodeJob(_Runner(tmp_path), None)(job)["status"] == "ok"


def test_a_launchers_settings_leave_the_job_ids_as_they_were():
    """--set ray.address=... says where the jobs run, not what they compute: a sweep resumed on another cluster
    finds its records."""
    from benchmarks import protocols, suites
    from promptgen.components.registry import default_registry

    registry = default_registry()
    suite = suites.with_changes(suites.load("digits-dg"), methods=("zero-shot",), targets=("photo",))
    plain = protocols.expand(suite, registry)
    moved = protocols.expand(suites.with_changes(suite, template={"overrides": {
        "ray": {"address": "ray://head:10001"}, "processes": {"workers": 3}}}), registry)
    assert [job.id for job in moved] == [job.id for job in plain] and moved[0].config.overrides == {}
    changed = protocols.expand(suites.with_changes(suite, template={"overrides": {"zero-shot": {}}}), registry)
    assert changed[0].config.overrides == {"zero-shot": {}}


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_the_features_planned_for_the_nodes_are_every_one_a_run_reads(tmp_path, preset):
    """benchmarks.remote plans the pack from the jobs' configs: under either preset's values (the gpu preset's 8
    views too, on the CPU) a run reads no feature outside it, and the plan holds the preset's views."""
    from benchmarks.remote import extraction_jobs
    from promptgen.runs.engine import run
    from promptgen.runs.extraction import planned_keys
    from promptgen.storage.feature_format import parse_feature_key

    config = RunConfig(targets=("photo",), method="coop", preset=preset, backbone={"device": "cpu"},
                       cache_dir=str(tmp_path / "cache"), overrides={"digits-dg": {"per_class": 10},
                                                                    "coop": {"epochs": 1, "warmup_epochs": 0}})
    (extraction,) = extraction_jobs([Job("multi-source", config)])
    planned = set(planned_keys(attrs.evolve(extraction, cache_dir=config.cache_dir)))
    assert extraction.views == {"cpu": 4, "gpu": 8}[preset]
    run(config, tmp_path / "run", progress=False)
    read = set(_entries(tmp_path / "cache")) - {key for key in _entries(tmp_path / "cache") if key.startswith(META_TAG)}
    assert read and read <= planned
    assert max(parse_feature_key(key)[2] for key in read) == extraction.views - 1  # every train view was read
