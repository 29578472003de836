"""python -m benchmarks.run: suites parse and validate, protocols expand into jobs, sweeps resume, tables come
from the records, launchers run the same sweep, and the perf suite measures its ratios."""

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import command_line, orchestration, protocols, run, stats, suites, sweep
from benchmarks.records import RecordStore
from promptgen.errors import ConfigError
from promptgen.components.registry import default_registry

QUICK = """
[overrides.coop]
epochs = 1
warmup_epochs = 0

[overrides.cgan]
epochs = 1
warmup_epochs = 0
batch_size = 256
"""
DOMAINS = default_registry().create("dataset", "digits-dg").domains


def _suite(tmp_path, body: str, name: str = "tiny") -> str:
    """A suite file: ``body`` (top-level keys first, then any tables) on the shipped backbone on the CPU, with
    digits-dg at 10 images per class and domain."""
    path = tmp_path / f"{name}.toml"
    path.write_text(f'description = "a test suite"\n{body}\n[backbone]\ndevice = "cpu"\n'
                    '[overrides.digits-dg]\nper_class = 10\n')
    return str(path)


def _zero_shot(tmp_path, domains) -> dict:
    """Zero-shot accuracy (%, one decimal) per domain, from the engine itself: what the tables must show."""
    from promptgen.runs.config import RunConfig
    from promptgen.runs.engine import run as engine_run

    config = RunConfig(targets=tuple(domains), sources=(next(d for d in DOMAINS if d not in domains),),
                       method="zero-shot", backbone={"device": "cpu"}, overrides={"digits-dg": {"per_class": 10}})
    accuracy = engine_run(config, tmp_path / "zero-shot-reference", progress=False)["test_accuracy"]
    return {domain: round(100 * value, 1) for domain, value in accuracy.items()}


def test_every_shipped_suite_parses():
    names = suites.available()
    assert {"default", "digits-dg", "perf", "pacs", "vlcs", "office-home", "terra-incognita", "domainnet"} <= set(names)
    registry = default_registry()
    for name in names:
        suite = suites.load(name)
        assert suite.description and suite.kind in suites.KINDS
        protocols.resolve_methods(suite.methods, name, registry)  # a misspelt method: refused here, not at run time


def test_a_suite_names_its_launcher_and_the_command_line_overrides_it(tmp_path):
    path = _suite(tmp_path, 'launcher = "processes"\nworkers = 3')
    def settled(argv):  # the request as the sweep reads it: the suite's values where the flags give none
        request = command_line.parse(argv)
        return orchestration.with_suite_defaults(request, orchestration.suite_from_request(request))

    request = settled(["--suite", path])
    assert (request.launcher, request.workers) == ("processes", 3)
    request = settled(["--suite", path, "--launcher", "local", "--workers", "1"])
    assert (request.launcher, request.workers) == ("local", 1)
    request = settled(["--suite", _suite(tmp_path, "", name="plain")])
    assert request.launcher == "local"


def test_list_prints_one_line_per_suite(capsys):
    assert run.main(["--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(suites.available()) and lines[0].startswith("default ")


@pytest.mark.parametrize("body, message", [
    ('metods = ["coop"]', "metods: unknown key"),
    ('protocol = "leave-two-out"', "protocol: must be one of multi-source, single-source, cross-dataset"),
    ("seeds = [0, -1]", "seeds: must be a non-empty list of integers >= 0"),
    ('protocol = "cross-dataset"', "target_dataset: is required by, and only by"),
    ("views = 0", "views: RunConfig.views must be an integer >= 1"),
    ('[backbone]\nweights = "x"', "backbone: BackboneConfig: unknown field(s) weights"),
    ('dataset = "digits-dg"\ndatasets = ["digits-dg"]', "datasets: give either dataset (one) or datasets (several)"),
    ('datasets = ["digits-dg", "digits-c"]\nprotocol = "cross-dataset"\ntarget_dataset = "digits-c"',
     "datasets: several datasets go with kind"),
    ("datasets = []", "datasets: must be a non-empty list of strings"),
    ("workers = 0", "workers: must be an integer >= 1, got 0"),
])
def test_a_bad_suite_key_is_named_with_its_file(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'description = "bad"\n{body}\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        suites.load(str(path))


def test_unknown_names_and_options_are_named_when_the_suite_expands(tmp_path):
    registry = default_registry()
    with pytest.raises(ConfigError, match=r"tiny.toml: methods: unknown method 'spg-gann'; methods: all, ") as error:
        protocols.expand(suites.load(_suite(tmp_path, 'methods = ["coop", "spg-gann"]')), registry)
    listed = str(error.value).split("methods: all, ")[1].split("; did you mean")[0].split(", ")
    assert {"spg", "zero-shot", "coop", "spg-cgan"} <= set(listed) and set(registry.names("method")) <= set(listed)
    with pytest.raises(ConfigError, match=r"tiny.toml: dataset: unknown dataset 'pacss'; registered: colors"):
        protocols.expand(suites.load(_suite(tmp_path, 'dataset = "pacss"')), registry)
    with pytest.raises(ConfigError, match=r"tiny.toml: targets: unknown domain 'cartoon'; domains of digits-dg"):
        protocols.expand(suites.load(_suite(tmp_path, 'targets = ["cartoon"]')), registry)
    with pytest.raises(ConfigError, match=r"tiny.toml: coop: unknown option 'epocs'"):
        protocols.expand(suites.load(_suite(tmp_path, '[overrides.coop]\nepocs = 1')), registry)
    with pytest.raises(ConfigError, match=r"tiny.toml: overrides: no component is named 'stage3'"):
        protocols.expand(suites.load(_suite(tmp_path, '[overrides.stage3]\nepochs = 1')), registry)
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


def test_expansion_runs_a_deterministic_method_once_and_every_other_method_per_seed(tmp_path):
    registry = default_registry()
    suite = suites.load(_suite(tmp_path, 'methods = ["all"]\nseeds = [0, 1, 2]'))
    skipped = []
    jobs = protocols.expand(suite, registry, skipped=skipped)
    # every target x (zero-shot once + every other registered method that runs here over 3 seeds)
    runs_here = len(registry.names("method")) - len(skipped)
    assert {name for name, _ in skipped} == {"vpt", "maple"}  # ViT only; the default backbone is a ResNet
    assert len(jobs) == len(DOMAINS) * (1 + (runs_here - 1) * 3)
    assert [job.method for job in jobs[:5]] == ["zero-shot", "linear-probe", "linear-probe", "linear-probe", "coop"]
    assert len({job.id for job in jobs}) == len(jobs)
    assert protocols.resolve_methods(["spg", "spg-cgan"], "here", registry) == ("spg-cgan",)
    cross = suites.load(_suite(tmp_path, 'protocol = "cross-dataset"\ntarget_dataset = "digits-c"\nmethods = ["coop"]'))
    (job,) = protocols.expand(cross, registry)
    assert job.sources == DOMAINS
    assert job.targets == ("noise", "blur", "low-contrast", "inverted")


@pytest.mark.slow
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
        accuracy, images = record["test_accuracy"]["photo"], record["test_predictions"]["photo"]["images"]
        low, high = stats.wilson(accuracy, images)  # one seed on one domain: the Wilson interval of its images
        assert f"{100 * accuracy:.1f} [{100 * low:.1f}, {100 * high:.1f}]" in row.replace("**", "")
        assert row.endswith("(1 seed) |") and images == record["sizes"]["test/photo"]
    assert (out / "table.png").stat().st_size > 0 and (out / "table.csv").read_text().startswith("method,photo_mean")
    printed = capsys.readouterr().out
    assert "3 jobs, 0 already done, running 3" in printed and "| spg-cgan |" in printed
    # one generator epoch and one CoOp epoch: each kept its only (last) epoch, and the table says so
    assert {r["job"]["method"]: r["fit"]["last_epoch"] for r in records if "last_epoch" in r["fit"]} == \
        {"coop": 0, "spg-cgan": 0}
    assert "Under-trained by this schedule: coop (1 of 1 runs), spg-cgan (1 of 1 runs)" in printed

    before = {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()}
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    assert "3 jobs, 3 already done, running 0" in capsys.readouterr().out
    assert {p.name: p.stat().st_mtime_ns for p in (out / "records").iterdir()} == before
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--methods", "zero-shot", "--force"]) == 0
    assert "1 jobs, 0 already done, running 1" in capsys.readouterr().out


def test_the_dry_run_lists_every_job_with_its_time_measured_from_the_finished_ones(tmp_path, capsys):
    suite = _suite(tmp_path, f'targets = ["photo"]\nmethods = ["zero-shot", "coop"]\nseeds = [0]\nviews = 1\n{QUICK}')
    out = tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--dry-run"]) == 0
    assert "estimated time: nothing measured yet" in capsys.readouterr().out
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    coop = next(r for r in RecordStore(out).records() if r["method"] == "coop")
    assert run.main(["--suite", suite, "--out", str(out), "--dry-run", "--seeds", "0", "1", "2"]) == 0
    text = capsys.readouterr().out
    lines = [line.strip() for line in text.splitlines() if line.startswith("  digits-dg.")]
    assert len(lines) == 4  # zero-shot runs once (deterministic), coop per seed
    assert sum(line.endswith("(done)") for line in lines) == 2
    pending = [line for line in lines if ".coop.seed1." in line or ".coop.seed2." in line]
    assert all(line.endswith(f"~{coop['job_seconds']:.0f} s") for line in pending), pending
    assert f"estimated time of the 2 jobs to run: {2 * coop['job_seconds'] / 60:.1f} min of job time" in text


def test_rows_whose_loop_kept_its_last_epoch_are_named_under_trained():
    def record(method, best, last):
        fit = {"best_epoch": best, **({"last_epoch": last} if last is not None else {})}
        return {"status": "ok", "job": {"method": method, "seed": 0, "protocol": "multi-source"},
                "test_accuracy": {"photo": 0.5}, "seconds": {}, "fit": fit}

    records = [record("spg-cgan", 2, 2), record("spg-cgan", 2, 2), record("spg-cgan", 0, 2),
               record("coop", 1, 3), record("coop", 3, 3), record("zero-shot", 0, None)]
    assert sweep.kept_last_epoch([r for r in records if r["job"]["method"] == "spg-cgan"]) == (2, 3)
    assert sweep.kept_last_epoch([r for r in records if r["job"]["method"] == "zero-shot"]) == (0, 0)
    jobs = [type("J", (), {"method": m})() for m in ("zero-shot", "coop", "spg-cgan")]
    # half of coop's runs count (a tie names it: the schedule left it as likely under-trained as not)
    assert sweep.under_trained(jobs, records) == ["coop (1 of 2 runs)", "spg-cgan (2 of 3 runs)"]
    table = sweep.method_table(jobs, records)
    assert "| kept last epoch |" in table and "| 2 of 3 |" in table
    assert next(line for line in table.splitlines() if line.startswith("| zero-shot |")).count("–") >= 6


def test_generators_whose_prompts_stay_off_their_labels_are_named_under_the_tables():
    def record(method, ratio):
        return {"status": "ok", "job": {"method": method, "seed": 0, "protocol": "multi-source"},
                "test_accuracy": {"photo": 0.5}, "seconds": {}, "fit": {},
                **({"prompt_distance": {"ratio": ratio}} if ratio is not None else {})}

    records = [record("spg-cgan", 7.0), record("spg-cgan", 9.0), record("dpspg", 0.3), record("dpspg", 1.2),
               record("coop", None)]
    jobs = [type("J", (), {"method": m})() for m in ("coop", "spg-cgan", "dpspg")]
    assert sweep.off_their_labels(jobs, records) == ["spg-cgan (8.0×)"]  # dpspg's mean, 0.75, is on its labels
    table = sweep.method_table(jobs, records)
    assert "| prompts off labels (×) |" in table and "| 8.0 ± 1.4 |" in table


def test_the_spg_study_suites_dry_run_lists_each_of_its_jobs(tmp_path, capsys):
    assert run.main(["--suite", "spg-study", "--out", str(tmp_path / "study"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    jobs = [line.strip() for line in text.splitlines() if line.startswith("  digits-traps.")]
    assert "suite spg-study: 36 jobs" in text and len(jobs) == 36 and "more" not in text.split("the first job")[0]
    assert {job.split(".")[3] for job in jobs} == {"coop", "spg-cgan", "dpspg"}
    assert "gpu preset" in text


@pytest.mark.slow
def test_a_suite_of_several_datasets_has_a_table_each_and_one_averaged_over_them(tmp_path, capsys):
    path = tmp_path / "two.toml"
    path.write_text('description = "two datasets"\ndatasets = ["digits-dg", "digits-traps"]\nmethods = ["zero-shot"]\n'
                    '[backbone]\ndevice = "cpu"\n[overrides.digits-dg]\nper_class = 10\n'
                    '[overrides.digits-traps]\nper_class = 10\n')
    suite = suites.load(str(path))
    jobs = protocols.expand(suite, default_registry())
    assert [(job.dataset, job.targets) for job in jobs][3:5] == [("digits-dg", ("sketch",)), ("digits-traps", (
        default_registry().create("dataset", "digits-traps").domains[0],))]
    out = tmp_path / "out"
    assert run.main(["--suite", str(path), "--out", str(out), "--quiet"]) == 0
    records = RecordStore(out).records()
    assert sorted({r["job"]["dataset"] for r in records}) == ["digits-dg", "digits-traps"] and len(records) == 8
    table = (out / "table.md").read_text()
    assert table.index("Average test accuracy (%) over each dataset's held-out domains") < table.index(
        "digits-dg, leave one domain out") < table.index("digits-traps, leave one domain out")
    averages = {}
    for name in ("digits-dg", "digits-traps"):
        rows = [r for r in records if r["job"]["dataset"] == name]
        averages[name] = 100 * sum(r["test_accuracy"][r["job"]["targets"][0]] for r in rows) / 4
        assert (out / f"table.{name}.csv").read_text().startswith("method,")
        assert (out / f"table.{name}.png").stat().st_size > 0
    row = next(line for line in table.splitlines() if line.startswith("| zero-shot |"))
    cells = row.replace("**", "").split(" | ")[1:]
    assert [cell.split(" [")[0] for cell in cells] == [f"{averages['digits-dg']:.1f}", f"{averages['digits-traps']:.1f}",
                                                       f"{sum(averages.values()) / 2:.1f}"]
    assert all(cell.endswith("(1 seed)") for cell in cells[:2])
    assert (out / "table.csv").read_text().startswith("method,digits-dg_mean,digits-dg_std,digits-dg_low,digits-dg_high,"
                                                      "digits-dg_seeds,digits-dg_p_vs_best,digits-traps_mean")
    # the command line's --dataset runs that one dataset of the suite
    assert run.main(["--suite", str(path), "--out", str(tmp_path / "one"), "--quiet", "--dataset", "digits-traps",
                     "--targets", "dusk"]) == 0
    assert [r["job"]["dataset"] for r in RecordStore(tmp_path / "one").records()] == ["digits-traps"]


def test_targets_of_a_several_dataset_suite_pick_the_datasets_that_have_them(tmp_path):
    suite = suites.with_changes(suites.load("default"), targets=("photo", "dusk"))
    jobs = protocols.expand(suite, default_registry(), methods=["zero-shot"])
    assert [(job.dataset, job.targets) for job in jobs] == [("digits-dg", ("photo",)), ("digits-traps", ("dusk",))]
    only = protocols.expand(suites.with_changes(suite, targets=("photo",)), default_registry(), methods=["zero-shot"])
    assert [job.dataset for job in only] == ["digits-dg"]
    with pytest.raises(ConfigError, match="targets: unknown domain 'attic': no domain of digits-dg, digits-traps"):
        protocols.expand(suites.with_changes(suite, targets=("photo", "attic")), default_registry())


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
    sketch = _zero_shot(tmp_path, ["sketch"])["sketch"]
    assert f"| zero-shot | – | **{sketch:.1f}** [" in printed  # no avg over a missing target:
    assert "(1 seed) | – |" in printed

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
    expected = _zero_shot(tmp_path, ["photo", "sketch"])
    records = RecordStore(out).records()
    average = sum(100 * r["test_accuracy"][r["job"]["targets"][0]] for r in records) / 2
    row = next(line for line in table.splitlines() if line.startswith("| zero-shot |"))
    assert [cell.split(" [")[0] for cell in row.split(" | ")[1:]] == [
        f"**{expected['photo']:.1f}**", f"**{expected['sketch']:.1f}**", f"**{average:.1f}**"]
    assert run.main(["--suite", suite, "--out", str(out), "--shard", "2/2"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["processes", "ray"])
def test_launchers_run_the_same_two_job_sweep(tmp_path, launcher):
    if launcher == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed (CI installs it)")
    suite = _suite(tmp_path, 'targets = ["photo", "sketch"]\nmethods = ["zero-shot"]')
    out = tmp_path / launcher
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--launcher", launcher]) == 0
    records = RecordStore(out).records()
    assert {r["job"]["targets"][0]: round(100 * r["test_accuracy"][r["job"]["targets"][0]], 1) for r in records} == \
        _zero_shot(tmp_path, ["photo", "sketch"])


def _perf_suite(tmp_path, extra: str = "") -> str:
    path = tmp_path / "perf.toml"
    path.write_text('description = "tiny perf"\nkind = "perf"\n[backbone]\ndevice = "cpu"\n[perf]\n'
                    f"stage2_steps = 2\ninference_images = 4\nclasses = [3]\nextraction_images = 16\n{extra}")
    return str(path)


@pytest.mark.slow
def test_perf_suite_reports_each_ratio(tmp_path):
    assert run.main(["--suite", _perf_suite(tmp_path, "fresh_processes = false"), "--out", str(tmp_path / "out"),
                     "--quiet"]) == 0
    rows = json.loads((tmp_path / "out" / "records" / "perf.json").read_text())["rows"]
    assert [row["measurement"] for row in rows] == ["stage2", "inference (3 classes)", "prefix (3 classes)",
                                                    "coop-step (3 classes)", "extraction (0 loader workers)", "cache",
                                                    "precision", "startup (--help)", "startup (plugins)"]
    assert 0 <= rows[6]["same_predictions"] <= 1
    for row in rows[7:]:  # a new interpreter each: `import torch` holds torch; `promptgen --help` must not
        assert row["unit"] == "starts/s" and row["fast_rss_mb"] < row["baseline_rss_mb"] / 3
    for row in rows:
        assert row["ratio"] == pytest.approx(row["fast_rate"] / row["baseline_rate"]) and row["ratio"] > 0
    assert rows[1]["max_logit_diff"] <= 1e-3 and rows[2]["max_logit_diff"] <= 1e-4  # the same logits
    assert rows[3]["max_logit_diff"] <= 1e-4  # the same CoOp gradient
    # the floor: the whole-prompt rate scaled by the tokens encoded whole / the tokens needed (> 1)
    assert rows[2]["floor_rate"] > rows[2]["baseline_rate"]
    assert rows[2]["fast_over_floor"] == pytest.approx(rows[2]["fast_rate"] / rows[2]["floor_rate"])
    assert "| inference (3 classes) | full-length → truncated |" in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.slow
def test_perf_arms_run_in_their_own_processes_with_their_own_peak_memory(tmp_path):
    suite = _perf_suite(tmp_path, 'measurements = ["inference"]')
    assert run.main(["--suite", suite, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    (row,) = json.loads((tmp_path / "out" / "records" / "perf.json").read_text())["rows"]
    assert row["baseline_rss_mb"] > 50 and row["fast_rss_mb"] > 50  # a process with torch and the backbone
    assert row["max_logit_diff"] <= 1e-3  # logits came back from both processes


@pytest.mark.slow
def test_perf_suite_measures_each_methods_training_and_inference_cost(tmp_path):
    suite = _perf_suite(tmp_path, 'measurements = []\nmethods = ["zero-shot", "coop"]\nfresh_processes = false')
    assert run.main(["--suite", suite, "--out", str(tmp_path / "out"), "--quiet"]) == 0
    rows = json.loads((tmp_path / "out" / "records" / "methods.json").read_text())["rows"]
    assert [row["method"] for row in rows] == ["zero-shot", "coop"]
    for row in rows:
        assert row["train_s"] >= 0 and row["train_rss_mb"] >= 0 and row["inference_images_per_s"] > 0
    assert "| coop | features |" in (tmp_path / "out" / "table.md").read_text()
    assert (tmp_path / "out" / "methods.csv").read_text().startswith("method,inputs,train_s")


def _peaks() -> tuple[float, float]:
    from benchmarks.method_costs import Peak

    with Peak() as small:
        pass
    with Peak() as large:
        block = bytearray(200 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page: resident, not just reserved
        del block
    return small.rss_mb, large.rss_mb


@pytest.mark.slow
def test_method_cost_peak_is_the_blocks_own_memory():
    """In a fresh process, as the perf suite measures: a long-lived process (this test session) may serve a block
    from memory it freed earlier and still holds, which no resident-set measure can see."""
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        small, large = pool.submit(_peaks).result()
    assert small < 50 and large > 150


def test_one_epoch_overrides_only_the_components_with_epochs():
    from benchmarks.method_costs import one_epoch
    from promptgen.components.registry import default_registry
    registry = default_registry()
    assert one_epoch(registry, "spg-cgan", (("prompt_learner", "coop"), ("generator", "cgan"))) == \
        {"coop": {"epochs": 1, "warmup_epochs": 0}, "cgan": {"epochs": 1, "warmup_epochs": 0}}
    assert one_epoch(registry, "zero-shot", ()) == {}


def test_perf_suite_names_an_unknown_measurement(tmp_path, capsys):
    assert run.main(["--suite", _perf_suite(tmp_path, 'measurements = ["speed"]'), "--out", str(tmp_path)]) == 2
    assert "perf.toml: perf.measurements: unknown ['speed']" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_switches_the_protocol_and_checks_the_target_dataset(tmp_path, capsys):
    suite = _suite(tmp_path, 'methods = ["zero-shot"]')
    out = tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--protocol", "cross-dataset",
                     "--target-dataset", "digits-c", "--targets", "inverted"]) == 0
    (record,) = RecordStore(out).records()
    assert record["job"]["protocol"] == "cross-dataset" and record["target_dataset"] == "digits-c"
    assert record["sources"] == list(DOMAINS) and 0 < record["test_accuracy"]["inverted"] <= 1
    assert "trained on digits-dg, tested on digits-c" in capsys.readouterr().out
    assert run.main(["--suite", suite, "--out", str(out), "--protocol", "cross-dataset"]) == 2
    assert "a target dataset goes with, and only with, --protocol cross-dataset" in capsys.readouterr().err


def test_the_ray_launcher_ships_the_package_of_the_job_wherever_it_was_imported_from(tmp_path):
    from pathlib import Path

    import benchmarks
    from benchmarks.records import Attempt
    from promptgen_ray import RayLauncher

    from benchmarks.remote import NodeJob

    for job_function in (Attempt(sweep.JobRunner(tmp_path)), NodeJob(sweep.JobRunner(tmp_path), None)):
        assert RayLauncher()._modules(job_function) == [str(Path(benchmarks.__file__).parent)]
    assert RayLauncher(RayLauncher.Options(py_modules=["elsewhere"]))._modules(job_function) == ["elsewhere"]


@pytest.mark.slow
def test_the_harness_runs_from_an_installed_wheel(tmp_path):
    """benchmarks (with its suite files) is packaged: `python -m benchmarks.run` works outside a checkout."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(root), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "wheel")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("promptgen-*.whl")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    code = "import benchmarks, sys; print(benchmarks.__file__); from benchmarks import run; sys.exit(run.main(['--list']))"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": "", "PYTHONPATH": str(site), "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    first, *suites_listed = result.stdout.splitlines()
    assert first.startswith(str(site)) and any(line.startswith("default ") for line in suites_listed)


def test_seed_stability_is_the_spread_of_the_seed_averaged_accuracy(tmp_path):
    from benchmarks import sweep

    def record(method, seed, accuracy):
        return {"status": "ok", "job": {"method": method, "seed": seed, "protocol": "multi-source", "sources": ["a"]},
                "test_accuracy": accuracy}

    records = [record("m", 0, {"x": 0.8, "y": 0.6}), record("m", 1, {"x": 0.9, "y": 0.9}),
               record("m", 2, {"x": 0.5, "y": 0.7}), record("one-seed", 0, {"x": 0.5, "y": 0.5})]
    stability = sweep.seed_stability(sweep.table_rows(records[:3]))
    assert stability["mean"] == pytest.approx(73.33, abs=0.01) and stability["worst"] == pytest.approx(60.0)
    assert stability["std"] == pytest.approx(15.275, abs=1e-3) and stability["seeds"] == 3
    assert sweep.seed_stability(sweep.table_rows(records[3:])) is None
    assert sweep.plot_seed_spread(records, tmp_path / "s.png", "t").stat().st_size > 1000
    assert sweep.plot_seed_spread(records[3:], tmp_path / "none.png", "t") is None


@pytest.mark.slow
def test_the_stability_study_compares_prompts_across_seeds_and_noise_draws(tmp_path):
    """A stochastic generator (CGAN) gives different prompts per draw, so averaging draws can change the score; a
    deterministic one (the transformer) gives the same prompt each draw. Different seeds give different models."""
    body = ('methods = ["spg-cgan", "spg-transformer"]\nseeds = [0, 1]\ntargets = ["photo"]\nstability = true\n'
            'preset = "cpu"\nviews = 1')
    suite = _suite(tmp_path, body + "\n[overrides.coop]\nepochs = 1\nwarmup_epochs = 0\n[overrides.cgan]\nepochs = 1\n"
                                    "warmup_epochs = 0\n[overrides.transformer]\nepochs = 1\nwarmup_epochs = 0")
    out = tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "records" / "stability.json").read_text())["rows"]}
    assert set(rows) == {"spg-cgan", "spg-transformer"}
    for row in rows.values():
        assert row["seeds"] == 2 and row["draws"] == 10 and row["seed_distance"] > 0
        assert row["seed_distance_relative"] == pytest.approx(row["seed_distance"] / row["prompt_norm"])
        assert 0 <= row["one_draw"] <= 1 and 0 <= row["k_draws"] <= 1
    assert rows["spg-cgan"]["draw_distance"] > 0 and rows["spg-cgan"]["one_draw_std"] >= 0
    deterministic = rows["spg-transformer"]
    assert deterministic["draw_distance"] == 0 and deterministic["one_draw_std"] == 0
    assert deterministic["k_draws"] == pytest.approx(deterministic["one_draw"])
    assert "| spg-cgan | photo | 2 |" in (out / "stability.md").read_text()
    # --report rebuilds the study from the saved runs: the same numbers
    assert run.main(["--suite", suite, "--out", str(out), "--quiet", "--report"]) == 0
    again = {r["method"]: r for r in json.loads((out / "records" / "stability.json").read_text())["rows"]}
    assert again == rows
    _every_json_is_strict(out)


def _every_json_is_strict(root):
    """Every JSON file under ``root`` parses with a strict parser: no NaN or Infinity (JavaScript and jq refuse them)."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    files = sorted(root.rglob("*.json"))
    assert len(files) > 10  # a sweep's records, summary, study, and each run's config, metrics, history, manifest
    for path in files:
        json.loads(path.read_text(), parse_constant=refuse)


def test_a_suites_stability_key_must_be_a_boolean(tmp_path, capsys):
    assert run.main(["--suite", _suite(tmp_path, 'stability = "yes"'), "--out", str(tmp_path / "o")]) == 2
    assert 'tiny.toml: stability: must be true or false, got \'yes\'' in capsys.readouterr().err


@pytest.mark.slow
def test_the_gpu_checks_cpu_path_passes(tmp_path):
    """benchmarks.gpu_check --cpu: the script a lent GPU runs, on a tiny ViT; its exact paths hold and the two
    torchrun ranks' records join into one table."""
    from benchmarks import gpu_check

    assert gpu_check.main(["--cpu", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "perf" / "records" / "perf.json").read_text())["rows"]
    assert {r["measurement"] for r in rows} >= {"precision", "stage2", "prefix (345 classes)", "coop-step (7 classes)"}
    assert json.loads((tmp_path / "shards" / "summary.json").read_text())["ok"] == 2


@pytest.mark.slow
def test_the_domain_gap_table_is_opt_in(tmp_path):
    suite = _suite(tmp_path, 'methods = ["zero-shot"]\ntargets = ["photo"]')
    assert run.main(["--suite", suite, "--out", str(tmp_path / "plain"), "--quiet"]) == 0
    assert not (tmp_path / "plain" / "domain_gap.md").exists()
    assert run.main(["--suite", suite, "--out", str(tmp_path / "gap"), "--quiet", "--domain-gap"]) == 0
    gaps = json.loads((tmp_path / "gap" / "domain_gap.json").read_text())
    assert "FID above the diagonal" in (tmp_path / "gap" / "table.md").read_text() and gaps


@pytest.mark.slow
def test_two_spg_methods_in_one_sweep_train_stage_i_once(tmp_path):
    """spg-cgan and spg-cvae of one target and seed need the same CoOp labels: the second job loads them."""
    body = ('methods = ["spg-cgan", "spg-cvae"]\ntargets = ["photo"]\npreset = "cpu"\nviews = 1\n'
            '[overrides.coop]\nepochs = 2\n[overrides.cgan]\nepochs = 1\nwarmup_epochs = 0\n'
            '[overrides.cvae]\nepochs = 1\nwarmup_epochs = 0')
    out = tmp_path / "out"
    assert run.main(["--suite", _suite(tmp_path, body), "--out", str(out), "--quiet",
                     "--cache-dir", str(tmp_path / "cache")]) == 0
    records = {r["job"]["method"]: r for r in RecordStore(out).records()}
    first, second = (json.loads((Path(records[m]["run_dir"]) / "metrics.json").read_text())
                     for m in ("spg-cgan", "spg-cvae"))
    for domain, label in first["fit"]["stage1"].items():
        reused = second["fit"]["stage1"][domain]["stage1_store"]
        assert label["stage1_store"]["reused"] is False and reused["reused"] is True
        assert reused["from"] == label["stage1_store"]["from"]  # the run says where its labels came from
    for domain in first["fit"]["stage1"]:
        a, b = (Path(records[m]["run_dir"]) / "prompt_labels" / f"{domain}.safetensors" for m in ("spg-cgan", "spg-cvae"))
        assert a.read_bytes() == b.read_bytes()


def _tiny_scale_suite(tmp_path: Path) -> Path:
    """The shipped domainnet-scale suite with 2 images per class and domain (4,140 images) and half for val."""
    text = (suites.SUITES_DIR / "domainnet-scale.toml").read_text()
    text = text.replace("per_class = 12", "per_class = 2").replace("val_fraction = 0.05", "val_fraction = 0.5")
    path = tmp_path / "tiny-scale.toml"
    path.write_text(text)
    return path


@pytest.mark.slow
def test_the_scale_suite_runs_every_stage_on_a_generated_tree_and_projects_the_real_dataset(tmp_path, capsys):
    out = tmp_path / "out"
    assert run.main(["--suite", str(_tiny_scale_suite(tmp_path)), "--out", str(out), "--quiet"]) == 0
    table = (out / "table.md").read_text()
    for stage in ("generate the tree", "data info", "cache extract", "train: stage1", "train: test"):
        assert f"| {stage} |" in table, table
    record = json.loads((out / "records" / "scale.json").read_text())
    assert record["tree"]["files"] == 6 * 345 * 2
    assert record["sizes"]["test/sketch"] == 345 * 2  # the full held-out domain, every class folder found
    assert all(rate > 0 for rate in record["rates"].values())
    real = sum(suites.load(str(_tiny_scale_suite(tmp_path))).scale["sizes"].values())
    for projection in record["projection"].values():  # the real dataset's work, at the measured rates
        assert projection["inference_s"] > 0 and projection["stage1_steps"] > 0
    gpu, cpu = (next(p for name, p in record["projection"].items() if name.startswith(preset)) for preset in ("gpu", "cpu"))
    assert cpu["extracted_images"] >= real  # 80/20, 4 views of every train image, the whole target
    # the official split: 2 % x 8 views + 1 % of the sources, 3 % of the target
    assert gpu["extracted_images"] < 0.25 * real and gpu["stage1_steps"] < cpu["stage1_steps"] / 10
    assert (out / "index.html").exists() and (out / "runs" / "spg-cgan-sketch" / "metrics.json").exists()


def test_a_scale_suite_names_what_it_lacks(tmp_path):
    path = _tiny_scale_suite(tmp_path)
    path.write_text(path.read_text().replace('dir_name = "domain_net"', 'dir_nam = "domain_net"'))
    with pytest.raises(ConfigError, match=r"scale: unknown key\(s\) \['dir_nam'\]"):
        run.main(["--suite", str(path), "--out", str(tmp_path / "out"), "--debug"])


def test_a_suites_launcher_settings_reach_the_launcher_and_a_flag_wins(tmp_path, capsys):
    """benchmarks.run builds its launcher through the resolver: [overrides.processes] in the suite, then the flag."""
    from promptgen.components.registry import default_registry

    suite = suites.load(_suite(tmp_path, 'methods = ["zero-shot"]\n[overrides.processes]\nworkers = 3\n'))
    request = command_line.Request(launcher="processes", quiet=True)
    assert orchestration.launcher(request, default_registry(), suite).workers == 3
    request = command_line.Request(launcher="processes", workers=1, quiet=True)
    assert orchestration.launcher(request, default_registry(), suite).workers == 1
    bad = _suite(tmp_path, 'methods = ["zero-shot"]\n[overrides.processes]\nworkers = 0\n', name="bad")
    out = tmp_path / "out"
    assert run.main(["--suite", bad, "--out", str(out), "--launcher", "processes", "--quiet"]) == 2
    assert "launcher 'processes' (plugin local): option 'workers' must be >= 1" in capsys.readouterr().err
    assert not out.exists()  # refused before --out is made
