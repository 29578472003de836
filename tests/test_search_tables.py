"""What a search's tables say (benchmarks.trials, benchmarks.selection.write_tables) and the harness's words
(benchmarks.run): every trial with its drawn values, the score its selection method read and its test accuracy, ties
named as ties; --dataset in the output folder and the page's title; seeds and counts in plain words; why a per-method
table's seed columns are empty; one timing of the main job in the README. Records are written by hand, so that the
right trial, score and tie are known, and the tables come from --report."""

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from benchmarks import command_line, dry_run, orchestration, protocols, run, selection, suites, sweep, trials
from benchmarks.records import RecordStore
from promptgen.components.registry import default_registry

REGISTRY = default_registry()
ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("handwritten", "typeset", "sketch")

SEARCH = """description = "a search written by hand"
dataset = "digits-dg"
methods = ["zero-shot", "coop"]
targets = ["photo"]
hparams = { trials = 2, seed = 0 }
[backbone]
device = "cpu"
"""

# Per (method, trial): the run's source val, its photo test, its photo val (what the oracle reads) and, per source
# v, the test on v of the same trial trained without v (what leave-one-domain-out averages). coop's two trials tie
# on source val at 77.5: training-domain takes trial 0 (the lower); the oracle and leave-one-domain-out take trial 1.
RUNS = {
    ("zero-shot", 0): {"val": 0.70, "test": 0.78, "target_val": 0.70, "loo": (0.5, 0.5, 0.5)},
    ("coop", 0): {"val": 0.775, "test": 0.80, "target_val": 0.70, "loo": (0.6, 0.6, 0.6)},
    ("coop", 1): {"val": 0.775, "test": 0.75, "target_val": 0.90, "loo": (0.7, 0.7, 0.55)},
}
# What each selection method reads, per (method, trial), in percent: the per-trial table's score column.
READS = {
    "training-domain": {key: 100 * run["val"] for key, run in RUNS.items()},
    "leave-one-domain-out": {key: 100 * sum(run["loo"]) / 3 for key, run in RUNS.items()},
    "oracle": {key: 100 * run["target_val"] for key, run in RUNS.items()},
}
TAKEN = {"training-domain": 0, "leave-one-domain-out": 1, "oracle": 1}  # coop's trial under each method


def _record(accuracy: dict, val: float, target_val: dict) -> dict:
    """A finished run's record with what the tables read (no watched loop: every method reads the final model)."""
    return {"status": "ok", "val_accuracy": val, "test_accuracy": accuracy,
            "sizes": {f"test/{domain}": 400 for domain in accuracy},
            "checkpoints": {"target_val": target_val, "loops": []}, "fingerprint": "hand-written", "seconds": {},
            "fit": {}}


def _hand_written_search(tmp_path) -> tuple[str, Path, list]:
    path = tmp_path / "hand.toml"
    path.write_text(SEARCH)
    suite = suites.load(str(path))
    out = tmp_path / "out"
    store = RecordStore(out, suite=suite.name)
    jobs = protocols.expand(suite, REGISTRY)
    for job in jobs:
        values = RUNS[(job.method, job.trial)]
        if job.loo_for:
            (held,) = job.targets
            accuracy = values["loo"][SOURCES.index(held)]
            store.write(job, _record({held: accuracy}, 0.5, {held: 0.5}))
        else:
            store.write(job, _record({"photo": values["test"]}, values["val"], {"photo": values["target_val"]}))
    return str(path), out, jobs


@pytest.fixture
def reported(tmp_path, capsys):
    """The hand-written search's outputs after --report: (out, the printed text, its jobs)."""
    path, out, jobs = _hand_written_search(tmp_path)
    assert run.main(["--suite", path, "--out", str(out), "--report", "--quiet"]) == 0
    return out, capsys.readouterr().out, jobs


def _drawn(jobs) -> dict:
    return {job.trial: job.hparams for job in jobs if job.method == "coop" and not job.loo_for}


def test_two_tied_trials_are_both_marked_tie_with_their_drawn_values_and_the_rule_that_broke_it(reported):
    out, printed, jobs = reported
    drawn = _drawn(jobs)
    assert drawn[0] == {} and drawn[1]  # trial 0 is the preset; trial 1 drew coop's learning rate
    section = printed[printed.index("Every trial, training-domain"):printed.index("Selected by leave-one-domain-out")]
    assert "| method | held out | seed | trial | drawn values | score | test | choice |" in section
    assert "| coop | photo | 0 | 0 | preset | 77.50 | 80.00 | **selected**, tie: the lower trial wins |" in section
    assert (f"| coop | photo | 0 | 1 | {trials.drawn_text(drawn[1])} | 77.50 | 75.00 | tie: the lower trial wins |"
            in section)
    assert "| zero-shot | photo | 0 | 0 | preset | 70.00 | 78.00 | **selected** |" in section  # one trial: no tie
    assert re.fullmatch(r"coop\.lr=[0-9.e-]+", trials.drawn_text(drawn[1]))
    # the same two trials, no tie where the scores differ
    oracle = printed[printed.index("Every trial, oracle"):].split("\n\n")[1].splitlines()  # its table
    assert len(oracle) == 2 + 3 and not any("tie" in line for line in oracle)
    chosen = json.loads((out / "selection.json").read_text())["selection"]  # keeps the ties and scores too
    coop = {name: next(c for c in chosen[name]["choices"] if c["method"] == "coop") for name in chosen}
    assert (coop["training-domain"]["trial"], coop["training-domain"]["tied"]) == (0, [0, 1])
    assert [score["val"] for score in coop["training-domain"]["scores"]] == [0.775, 0.775]
    assert (coop["oracle"]["trial"], coop["oracle"]["tied"]) == (1, [])


def test_the_per_trial_csv_has_a_row_per_trial_with_score_test_selected_and_tie(reported):
    out, _, jobs = reported
    with open(out / "trials.training-domain.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["method"], r["column"], r["seed"], r["trial"], r["score"], r["test"], r["selected"], r["tie"])
            for r in rows] == [("zero-shot", "photo", "0", "0", "70.0000", "78.0000", "1", "0"),
                               ("coop", "photo", "0", "0", "77.5000", "80.0000", "1", "1"),
                               ("coop", "photo", "0", "1", "77.5000", "75.0000", "0", "1")]
    assert [json.loads(r["hparams"]) for r in rows] == [{}, {}, _drawn(jobs)[1]]
    for name in selection.DESCRIPTIONS:
        assert (out / f"trials.{name}.csv").read_text().startswith("method,column,seed,trial,hparams,score,test,")


@pytest.mark.parametrize("name", list(READS))
def test_the_score_column_is_what_each_selection_method_reads(reported, name):
    out, printed, _ = reported
    with open(out / f"trials.{name}.csv", newline="") as file:
        rows = {(r["method"], int(r["trial"])): r for r in csv.DictReader(file)}
    assert set(rows) == set(READS[name])
    for key, score in READS[name].items():
        assert float(rows[key]["score"]) == pytest.approx(score, abs=1e-4)
        assert float(rows[key]["test"]) == pytest.approx(100 * RUNS[key]["test"], abs=1e-4)
    taken = [trial for (method, trial), row in rows.items() if method == "coop" and row["selected"] == "1"]
    assert taken == [TAKEN[name]]
    section = printed[printed.index(f"Every trial, {name}: score = {trials.SCORES[name]}"):]
    coop = next(line for line in section.splitlines() if line.startswith(f"| coop | photo | 0 | {TAKEN[name]} |"))
    assert f"| {READS[name][('coop', TAKEN[name])]:.2f} | " in coop and "**selected**" in coop


def test_the_html_report_shows_every_selection_table_and_its_per_trial_table(reported):
    out, printed, _ = reported
    html = (out / "index.html").read_text()
    assert html.count("<th>drawn values</th>") == 3 and "tie: the lower trial wins" in html
    # leave-one-domain-out and the oracle took the same values (other trials than training-domain): both tables show
    assert html.count('photo</th><th class="right">avg</th></tr>') == 3
    assert "its val split, not its test split" in printed and "ORACLE" in printed
    assert "not by its test split, and reports the selected trial's test accuracy" in printed


def test_a_search_heading_says_one_seed_and_counts_in_plain_words(reported):
    _, printed, _ = reported
    assert "1 seed (0) [95% interval]" in printed and "mean over seeds 0" not in printed
    assert "the best of 2 trials (search seed 0)" in printed and "trial(s)" not in printed
    assert sweep.seeds_text([0, 1, 2]) == "mean over 3 seeds (0, 1, 2)" and sweep.seeds_text([4]) == "1 seed (4)"


def test_the_dry_runs_search_line_says_trials_jobs_and_runs_singular_or_plural(tmp_path):
    path = tmp_path / "hand.toml"
    path.write_text(SEARCH)
    suite = suites.load(str(path))
    assert dry_run.search_size(suite, protocols.expand(suite, REGISTRY))[0].startswith(
        "search: 2 trials (seed 0) of 2 jobs: 3 runs (a method with no search space runs trial 0 only) and 9 "
        "leave-one-domain-out runs; selection: ")
    one = suites.with_changes(suite, methods=("zero-shot",))
    assert dry_run.search_size(one, protocols.expand(one, REGISTRY))[0].startswith(
        "search: 2 trials (seed 0) of 1 job: 1 run (a method with no search space runs trial 0 only) and 3 "
        "leave-one-domain-out runs;")
    assert sweep.counted(1, "trial") == "1 trial" and sweep.counted(1602, "run") == "1,602 runs"


def test_a_methods_table_of_one_seed_says_why_its_seed_columns_are_empty(reported):
    out, printed, _ = reported
    why = "The seed columns need 2 or more seeds; this sweep ran 1."
    assert (out / "methods.md").read_text().rstrip().endswith(why)
    table = printed[printed.index("| method | seed std (points) |"):]
    assert table.split("\n\n")[1] == why  # the line right under the table
    record = {"status": "ok", "seconds": {}, "fit": {}}
    runs = [{**record, "job": {"method": "coop", "seed": seed, "protocol": "multi-source", "sources": ["a"],
                               "targets": ["photo"]}, "test_accuracy": {"photo": accuracy}}
            for seed, accuracy in ((0, 0.5), (1, 0.7))]
    jobs = [SimpleNamespace(method="coop")]  # method_table reads a job's method alone
    assert "seed columns" not in sweep.method_table(jobs, runs)  # two seeds: the columns have values
    assert sweep.method_table(jobs, runs[:1]).endswith(why)


def test_dataset_names_the_default_output_folder_and_the_pages_title(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # results/ goes here
    # --report with no records: the cheap way through the command line (exit code 3: every job lacks a record)
    assert run.main(["--dataset", "digits-traps", "--report", "--quiet"]) == run.PARTIAL
    out = tmp_path / "results" / "default-digits-traps"
    assert (out / "index.html").is_file() and not (tmp_path / "results" / "default").exists()
    html = (out / "index.html").read_text()
    assert "<title>default (digits-traps)</title>" in html and "<h1>default (digits-traps)</h1>" in html
    assert "digits-traps, leave one domain out" in capsys.readouterr().out
    # an --out the user gives is kept as given; the title still names the dataset
    mine = tmp_path / "mine"
    assert run.main(["--dataset", "digits-traps", "--report", "--quiet", "--out", str(mine)]) == run.PARTIAL
    assert "<title>default (digits-traps)</title>" in (mine / "index.html").read_text()
    # a --dataset that is the suite's own changes nothing; the default suite names itself alone
    parser = command_line.build_parser()
    for argv, folder, label in ((["--suite", "digits-dg", "--dataset", "digits-dg"], "digits-dg", "digits-dg"),
                                ([], "default", "default"),
                                (["--dataset", "digits-dg"], "default-digits-dg", "default (digits-dg)")):
        suite = orchestration.suite_from_request(command_line.Request.from_flags(parser.parse_args(argv)))
        assert (suite.default_out, suite.label) == (Path("results") / folder, label)
    help_text = next(action.help for action in parser._actions if "--dataset" in action.option_strings)
    assert "it narrows the suite to that one, its jobs and its table alone" in help_text
    assert "results/default-digits-traps, 'default (digits-traps)'" in help_text


def test_the_readme_gives_the_main_jobs_time_once_and_the_history_lives_in_the_benchmarks_doc():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("- `python -m benchmarks.run` — the main job")
    bullet = readme[start:readme.index("\n- ", start + 1)]
    durations = re.findall(r"\b\d[\d,.]*\s*(?:s|min|minutes?|seconds?|h|hours?)\b", bullet)
    assert durations == ["484 s"], durations
    history = (ROOT / "docs" / "benchmarks.md").read_text()
    assert all(time in history for time in ("484 s", "418 s and 461 s after issue 28", "438 s", "523 s"))
