"""Job records: one JSON per job, resume skips finished jobs, failures are recorded and the sweep goes on."""

import json

import attrs

from benchmarks.records import Job, RecordStore, run_jobs
from promptgen.runs.config import RunConfig
from promptgen_local import LocalLauncher


def _job(target: str = "c", seed: int = 0, **changes) -> Job:
    config = RunConfig(dataset="digits-dg", sources=("a", "b"), targets=(target,), method="spg", seed=seed,
                       preset="cpu")
    return Job("multi-source", attrs.evolve(config, **changes))


def _jobs():
    return [_job(t, seed) for t in ("c", "d") for seed in (0, 1)]


def test_job_identity_follows_what_it_computes_not_where_it_reads():
    job = _jobs()[0]
    assert job.id.startswith("digits-dg.multi-source.to-c.spg.seed0.")
    for changed in (_job(preset="gpu"), _job(overrides={"coop": {"epochs": 2}}), _job(views=2)):
        assert changed.id != job.id and changed.config_hash != job.config_hash
    assert _job(cache_dir="/elsewhere", data_root="/data", num_workers=4).id == job.id
    described = job.describe()
    assert described["method"] == "spg" and described["config"]["preset"] == "cpu"


def test_rerun_skips_finished_jobs_unless_forced(tmp_path):
    store, calls = RecordStore(tmp_path), []

    def fn(job):
        calls.append(job.id)
        return {"test_accuracy": 0.5, "target": job.targets[0], "method": job.method, "seed": job.seed}

    assert len(run_jobs(_jobs(), fn, store)) == 4
    assert len(run_jobs(_jobs(), fn, store)) == 0 and len(calls) == 4
    assert len(run_jobs(_jobs()[:1], fn, store, force=True)) == 1 and len(calls) == 5
    records = store.records()
    assert len(records) == 4 and {r["status"] for r in records} == {"ok"}
    assert records[0]["job"]["id"] == json.loads(store.path(_jobs()[0]).read_text())["job"]["id"]


def test_a_failing_job_is_recorded_the_sweep_goes_on_and_a_rerun_retries_it(tmp_path):
    store = RecordStore(tmp_path)

    def flaky(job):
        if job.targets == ("d",) and job.seed == 1:
            raise RuntimeError("out of memory")
        return {"test_accuracy": 0.5}

    results = run_jobs(_jobs(), flaky, store, launcher=LocalLauncher(LocalLauncher.Options(progress=False)))
    assert [r["status"] for r in results] == ["ok", "ok", "ok", "failed"]
    failed = [r for r in store.records() if r["status"] == "failed"]
    assert failed[0]["error"] == "RuntimeError: out of memory" and "Traceback" in failed[0]["traceback"]
    retried = run_jobs(_jobs(), lambda job: {"test_accuracy": 0.6}, store)
    assert len(retried) == 1 and retried[0]["status"] == "ok"


def test_the_shipped_suites_keep_their_job_ids():
    """The ids (and so the records a sweep resumes from) of the default and study suites' jobs, as at 7ea11ba,
    before the components took options objects (issue 39): a refactor that changes a config's identity shows here."""
    from benchmarks import protocols, suites
    from promptgen.components.registry import default_registry

    def ids(name):
        return {job.id for job in protocols.expand(suites.load(name), default_registry())}

    assert {"digits-traps.multi-source.to-day.coop.seed0.d2f2815f",
            "digits-traps.multi-source.to-day.spg-cgan.seed0.13c41b4b",
            "digits-traps.multi-source.to-day.dpspg.seed0.7dc7e51c",
            "digits-traps.multi-source.to-night-ir-b.spg-cgan.seed0.ff579055"} <= ids("spg-study")
    default = ids("default")
    assert len(default) == 64 and {
        "digits-dg.multi-source.to-handwritten.cocoop.seed0.af88bb0b",
        "digits-dg.multi-source.to-handwritten.zero-shot.seed0.e21f5bfa",
        "digits-dg.multi-source.to-photo.vp.seed0.a71928c5",
        "digits-dg.multi-source.to-sketch.spg-cgan.seed0.9954040c",
        "digits-dg.multi-source.to-typeset.linear-probe.seed0.4804d58b",
        "digits-traps.multi-source.to-day.dpspg.seed0.8ef25e94",
        "digits-traps.multi-source.to-dusk.dpl.seed0.1b37a227",
        "digits-traps.multi-source.to-night-ir-a.coop.seed0.793cd60f",
        "digits-traps.multi-source.to-night-ir-b.cocoop.seed0.dffea04c",
        "digits-traps.multi-source.to-night-ir-b.zero-shot.seed0.a2485b7e"} <= default
