"""python -m benchmarks.run: suites parse and validate, protocols expand into jobs, sweeps resume, tables come
from the records, launchers run the same sweep, and the perf suite measures its ratios."""

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import protocols, run, suites, sweep
from benchmarks.records import RecordStore
from promptgen.errors import ConfigError
from promptgen.registry import get_registry

QUICK = """
[overrides.coop]
epochs = 1

[overrides.generator]
epochs = 1
batch_size = 256
"""


def _suite(tmp_path, body: str, name: str = "tiny") -> str:
    """A suite file: ``body`` (top-level keys first, then any tables) on the tiny backbone on the CPU."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'description = "a test suite"\n{body}\n[backbone]\ndevice = "cpu"\n')
    return str(path)


def test_every_shipped_suite_parses():
    names = suites.available()
    assert {"default", "digits-dg", "perf", "pacs", "vlcs", "office-home", "terra-incognita", "domainnet"} <= set(names)
    for name in names:
        suite = suites.load(name)
        assert suite.description and suite.kind in suites.KINDS


def test_list_prints_one_line_per_suite(capsys):
    assert run.main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(suites.available()) and lines[0].startswith("default ")


@pytest.mark.parametrize("body, message", [
    ('metods = ["coop"]', "metods: unknown key"),
    ('protocol = "leave-two-out"', "protocol: must be one of multi-source, single-source, cross-dataset"),
    ("seeds = [0, -1]", "seeds: must be a non-empty list of integers >= 0"),
    ('protocol = "cross-dataset"', "target_dataset: is required by, and only by"),
    ("[overrides.stage3]\nepochs = 1", "overrides.stage3: unknown part"),
    ('[backbone]\nweights = "x"', "backbone.weights: unknown key"),
])
def test_a_bad_suite_key_is_named_with_its_file(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'description = "bad"\n{body}\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        suites.load(str(path))


def test_unknown_method_or_dataset_is_named_when_the_suite_expands(tmp_path):
    with pytest.raises(ConfigError, match=r"tiny.toml: methods: unknown method 'spg-gann'; methods: all, spg, "
                                          r"zero-shot, coop, spg-cgan, spg-cvae, spg-diffusion"):
        protocols.expand(suites.load(_suite(tmp_path, 'methods = ["coop", "spg-gann"]')))
    with pytest.raises(ConfigError, match=r"tiny.toml: dataset: unknown dataset 'pacss'; registered: colors"):
        protocols.expand(suites.load(_suite(tmp_path, 'dataset = "pacss"')))
    with pytest.raises(ConfigError, match=r"tiny.toml: targets: unknown domain 'cartoon'; domains of digits-dg"):
        protocols.expand(suites.load(_suite(tmp_path, 'targets = ["cartoon"]')))
    assert run.main(["--suite", _suite(tmp_path, 'methods = ["gan"]')]) == 2


domain_lists = st.lists(st.text("abcdefgh", min_size=1, max_size=4), min_size=2, max_size=7, unique=True)


@given(domain_lists)
def test_leave_one_out_tests_each_domain_once_and_never_trains_on_it(domains):
    splits = protocols.leave_one_out(domains)
    assert sorted(target for _, (target,) in splits) == sorted(domains)
    for sources, (target,) in splits:
        assert target not in sources and set(sources) | {target} == set(domains)


@given(domain_lists)
def test_single_source_trains_on_each_domain_once_and_tests_on_the_others(domains):
    splits = protocols.single_source(domains)
    assert [source for (source,), _ in splits] == list(domains)
    for (source,), targets in splits:
        assert source not in targets and set(targets) | {source} == set(domains)


def test_expansion_runs_zero_shot_once_and_every_other_method_per_seed(tmp_path):
    suite = suites.load(_suite(tmp_path, 'methods = ["all"]\nseeds = [0, 1, 2]'))
    jobs = protocols.expand(suite)
    # 4 targets x (zero-shot + coop and spg with every generator, over 3 seeds)
    assert len(jobs) == 4 * (1 + (1 + len(get_registry().names("generator"))) * 3)
    assert [job.method for job in jobs[:5]] == ["zero-shot", "coop", "coop", "coop", "spg-cgan"]
    assert len({job.id for job in jobs}) == len(jobs)
    cross = suites.load(_suite(tmp_path, 'protocol = "cross-dataset"\ntarget_dataset = "digits-c"\nmethods = ["coop"]'))
    (job,) = protocols.expand(cross)
    assert job.sources == ("handwritten", "typeset", "photo", "sketch")
    assert job.targets == ("noise", "blur", "low-contrast", "inverted")


def test_sweep_writes_records_and_a_table_made_from_them_then_resumes(tmp_path, capsys):
    suite = _suite(tmp_path, f'targets = ["photo"]\nmethods = ["zero-shot", "coop", "spg"]\nviews = 1\n{QUICK}')
    out = tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    records = RecordStore(out).records()
    assert [r["job"]["method"] for r in records] == ["coop", "spg-cgan", "zero-shot"]
    for record in records:
        assert record["status"] == "ok" and record["job"]["id"] in record["run_dir"]
        assert set(record["seconds"]) >= {"features", "stage1", "test"} and record["versions"]["torch"]
        assert record["fingerprint"].startswith("tiny-clip-digits@")
        row = next(line for line in (out / "table.md").read_text().splitlines()
                   if line.startswith(f"| {record['job']['method']} |"))
        assert f"{100 * record['test_accuracy']['photo']:.1f} ± 0.0" in row
    assert (out / "table.png").stat().st_size > 0 and (out / "table.csv").read_text().startswith("method,photo_mean")
    printed = capsys.readouterr().out
    assert "3 jobs, 0 already done, running 3" in printed and "| spg-cgan |" in printed

    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    assert "3 jobs, 3 already done, running 0" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == before
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--methods", "zero-shot", "--force"]) == 0
    assert "1 jobs, 0 already done, running 1" in capsys.readouterr().out


def test_a_failing_job_is_recorded_the_sweep_goes_on_and_a_rerun_retries_it(tmp_path, capsys, monkeypatch):
    suite = _suite(tmp_path, 'targets = ["photo", "sketch"]\nmethods = ["zero-shot"]')
    out, engine_run = tmp_path / "out", sweep.run

    def photo_fails(config, *args, **kwargs):
        if config.targets == ("photo",):
            raise RuntimeError("the disk is full")
        return engine_run(config, *args, **kwargs)

    monkeypatch.setattr(sweep, "run", photo_fails)
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 1
    status = {r["job"]["targets"][0]: (r["status"], r.get("error")) for r in RecordStore(out).records()}
    assert status == {"photo": ("failed", "RuntimeError: the disk is full"), "sketch": ("ok", None)}
    printed = capsys.readouterr().out
    assert "Failed jobs (see their records):\n- digits-dg.multi-source.to-photo.zero-shot" in printed
    assert "| zero-shot | – | **97.3 ± 0.0** | – |" in printed  # no avg over a missing target

    monkeypatch.setattr(sweep, "run", engine_run)
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    assert "2 jobs, 1 already done, running 1" in capsys.readouterr().out
    assert all(r["status"] == "ok" for r in RecordStore(out).records())


def test_real_dataset_suite_without_data_says_how_to_prepare_it(tmp_path, capsys):
    assert run.main(["--suite", "pacs", "--data-root", str(tmp_path / "PACS"), "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert f"no data at {tmp_path / 'PACS'}" in error and "Download PACS in the DomainBed layout" in error
    assert "docs/benchmarks.md#real-datasets" in error


def test_shards_split_the_jobs_and_report_joins_them(tmp_path, capsys):
    suite = _suite(tmp_path, 'targets = ["photo", "sketch"]\nmethods = ["zero-shot"]')
    out = tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--shard", "1/2"]) == 0
    assert "1 of 2 jobs have no record yet" in capsys.readouterr().out
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--shard", "0/2"]) == 0
    capsys.readouterr()
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--report"]) == 0
    table = capsys.readouterr().out
    assert "no record yet" not in table and "running" not in table
    assert "| zero-shot | **80.5 ± 0.0** | **97.3 ± 0.0** | **88.9 ± 0.0** |" in table
    assert run.main(["--suite", suite, "--out", str(out), "--shard", "2/2"]) == 2


@pytest.mark.parametrize("launcher", ["processes", "ray"])
def test_launchers_run_the_same_two_job_sweep(tmp_path, launcher):
    if launcher == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")
    suite = _suite(tmp_path, 'targets = ["photo", "sketch"]\nmethods = ["zero-shot"]')
    out = tmp_path / launcher
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--launcher", launcher]) == 0
    records = RecordStore(out).records()
    assert {r["job"]["targets"][0]: round(100 * r["test_accuracy"][r["job"]["targets"][0]], 1) for r in records} == {
        "photo": 80.5, "sketch": 97.3}


def _perf_suite(tmp_path, extra: str = "") -> str:
    path = tmp_path / "perf.toml"
    path.write_text('description = "tiny perf"\nkind = "perf"\n[backbone]\ndevice = "cpu"\n[perf]\n'
                    f"stage2_steps = 2\ninference_images = 4\nclasses = [3]\nextraction_images = 16\n{extra}")
    return str(path)


def test_perf_suite_reports_each_ratio(tmp_path):
    assert run.main(["--suite", _perf_suite(tmp_path, "fresh_processes = false"), "--out", str(tmp_path / "out"),
                     "--quiet"]) == 0
    rows = json.loads((tmp_path / "out" / "records" / "perf.json").read_text())["rows"]
    assert [row["measurement"] for row in rows] == ["stage2", "inference (3 classes)", "extraction", "cache"]
    for row in rows:
        assert row["ratio"] == pytest.approx(row["fast_rate"] / row["baseline_rate"]) and row["ratio"] > 0
    assert rows[1]["max_logit_diff"] <= 1e-3
    assert "| inference (3 classes) | full-length → truncated |" in (tmp_path / "out" / "table.md").read_text()


def test_perf_arms_run_in_their_own_processes_with_their_own_peak_memory(tmp_path):
    suite = _perf_suite(tmp_path, 'measurements = ["inference"]')
    assert run.main(["--suite", suite, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    (row,) = json.loads((tmp_path / "out" / "records" / "perf.json").read_text())["rows"]
    assert row["baseline_rss_mb"] > 50 and row["fast_rss_mb"] > 50  # a process with torch and the backbone
    assert row["max_logit_diff"] <= 1e-3  # logits came back from both processes


def test_perf_suite_names_an_unknown_measurement(tmp_path, capsys):
    assert run.main(["--suite", _perf_suite(tmp_path, 'measurements = ["speed"]'), "--out", str(tmp_path)]) == 2
    assert "perf.toml: perf.measurements: unknown ['speed']" in capsys.readouterr().err


def test_command_line_switches_the_protocol_and_checks_the_target_dataset(tmp_path, capsys):
    suite = _suite(tmp_path, 'methods = ["zero-shot"]')
    out = tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--protocol", "cross-dataset",
                     "--target-dataset", "digits-c", "--targets", "inverted"]) == 0
    (record,) = RecordStore(out).records()
    assert record["job"]["protocol"] == "cross-dataset" and record["target_dataset"] == "digits-c"
    assert record["sources"] == ["handwritten", "typeset", "photo", "sketch"]
    assert record["test_accuracy"]["inverted"] == pytest.approx(0.7825, abs=0.002)  # docs/world.md: inverted 78.3
    assert "trained on digits-dg, tested on digits-c" in capsys.readouterr().out
    assert run.main(["--suite", suite, "--out", str(out), "--protocol", "cross-dataset"]) == 2
    assert "a target dataset goes with, and only with, --protocol cross-dataset" in capsys.readouterr().err
