"""A search in the harness (benchmarks.search) and DomainBed's three selection methods over its records
(benchmarks.selection): hand-made records where the right trial is known, the jobs a suite's hparams expand
into, and small real searches through the command line."""

import json
import math

import attrs
import pytest

from benchmarks import protocols, run, search, selection, suites
from benchmarks.records import RecordStore
from promptgen.components.registry import default_registry
from promptgen.components.search import draw_trial
from promptgen.errors import ConfigError

REGISTRY = default_registry()


# --- hand-made records ------------------------------------------------------------------------------------------

def _loops(epochs: list[dict]) -> list[dict]:
    return [{"loop": "coop", "checkpoints": [{"epoch": i, "candidate": True, **e} for i, e in enumerate(epochs)]}]


def _record(trial, target="photo", val=0.5, test=0.5, target_val=0.5, epochs=None, method="coop", seed=0,
            sources=("handwritten", "typeset", "sketch"), loo_for=None, status="ok"):
    """One job's record as the harness writes it, with only what selection reads."""
    job = {"id": f"{method}.{target}.{loo_for}.{trial}.{seed}", "protocol": "multi-source", "dataset": "digits-dg",
           "sources": list(sources), "targets": [target], "method": method, "seed": seed, "trial": trial}
    if loo_for:
        job["loo_for"] = loo_for
    return {"job": job, "status": status, "val_accuracy": val, "test_accuracy": {target: test},
            "sizes": {f"test/{target}": 400},
            "checkpoints": {"target_val": {target: target_val}, "loops": _loops(epochs or [])}}


def _chosen(method, records):
    rows, choices = selection.select(method, records)
    return {(c["method"], c["column"], c["seed"]): (c["trial"], round(c["test"], 4)) for c in choices}


def test_training_domain_takes_the_trial_with_the_best_source_val_and_its_kept_epochs_test():
    records = [_record(0, val=0.6, test=0.70), _record(1, val=0.8, test=0.65), _record(2, val=0.7, test=0.90)]
    assert _chosen("training-domain", records) == {("coop", "photo", 0): (1, 0.65)}


def test_a_tie_goes_to_the_lower_trial_so_the_preset_wins_it():
    records = [_record(2, val=0.8, test=0.9), _record(0, val=0.8, test=0.6), _record(1, val=0.8, test=0.7)]
    assert _chosen("training-domain", records) == {("coop", "photo", 0): (0, 0.6)}
    nan = [_record(0, val=math.nan, test=0.6), _record(1, val=0.1, test=0.7)]  # no source val: it never wins
    assert _chosen("training-domain", nan) == {("coop", "photo", 0): (1, 0.7)}


def test_the_oracle_takes_the_last_epoch_of_the_trial_best_on_the_targets_val_split():
    records = [
        # trial 0: its best target val is at epoch 0, but the oracle reads the last epoch (no early stopping)
        _record(0, epochs=[{"target-val/photo": 0.99, "test/photo": 0.95}, {"target-val/photo": 0.5,
                                                                              "test/photo": 0.4}]),
        _record(1, epochs=[{"target-val/photo": 0.2, "test/photo": 0.3}, {"target-val/photo": 0.7,
                                                                            "test/photo": 0.75}]),
        _record(2, target_val=0.6, test=0.8),  # no watched loop: its final model
    ]
    assert _chosen("oracle", records) == {("coop", "photo", 0): (1, 0.75)}
    rows, _ = selection.select("oracle", records)
    assert rows[0]["parts"][0]["predictions"] is None and rows[0]["parts"][0]["images"] == 400


def test_leave_one_domain_out_averages_the_held_out_sources_per_epoch():
    sources = ("handwritten", "typeset", "sketch")

    def trial(number, main_tests, held):  # held: per source, its accuracy at each of two epochs
        main = _record(number, epochs=[{"test/photo": t, "target-val/photo": 0.0} for t in main_tests])
        loo = [_record(number, target=v, loo_for="photo", sources=[s for s in sources if s != v],
                       epochs=[{f"test/{v}": a, f"target-val/{v}": 0.0} for a in held[v]]) for v in sources]
        return [main, *loo]

    records = (trial(0, [0.5, 0.6], {"handwritten": [0.5, 0.5], "typeset": [0.5, 0.5], "sketch": [0.5, 0.5]})
               + trial(1, [0.7, 0.8], {"handwritten": [0.9, 0.6], "typeset": [0.9, 0.6], "sketch": [0.6, 0.6]}))
    # trial 1, epoch 0: mean held-out accuracy 0.8 beats every other (trial, epoch); its test at epoch 0 is 0.7
    assert _chosen("leave-one-domain-out", records) == {("coop", "photo", 0): (1, 0.7)}
    # a trial whose leave-one-out runs are not all there is not a candidate (a missing job)
    partial = [r for r in records if not (r["job"]["trial"] == 1 and r["job"]["targets"] == ["sketch"])]
    assert _chosen("leave-one-domain-out", partial) == {("coop", "photo", 0): (0, 0.5)}  # equal epochs: the earlier


def test_a_missing_or_failed_job_leaves_its_trial_out_and_the_rest_still_select():
    records = [_record(0, val=0.6, test=0.7), _record(1, val=0.9, test=0.2, status="failed"),
               _record(2, val=0.7, test=0.8)]
    assert _chosen("training-domain", records) == {("coop", "photo", 0): (2, 0.8)}
    _, choices = selection.select("training-domain", records)
    assert choices[0]["trials"] == [0, 2]


def test_each_cell_selects_on_its_own_seed_and_target():
    records = [_record(0, val=0.9, test=0.1, seed=1), _record(1, val=0.1, test=0.2, seed=1),
               _record(0, target="sketch", val=0.1, test=0.3), _record(1, target="sketch", val=0.2, test=0.4)]
    assert _chosen("training-domain", records) == {("coop", "photo", 1): (0, 0.1), ("coop", "sketch", 0): (1, 0.4)}


# --- a suite's hparams -----------------------------------------------------------------------------------------

def _suite(tmp_path, body: str, name: str = "search") -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'description = "a test search"\ndataset = "digits-dg"\n{body}\n[backbone]\ndevice = "cpu"\n'
                    '[overrides.digits-dg]\nper_class = 10\n[overrides.coop]\nepochs = 2\n'
                    '[overrides.cocoop]\nepochs = 1\n')
    return str(path)


def test_hparams_expand_into_trials_whose_zero_is_the_preset_and_whose_values_are_drawn_by_the_seed(tmp_path):
    suite = suites.load(_suite(tmp_path, 'methods = ["zero-shot", "coop"]\ntargets = ["photo"]\n'
                                         'hparams = { trials = 3, seed = 5, selection = ["training-domain"] }'))
    jobs = protocols.expand(suite, REGISTRY)
    assert [(job.method, job.trial) for job in jobs] == [("zero-shot", 0), ("coop", 0), ("coop", 1), ("coop", 2)]
    plain = protocols.expand(attrs.evolve(suite, search=None), REGISTRY)
    coop = {job.trial: job for job in jobs if job.method == "coop"}
    preset = next(job for job in plain if job.method == "coop")
    assert coop[0].config.overrides == preset.config.overrides and coop[0].hparams == {}
    assert coop[0].config.checkpoints and not preset.config.checkpoints
    for trial in (1, 2):
        drawn = draw_trial(REGISTRY, (("method", "coop"), ("prompt_learner", "coop")), trial, seed=5)
        assert coop[trial].hparams == drawn and coop[trial].config.overrides["coop"] == {"epochs": 2, **drawn["coop"]}
    assert [job.id for job in protocols.expand(suite, REGISTRY)] == [job.id for job in jobs]  # the same seed
    other = protocols.expand(attrs.evolve(suite, search=search.Search(3, 6, ("training-domain",))), REGISTRY)
    assert {job.id for job in other} & {job.id for job in jobs} == {job.id for job in jobs if job.trial == 0}
    record = jobs[-1].describe()
    assert record["trial"] == 2 and record["hparams"] == coop[2].hparams and ".trial2." in record["id"]


def test_leave_one_domain_out_adds_a_run_per_source_without_it(tmp_path):
    suite = suites.load(_suite(tmp_path, 'methods = ["coop"]\ntargets = ["photo"]\nhparams = { trials = 2 }'))
    jobs = protocols.expand(suite, REGISTRY)
    loo = [job for job in jobs if job.loo_for]
    assert len(loo) == 2 * 3 and all(job.loo_for == "photo" for job in loo)
    for job in loo:
        (held,) = job.targets
        assert "photo" not in job.sources and held not in job.sources and len(job.sources) == 2
        assert f"to-{held}.loo-photo" in job.id


@pytest.mark.parametrize("body", ['protocol = "single-source"\nmethods = ["coop"]\n'
                                  'hparams = { trials = 2, selection = ["leave-one-domain-out"] }'])
def test_leave_one_domain_out_refuses_fewer_than_three_sources_in_one_line(tmp_path, capsys, body):
    path = _suite(tmp_path, body)
    assert run.main(["--suite", path, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "leave-one-domain-out selection needs at least 3 source domains" in error and "have 1" in error
    assert not (tmp_path / "out" / "records").exists()
    # not asked for by name: left out with a note, and the other selection methods run
    suite = suites.load(_suite(tmp_path, 'protocol = "single-source"\nmethods = ["coop"]\nhparams = { trials = 2 }',
                               name="quiet"))
    notes = []
    jobs = protocols.expand(suite, REGISTRY, notes=notes)
    assert not any(job.loo_for for job in jobs) and "left out" in notes[0]


@pytest.mark.parametrize("hparams, message", [
    ("{ trials = 0 }", "hparams.trials: must be an integer >= 1"),
    ("{ trials = 2, tirals = 3 }", "unknown key 'tirals'"),
    ('{ selection = ["orcale"] }', "unknown selection method 'orcale'"),
    ("3", "hparams: must be a table"),
])
def test_a_bad_hparams_table_is_refused_naming_the_file_and_key(tmp_path, hparams, message):
    with pytest.raises(ConfigError, match="search.toml: hparams") as error:
        suites.load(_suite(tmp_path, f"hparams = {hparams}"))
    assert message in str(error.value)


def test_the_dry_run_prints_trials_times_jobs_and_a_time_measured_from_finished_jobs(tmp_path, capsys):
    path = _suite(tmp_path, 'methods = ["zero-shot", "coop"]\ntargets = ["photo"]')
    out = tmp_path / "out"
    assert run.main(["--suite", path, "--out", str(out), "--dry-run", "--trials", "4"]) == 0
    text = capsys.readouterr().out
    assert "search: 4 trials (seed 0) of 2 jobs: 5 runs" in text and "15 leave-one-domain-out runs" in text
    assert "nothing measured yet" in text and not out.exists()
    assert run.main(["--suite", path, "--out", str(out), "--quiet", "--trials", "1"]) == 0  # trial 0 measures
    capsys.readouterr()
    assert run.main(["--suite", path, "--out", str(out), "--dry-run", "--trials", "4"]) == 0
    text = capsys.readouterr().out
    assert "20 jobs (20 in this shard, 8 already done)" in text and "estimated time of the 12 jobs to run" in text
    assert "from the times of 8 finished jobs" in text


# --- small real searches through the command line ------------------------------------------------------------------

@pytest.mark.slow
def test_a_small_search_runs_end_to_end_and_report_recomputes_a_partial_sweep(tmp_path, capsys):
    """2 methods x 3 trials x 2 targets, tiny schedules, the three selection methods."""
    path = _suite(tmp_path, 'methods = ["coop", "cocoop"]\ntargets = ["photo", "sketch"]\n'
                            'hparams = { trials = 3, seed = 0 }')
    out = tmp_path / "out"
    assert run.main(["--suite", path, "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    chosen = json.loads((out / "selection.json").read_text())
    for name in search.SELECTION_METHODS:
        assert f"Selected by {selection.DESCRIPTIONS[name]}" in text and (out / f"table.{name}.csv").is_file()
        assert {(c["method"], c["column"]) for c in chosen["selection"][name]["choices"]} == {
            (m, t) for m in ("coop", "cocoop") for t in ("photo", "sketch")}
        assert not chosen["selection"][name]["missing"]
    assert "ORACLE" in text and "upper bound" in text and (out / "search.png").is_file()
    store = RecordStore(out)
    records = store.records()
    assert len(records) == 2 * 3 * 2 * (1 + 3)
    main = [r for r in records if not r["job"].get("loo_for")]
    for record in main:
        checkpoints = record["checkpoints"]
        (loop,) = checkpoints["loops"]  # one watched loop per run: the method's
        vals = [c["val"] for c in loop["checkpoints"]]
        kept = loop["checkpoints"][vals.index(max(vals))]  # the loop's rule: the best source val, the earlier
        (target,) = record["job"]["targets"]
        assert kept[f"test/{target}"] == pytest.approx(record["test_accuracy"][target])  # the same model, scored
        assert checkpoints["target_val"][target] == pytest.approx(kept[f"target-val/{target}"])
        assert checkpoints["val_in_test"] == {target: 0}  # digits-dg's val and test splits are disjoint
    training = chosen["selection"]["training-domain"]["choices"]
    for choice in training:  # the cell's value is the chosen trial's record
        record = next(r for r in main if (r["job"]["method"], r["job"]["targets"][0], r["job"]["trial"]) ==
                      (choice["method"], choice["column"], choice["trial"]))
        assert choice["test"] == pytest.approx(record["test_accuracy"][choice["column"]])
    html = (out / "index.html").read_text()
    assert "search.png" in html and "ORACLE" in html
    # a partial sweep: a trial's record gone, --report says what is missing and keeps the rest
    gone = next(r for r in main if r["job"]["method"] == "coop" and r["job"]["trial"] == 2)
    (out / "records" / f"{gone['job']['id']}.json").unlink()
    assert run.main(["--suite", path, "--out", str(out), "--quiet", "--report"]) == run.PARTIAL
    captured = capsys.readouterr()
    text = captured.out
    assert "Partial: 1 of the jobs this selection reads have no finished record yet" in text
    assert f"{gone['job']['id']}.json (missing)" in captured.err
    assert gone["job"]["id"] in text
    partial = json.loads((out / "selection.json").read_text())["selection"]["training-domain"]
    assert partial["missing"] == [gone["job"]["id"]]
    cell = next(c for c in partial["choices"] if (c["method"], c["column"]) == ("coop", gone["job"]["targets"][0]))
    assert cell["trials"] == [0, 1]


# --- a plugin's own loop, through a real entry point, the CLI and a search suite -----------------------------------

PROBE = '''
from typing import Annotated

import torch

from promptgen import hookimpl
from promptgen.toolkit import LogUniform, accuracy, option, report_epoch


class Probe:
    """A linear head on the cached image features, trained in a loop of its own that reports every epoch."""

    inputs = "features"

    def __init__(self, lr: Annotated[float, option("SGD learning rate", above=0, search=LogUniform(0.01, 1.0))] = 0.1,
                 epochs: Annotated[int, option("epochs", minimum=1)] = 3):
        self.lr, self.epochs = lr, epochs

    def components(self):
        return []

    def _accuracy(self, features):
        return accuracy(self.head(features.features), features.labels)

    def fit(self, run):
        train, val = run.features("train"), run.features("val")
        torch.manual_seed(run.seed)
        self.head = torch.nn.Linear(train.features.shape[1], len(run.classes))
        optimizer = torch.optim.SGD(self.head.parameters(), lr=self.lr)
        for epoch in range(self.epochs):
            loss = torch.nn.functional.cross_entropy(self.head(train.features), train.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                report_epoch("pg-probe", epoch, self._accuracy(val), features=self._accuracy)
        return {}

    @torch.no_grad()
    def logits(self, run, split):
        return self.head(run.features(split).features)

    def save(self, directory):
        pass

    def load(self, directory, run):
        raise NotImplementedError


@hookimpl
def register_methods(register):
    register("pg-probe", Probe)
'''


def test_a_plugins_own_loop_reports_its_epochs_to_a_search_run_through_the_cli(tmp_path, install_plugin):
    install_plugin("pg_probe", PROBE)
    path = _suite(tmp_path, 'methods = ["pg-probe"]\ntargets = ["photo"]\n'
                            'hparams = { trials = 2, seed = 3, selection = ["training-domain", "oracle"] }')
    out = tmp_path / "out"
    assert run.main(["--suite", path, "--out", str(out), "--quiet"]) == 0
    records = {r["job"]["trial"]: r for r in RecordStore(out).records()}
    assert sorted(records) == [0, 1]
    drawn = draw_trial(default_registry(), (("method", "pg-probe"),), 1, seed=3)["pg-probe"]["lr"]
    assert records[1]["job"]["hparams"] == {"pg-probe": {"lr": drawn}} and 0.01 <= drawn <= 1.0
    for record in records.values():
        (loop,) = record["checkpoints"]["loops"]
        assert loop["loop"] == "pg-probe" and [c["epoch"] for c in loop["checkpoints"]] == [0, 1, 2]
        # the plugin keeps its last epoch: what the run scored is its last checkpoint
        assert loop["checkpoints"][-1]["test/photo"] == pytest.approx(record["test_accuracy"]["photo"])
    chosen = json.loads((out / "selection.json").read_text())["selection"]
    assert set(chosen) == {"training-domain", "oracle"}


def test_watching_a_run_changes_nothing_it_trains():
    """A run that records checkpoints trains the same model: the same test predictions, image for image."""
    from promptgen.runs.config import RunConfig
    from promptgen.runs.engine import run as engine_run

    import tempfile

    config = RunConfig(targets=("photo",), method="spg-cgan", backbone={"device": "cpu"}, preset="cpu",
                       overrides={"digits-dg": {"per_class": 10}, "coop": {"epochs": 2}, "cgan": {"epochs": 2}})
    with tempfile.TemporaryDirectory() as directory:
        plain = engine_run(config, f"{directory}/plain", progress=False)
        watched = engine_run(attrs.evolve(config, checkpoints=True), f"{directory}/watched", progress=False)
    assert watched["test_predictions"] == plain["test_predictions"] and "checkpoints" not in plain
    assert watched["test_accuracy"] == plain["test_accuracy"] and watched["val_accuracy"] == plain["val_accuracy"]
    loops = watched["checkpoints"]["loops"]
    assert loops[-1]["loop"] == "cgan" and len(loops[-1]["checkpoints"]) == 2


def test_a_run_outside_a_search_keeps_the_job_id_it_had_before_checkpoints_existed():
    from benchmarks.records import Job
    from promptgen.runs.config import RunConfig

    config = RunConfig(targets=("photo",), method="coop")
    assert "checkpoints" not in config.identity()
    assert Job("multi-source", config).id == "digits-dg.multi-source.to-photo.coop.seed0.67646a5e"  # as at 2d2a79f
    assert attrs.evolve(config, checkpoints=True).identity()["checkpoints"] is True


def test_report_epoch_costs_nothing_outside_a_search_and_asks_for_one_way_to_score():
    from promptgen.toolkit import report_epoch

    report_epoch("loop", 0, 0.5, features=lambda features: 1 / 0)  # no watch open: the scorer is never called
    with pytest.raises(ValueError, match="give one of features= .* or split="):
        report_epoch("loop", 0, 0.5)


def test_a_search_run_with_the_gpu_presets_dpspg_records_its_joint_loop_and_which_epochs_were_candidates(tmp_path):
    """The gpu preset's DPSPG (stage I and II joint, LATE) with a run's checkpoints on, its epochs cut short: the
    joint generator loop is the one watched last, and epochs before LATE are marked as no candidates."""
    from promptgen.runs.config import RunConfig
    from promptgen.runs.engine import run as engine_run

    config = RunConfig(targets=("photo",), method="dpspg", backbone={"device": "cpu"}, preset="gpu", views=1,
                       checkpoints=True,
                       overrides={"digits-dg": {"per_class": 10}, "dpspg": {"late": 1},
                                  "dpspg-coop": {"epochs": 1, "warmup_epochs": 0},
                                  "transformer": {"epochs": 2, "warmup_epochs": 0}})
    metrics = engine_run(config, tmp_path / "run", progress=False)
    loops = metrics["checkpoints"]["loops"]
    assert loops[-1]["loop"] == "transformer (both paths)"
    assert [(c["epoch"], c["candidate"]) for c in loops[-1]["checkpoints"]] == [(0, False), (1, True)]
    assert loops[-1]["checkpoints"][1]["test/photo"] == pytest.approx(metrics["test_accuracy"]["photo"])
