"""python -m benchmarks.run on inputs that used to hang it, pass silently or be taken as they came (issue 36): a
search of a billion trials is refused at once, a table built from missing or damaged records exits PARTIAL naming
them, another suite's record is named, and --threads above the usable cores is clamped, saying so."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import orchestration, records, run, search, suites
from promptgen.errors import ConfigError
from promptgen.machine import usable_cores

REPO = Path(__file__).resolve().parents[1]
BILLION = 1_000_000_000


def _suite(directory: Path, body: str, name: str = "tiny") -> str:
    """A suite file of zero-shot runs (seconds each): digits-dg at 10 images per class and domain, on the CPU."""
    path = directory / f"{name}.toml"
    path.write_text(f'description = "issue 36"\ndataset = "digits-dg"\nmethods = ["zero-shot"]\n{body}\n'
                    '[backbone]\ndevice = "cpu"\n[overrides.digits-dg]\nper_class = 10\n')
    return str(path)


def _cli(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """The command a user types, in a new interpreter: its result and its wall time."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", *args], capture_output=True, text=True,
                            timeout=timeout, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result, time.perf_counter() - start


# --- 1. a search's trials are bounded --------------------------------------------------------------------------

def test_a_billion_trials_are_refused_at_once_in_one_line_naming_the_flag_and_the_maximum(tmp_path):
    result, seconds = _cli("--suite", "digits-dg-search", "--trials", str(BILLION), "--dry-run",
                           "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and result.stdout == ""
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "--trials: at most 200 trials per job (MAX_TRIALS, benchmarks/search.py), got 1,000,000,000" in line
    assert seconds < 60  # start-up only: it hung past 120 s, making jobs, before the bound
    assert not (tmp_path / "x").exists()


def test_the_default_suite_on_one_dataset_refuses_them_the_same_way(tmp_path, capsys):
    assert run.main(["--dataset", "digits-dg", "--trials", str(BILLION), "--dry-run", "--out", str(tmp_path)]) == 2
    assert "--trials: at most 200 trials per job" in capsys.readouterr().err
    assert run.main(["--dataset", "digits-dg", "--trials", str(search.MAX_TRIALS + 1), "--dry-run"]) == 2
    assert f"got {search.MAX_TRIALS + 1}" in capsys.readouterr().err


@pytest.mark.parametrize("trials", [BILLION, search.MAX_TRIALS + 1])
def test_a_suite_files_hparams_trials_go_through_the_same_bound_naming_the_file_and_key(tmp_path, capsys, trials):
    path = _suite(tmp_path, f'targets = ["photo"]\nhparams = {{ trials = {trials} }}')
    with pytest.raises(ConfigError) as error:
        suites.load(path)
    assert str(error.value) == (f"{path}: hparams.trials: at most {search.MAX_TRIALS} trials per job (MAX_TRIALS, "
                                f"benchmarks/search.py), got {trials:,}")
    assert run.main(["--suite", path, "--dry-run", "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{path}: hparams.trials: at most" in line


def test_a_search_at_the_bound_is_still_answered_promptly(tmp_path, capsys):
    assert suites.load(_suite(tmp_path, f'hparams = {{ trials = {search.MAX_TRIALS} }}')).search.trials == 200
    start = time.perf_counter()
    assert run.main(["--suite", "digits-dg-search", "--trials", str(search.MAX_TRIALS), "--dry-run",
                     "--out", str(tmp_path / "out")]) == 0
    seconds = time.perf_counter() - start
    assert "search: 200 trials (seed 0) of 10 jobs: 1,602 runs" in capsys.readouterr().out
    assert seconds < 60  # 4-10 s on 2 cores for its 6,408 jobs (every method at 1,000 trials took 26 s)


# --- 2. a partial table exits PARTIAL, naming what it lacks ------------------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, Path]:
    """A finished sweep of two zero-shot jobs (photo and sketch held out): its suite file and --out."""
    directory = tmp_path_factory.mktemp("finished")
    suite, out = _suite(directory, 'targets = ["photo", "sketch"]'), directory / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    return suite, out


def _copy(finished, tmp_path) -> tuple[str, Path, dict[str, Path]]:
    """A copy of the finished sweep to damage: its suite, --out and record files by held-out domain."""
    suite, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    files = {json.loads(p.read_text())["job"]["targets"][0]: p for p in (copy / "records").glob("*.json")}
    return suite, copy, files


def _partial_line(err: str) -> str:
    (line,) = [line for line in err.splitlines() if "partial:" in line]
    return line


def test_a_complete_report_exits_0_and_says_nothing_of_partial(finished, capsys):
    suite, out = finished
    assert run.main(["--suite", suite, "--out", str(out), "--report"]) == 0
    captured = capsys.readouterr()
    assert "partial" not in captured.err and "no record yet" not in captured.out
    assert json.loads((out / "summary.json").read_text())["missing"] == 0


def test_a_deleted_record_exits_partial_through_the_cli_naming_the_file(finished, tmp_path):
    suite, out, files = _copy(finished, tmp_path)
    files["photo"].unlink()
    result, _ = _cli("--suite", suite, "--out", str(out), "--report", "--quiet")
    assert result.returncode == run.PARTIAL == 3
    line = _partial_line(result.stderr)
    assert line.startswith("benchmarks.run: partial: 1 of 2 jobs have no usable record under ")
    assert f"{files['photo'].name} (missing)" in line and "(exit code 3)" in line
    assert "1 of 2 jobs have no record yet" in result.stdout  # the table says so too
    assert "partial: 1 of 2 jobs" in json.loads((out / "summary.json").read_text())["partial"]


def test_a_truncated_record_exits_partial_naming_the_file_as_unreadable(finished, tmp_path, capsys):
    suite, out, files = _copy(finished, tmp_path)
    files["sketch"].write_text(files["sketch"].read_text()[:200])
    assert run.main(["--suite", suite, "--out", str(out), "--report"]) == run.PARTIAL
    err = capsys.readouterr().err
    assert f"{files['sketch']} is unreadable" in err  # the warning, with the JSON error
    assert f"{files['sketch'].name} (unreadable)" in _partial_line(err)


def test_another_jobs_record_under_a_jobs_name_is_damaged_not_counted(finished, tmp_path, capsys):
    suite, out, files = _copy(finished, tmp_path)
    shutil.copy(files["photo"], files["sketch"])  # sketch's cells would show photo's numbers
    assert run.main(["--suite", suite, "--out", str(out), "--report", "--quiet"]) == run.PARTIAL
    photo_id = files["photo"].stem
    assert f"{files['sketch'].name} (the record of job {photo_id})" in _partial_line(capsys.readouterr().err)
    assert json.loads((out / "summary.json").read_text())["ok"] == 1


def test_another_suites_record_is_named_in_a_warning_and_not_counted(finished, tmp_path, capsys):
    suite, out, files = _copy(finished, tmp_path)
    record = json.loads(files["photo"].read_text())
    assert record["suite"] == "tiny"  # each record says which suite wrote it
    planted = out / "records" / "digits-dg.multi-source.to-typeset.zero-shot.seed0.0000beef.json"
    planted.write_text(json.dumps({**record, "suite": "other", "job": {**record["job"], "id": planted.stem}}))
    assert run.main(["--suite", suite, "--out", str(out), "--report"]) == 0  # its own jobs are all there
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "not jobs of this run" in line]
    assert f"1 record(s) under {out / 'records'} are not jobs of this run of suite 'tiny'" in line
    assert f"{planted.name} (suite 'other')" in line
    assert json.loads((out / "summary.json").read_text()) | {"seconds": 0} == {
        "suite": "tiny", "jobs": 2, "ok": 2, "failed": 0, "missing": 0, "seconds": 0}


def test_a_report_of_fewer_targets_names_the_records_it_leaves_out_and_is_complete(finished, tmp_path, capsys):
    suite, out, files = _copy(finished, tmp_path)
    assert run.main(["--suite", suite, "--out", str(out), "--report", "--targets", "photo"]) == 0
    err = capsys.readouterr().err
    assert f"{files['sketch'].name} (suite 'tiny' under other settings or flags)" in err and "partial" not in err


def test_a_search_missing_a_leave_one_out_record_exits_partial(tmp_path, capsys):
    """zero-shot has no search space: trial 0 and its three leave-one-domain-out runs."""
    suite, out = _suite(tmp_path, 'targets = ["photo"]\nhparams = { trials = 2 }'), tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == 0
    (gone,) = (out / "records").glob("*.to-sketch.loo-photo.*.json")
    gone.unlink()
    capsys.readouterr()
    assert run.main(["--suite", suite, "--out", str(out), "--report", "--quiet"]) == run.PARTIAL
    captured = capsys.readouterr()
    assert "Partial: 1 of the jobs this selection reads" in captured.out
    assert f"partial: 1 of 4 jobs have no usable record under {out / 'records'}" in _partial_line(captured.err)
    assert f"{gone.name} (missing)" in captured.err


def test_a_finished_sweep_whose_record_was_lost_exits_partial(tmp_path, capsys, monkeypatch):
    """A record its job wrote that this process cannot see (storage another node wrote to, a disk that lost it)."""
    write = records.RecordStore.write

    def lose_photo(self, job, record):
        path = write(self, job, record)
        if job.targets == ("photo",):
            path.unlink()
        return path

    monkeypatch.setattr(records.RecordStore, "write", lose_photo)
    suite, out = _suite(tmp_path, 'targets = ["photo", "sketch"]'), tmp_path / "out"
    assert run.main(["--suite", suite, "--out", str(out), "--quiet"]) == run.PARTIAL
    assert ".to-photo.zero-shot.seed0." in _partial_line(capsys.readouterr().err)


# --- 3. --threads is clamped to the usable cores ------------------------------------------------------------------

def test_threads_above_the_usable_cores_are_clamped_with_a_note_and_reach_torch_and_the_launcher(
        tmp_path, capsys, monkeypatch):
    import torch

    built = []

    def build_launcher(*args, **kwargs):
        built.append(run_build_launcher(*args, **kwargs))
        return built[-1]

    run_build_launcher = orchestration.build_launcher
    monkeypatch.setattr(orchestration, "build_launcher", build_launcher)
    cores, before = usable_cores(), torch.get_num_threads()
    try:
        assert run.main(["--suite", _suite(tmp_path, 'targets = ["photo"]'), "--threads", "9999", "--launcher",
                         "processes", "--dry-run", "--quiet"]) == 0
        assert torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)
    (note,) = capsys.readouterr().err.strip().splitlines()
    assert note == (f"benchmarks.run: note: --threads 9999 clamped to {cores}, the cores this process may "
                    "use: more threads than cores only compete for them")
    assert built[-1].threads == cores  # each worker's torch threads


def test_threads_within_the_cores_pass_without_a_note(tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    try:
        assert run.main(["--suite", _suite(tmp_path, 'targets = ["photo"]'), "--threads", "1", "--dry-run",
                         "--quiet"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().err == ""
    assert run.main(["--suite", _suite(tmp_path, 'targets = ["photo"]'), "--threads", "0", "--dry-run"]) == 2
    assert "--threads must be an integer >= 1, got 0" in capsys.readouterr().err
