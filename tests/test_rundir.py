"""promptgen.runs.rundir, the run directory: a run writes into a partial directory beside ``--out`` and moves it into
place whole, with a manifest of every file's size and hash written last; a folder that is not a run is never
replaced, a run only when asked; ``verify`` (and ``load_config``, which verifies first) refuse a directory that is
not one whole run, naming what is missing or changed."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import attrs
import pytest

from promptgen.components.registry import default_registry
from promptgen.components.resolve import Settings, resolved_components
from promptgen.components.run_values import RunValues
from promptgen.errors import ConfigError, RunDirectoryError
from promptgen.runs import curves, engine, rundir
from promptgen.runs.config import RunConfig
from promptgen.runs.engine import evaluate_run, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SMALL = {"digits-dg": {"per_class": 10}}  # overrides of a RunConfig


def _finished(out: Path, files: dict[str, bytes], *, force: bool = False) -> Path:
    """A run directory at ``out`` holding ``files`` (relative path -> bytes), written the way a run writes one."""
    work = rundir.start(out, force=force)
    for name, data in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(data)
    rundir.finish(work, out)
    return out


def _beside(out: Path) -> list[str]:
    """What lies in ``out``'s folder: partial and replaced directories show up here."""
    return sorted(p.name for p in out.parent.iterdir())


# --- start, finish, discard ---------------------------------------------------------------------------------------


def test_a_run_is_written_beside_out_and_moved_into_place_with_a_manifest_of_every_file(tmp_path):
    out = tmp_path / "run"
    work = rundir.start(out)
    assert work.parent == tmp_path and work.name.startswith(f".run{rundir.PARTIAL}{os.getpid()}-")
    assert list(work.iterdir()) == [] and not out.exists()
    (work / "config.json").write_text("{}")
    (work / "prompt_labels").mkdir()
    (work / "prompt_labels" / "photo.safetensors").write_bytes(b"\x00" * 10)
    rundir.finish(work, out)
    assert not work.exists() and _beside(out) == ["run"]
    manifest = json.loads((out / rundir.MANIFEST).read_text())
    assert len(manifest["run_id"]) == 32
    assert manifest["files"] == {
        name: {"bytes": len(data), "blake2b": hashlib.blake2b(data, digest_size=16).hexdigest()}
        for name, data in (("config.json", b"{}"), ("prompt_labels/photo.safetensors", b"\x00" * 10))}
    rundir.verify(out)


def test_start_refuses_a_file_a_folder_of_other_files_and_a_run_unless_forced(tmp_path):
    (tmp_path / "a-file").write_text("mine")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        rundir.start(tmp_path / "a-file")
    with pytest.raises(ConfigError, match="a parent of it is a file"):
        rundir.start(tmp_path / "a-file" / "run")
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.txt").write_text("three years of work")
    for force in (False, True):  # --force replaces a run, never someone's folder
        with pytest.raises(ConfigError, match=r"is not empty and is not a run directory \(it holds thesis.txt\)"):
            rundir.start(thesis, force=force)
    out = _finished(tmp_path / "run", {"config.json": b"{}"})
    with pytest.raises(ConfigError, match="already holds a run; pass --force"):
        rundir.start(out)
    assert (thesis / "thesis.txt").read_text() == "three years of work"
    assert _beside(out) == ["a-file", "run", "thesis"]  # no partial directory left by a refusal
    work = rundir.start(out, force=True)
    rundir.discard(work)
    (tmp_path / "empty").mkdir()  # an empty folder holds nothing to lose
    rundir.discard(rundir.start(tmp_path / "empty"))


def test_finish_replaces_a_previous_run_whole(tmp_path):
    out = _finished(tmp_path / "run", {"old.txt": b"old", "both.txt": b"first"})
    _finished(out, {"new.txt": b"new", "both.txt": b"second"}, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["both.txt", "manifest.json", "new.txt"]
    assert (out / "both.txt").read_bytes() == b"second" and _beside(out) == ["run"]  # no .replaced- left
    rundir.verify(out)


def test_discard_removes_the_partial_and_only_the_folders_made_for_it(tmp_path):
    (tmp_path / "kept").mkdir()
    work = rundir.start(tmp_path / "kept" / "made" / "for-it" / "run")
    (work / "config.json").write_text("{}")
    rundir.discard(work)
    assert not work.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_a_partial_of_a_dead_process_is_removed_and_a_live_ones_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its pid is free now
    dead = tmp_path / f".run{rundir.PARTIAL}{gone.pid}-abc"
    alive = tmp_path / f".run{rundir.PARTIAL}{os.getpid()}-def"  # a run of this process, still writing
    other = tmp_path / f".other{rundir.PARTIAL}{gone.pid}-ghi"  # another --out's: not this run's business
    for folder in (dead, alive, other):
        folder.mkdir()
    work = rundir.start(tmp_path / "run")
    assert not dead.exists() and alive.exists() and other.exists()
    rundir.discard(work)


# --- is_run, verify -----------------------------------------------------------------------------------------------


def test_is_run_takes_a_manifest_or_a_pre_0_2_config_and_nothing_else(tmp_path):
    out = _finished(tmp_path / "run", {"metrics.json": b"{}"})
    assert rundir.is_run(out)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.json").write_text("{}")  # a promptgen before 0.2 wrote no manifest
    assert rundir.is_run(tmp_path / "old")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.json").write_text("{}")
    assert not rundir.is_run(tmp_path / "mine") and not rundir.is_run(tmp_path / "none")


def test_a_changed_or_missing_file_is_named_and_an_added_one_is_not_damage(tmp_path):
    out = _finished(tmp_path / "run", {"config.json": b'{"run": {}}', "generator.safetensors": b"\x01" * 64,
                                       "metrics.json": b"{}"})
    (out / "generator.safetensors").write_bytes(b"\x01" * 63 + b"\x02")  # same size, another run's bytes
    (out / "metrics.json").unlink()
    with pytest.raises(RunDirectoryError, match=r"is not one whole run \(missing: metrics.json; changed since the run "
                                                r"wrote them: generator.safetensors\); train it again"):
        rundir.verify(out)
    out = _finished(tmp_path / "other", {"config.json": b"{}"})
    (out / "events.out.tfevents.1").write_bytes(b"x")  # written beside a finished run (--log tensorboard)
    rundir.verify(out)


def test_a_partial_directory_is_not_taken_for_a_finished_run(tmp_path):
    out = tmp_path / "run"
    work = rundir.start(out)
    (work / "config.json").write_text("{}")
    (work / "metrics.json").write_text("{}")  # everything but the manifest: killed before finish
    with pytest.raises(RunDirectoryError, match="manifest.json is missing"):
        rundir.verify(work)
    assert not out.exists() and not rundir.is_run(out)
    with pytest.raises(RunDirectoryError, match="no such directory"):
        rundir.verify(out)


def test_a_manifest_without_its_files_table_is_refused(tmp_path):
    out = _finished(tmp_path / "run", {"config.json": b"{}"})
    (out / rundir.MANIFEST).write_text('{"run_id": "x"}')
    with pytest.raises(RunDirectoryError, match="manifest.json: expected an object with a 'files' table"):
        rundir.verify(out)


# --- config.json, metrics.json, history.json ----------------------------------------------------------------------

CONFIG = RunConfig(targets="photo", method="spg", views=1, backbone={"device": "cpu"},
                   overrides={**SMALL, "cgan": {"epochs": 2}})


def test_write_config_records_the_run_and_every_components_resolved_options(tmp_path):
    registry = default_registry()
    checked = engine.check(CONFIG, registry)
    settings = Settings.of(CONFIG, checked.preset)
    values = RunValues(seed=3, progress=True, cache_dir=str(tmp_path / "cache"))
    context = SimpleNamespace(registry=registry, settings=settings, run_values=values)
    rundir.write_config(tmp_path, CONFIG, checked, context)
    saved = json.loads((tmp_path / rundir.CONFIG).read_text())
    assert saved["run"] == json.loads(json.dumps(CONFIG.to_dict())) and saved["preset"] == checked.preset == "cpu"
    assert saved["method"] == "spg-cgan" and saved["components"] == [["prompt_learner", "spg-coop"],
                                                                     ["generator", "cgan"]]
    table = resolved_components(registry, checked.every_component, settings, values)
    assert saved["options"] == json.loads(json.dumps(
        {f"{kind}/{name}": options for kind, names in table.items() for name, options in names.items()}))
    assert saved["options"]["generator/cgan"]["epochs"] == 2
    assert "progress" not in saved["options"]["generator/cgan"]  # where it reports, not what it computes


def test_load_config_verifies_the_directory_then_reads_its_run_config(tmp_path):
    out = _finished(tmp_path / "run", {"config.json": json.dumps({"run": CONFIG.to_dict()}).encode()})
    assert rundir.load_config(out) == CONFIG
    (out / "config.json").write_text(json.dumps({"run": attrs.evolve(CONFIG, seed=1).to_dict()}))
    with pytest.raises(RunDirectoryError, match="changed since the run wrote them: config.json"):
        rundir.load_config(out)
    out = _finished(tmp_path / "no-table", {"config.json": b'{"run": 3}'})
    with pytest.raises(RunDirectoryError, match="config.json: expected an object with a 'run' table"):
        rundir.load_config(out)
    out = _finished(tmp_path / "bad-key", {"config.json": b'{"run": {"targets": ["photo"], "epocs": 1}}'})
    with pytest.raises(RunDirectoryError, match=r"bad-key/config.json: .*epocs"):
        rundir.load_config(out)


def test_metrics_reads_each_targets_test_score_and_the_source_val_score():
    config = RunConfig(targets=("photo", "sketch"), method="zero-shot")
    checked = SimpleNamespace(preset="cpu", components=(("prompt_learner", "coop"),))
    samples = {"train": [0] * 6, "val": [0] * 2, "test/photo": [0] * 3, "test/sketch": [0] * 4}
    context = SimpleNamespace(sources=("art",), targets=("photo", "sketch"), classes=("a", "b"),
                              backbone=SimpleNamespace(fingerprint="fp"), seconds={"test": 1.5},
                              samples=samples.__getitem__, eval_splits=("val", "test/photo", "test/sketch"),
                              views=1, epoch="images")
    scores = {"val": 0.5, "test/photo": 0.25, "test/sketch": 0.75}
    metrics = rundir.metrics(config, checked, context, scores, {"best_epoch": 0, "history": []}, None, {"x": "1"})
    assert metrics["test_accuracy"] == {"photo": 0.25, "sketch": 0.75} and metrics["val_accuracy"] == 0.5
    assert metrics["sizes"] == {"train": 6, "val": 2, "test/photo": 3, "test/sketch": 4}
    assert metrics["target_dataset"] == metrics["dataset"] == "digits-dg" and metrics["classes"] == 2
    assert metrics["components"] == {"prompt_learner": "coop"} and metrics["fit"] == {"best_epoch": 0}
    json.dumps(metrics)  # all of it goes into metrics.json


def test_fit_summary_leaves_the_history_out_and_adds_its_last_epoch():
    history = [{"epoch": 0}, {"epoch": 2, "loss": 1.0}, {"epoch": 1}, "not an entry", {"epoch": True}]
    assert rundir.fit_summary({"best_epoch": 1, "history": history}) == {"best_epoch": 1, "last_epoch": 2}
    assert rundir.fit_summary({"best_epoch": 1}) == {"best_epoch": 1}
    assert rundir.fit_summary({"history": "not a list"}) == {}


def test_write_metrics_plots_the_curves_and_a_failing_plot_only_warns(tmp_path, monkeypatch, caplog):
    history = [{"epoch": 0, "train_loss": 1.0, "val_accuracy": 0.5}, {"epoch": 1, "train_loss": 0.5}]
    rundir.write_metrics(tmp_path, {"fit": {}}, history)
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE

    def broken(run_dir):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(curves, "plot_curves", broken)
    (tmp_path / "other").mkdir()
    with caplog.at_level(logging.WARNING, logger="promptgen.runs.rundir"):
        rundir.write_metrics(tmp_path / "other", {"fit": {}}, history)
    assert (tmp_path / "other" / "metrics.json").is_file() and (tmp_path / "other" / "history.json").is_file()
    assert "could not plot the training curves: no fonts" in caplog.text


def test_write_metrics_without_a_history_writes_metrics_json_alone(tmp_path):
    rundir.write_metrics(tmp_path, {"fit": {}, "test_accuracy": {"photo": 0.5}}, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    assert json.loads((tmp_path / "metrics.json").read_text())["test_accuracy"] == {"photo": 0.5}


# --- through a real run -------------------------------------------------------------------------------------------

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
