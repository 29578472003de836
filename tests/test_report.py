"""The report of a sweep: per-run training curves (promptgen.runs.curves: PNG, TensorBoard) and the self-contained
index.html (benchmarks.report), checked on handcrafted run directories, on a real tiny sweep, and in a headless
browser."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmarks import run
from benchmarks.records import RecordStore
from benchmarks.report import write_report
from promptgen.runs import rundir
from promptgen.runs.curves import curve_sets, plot_curves, write_tensorboard
from promptgen.errors import PromptgenError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NAN = float("nan")


def _run_dir(path: Path) -> Path:
    """A run directory as two methods would leave it: a top-level history split by "path", with a NaN (as Python's
    json writes it) and a null (as promptgen's strict JSON writes one); nested histories in metrics.json's fit."""
    path.mkdir(parents=True)
    history = [{"path": "positive", "epoch": 0, "loss_g": 2.0, "loss_d": 1.0, "val_accuracy": 0.5},
               {"path": "positive", "epoch": 1, "loss_g": NAN, "loss_d": 0.8, "val_accuracy": 0.6},
               {"path": "negative", "epoch": 0, "loss_g": 3.0, "loss_d": None, "val_accuracy": 0.4, "note": "x"}]
    (path / "history.json").write_text(json.dumps(history))
    fit = {"best_epoch": 1,
           "stage1": {"photo": {"val_accuracy": 0.9, "history": [
                          {"epoch": 0, "train_loss": 1.5, "val_accuracy": 0.7, "lr": 1e-5},
                          {"epoch": 1, "train_loss": 1.1, "val_accuracy": 0.8, "lr": 2e-3}]},
                      "negative": {"sketch": {"history": [{"epoch": 0, "train_loss": 0.9, "ok": True}]}}},
           "folds": [{"history": [{"train_loss": 4.0}, {"train_loss": 3.0}]}]}
    (path / "metrics.json").write_text(json.dumps({"test_accuracy": {"photo": 0.9}, "fit": fit}))
    return path


def test_curve_sets_finds_every_history_by_its_key_path_and_skips_non_numbers(tmp_path):
    sets = curve_sets(_run_dir(tmp_path / "run"))
    assert list(sets) == ["fit / positive", "fit / negative", "stage1 / photo", "stage1 / negative / sketch",
                          "folds / 0"]
    assert sets["fit / positive"] == [{"epoch": 0, "loss_g": 2.0, "loss_d": 1.0, "val_accuracy": 0.5},
                                      {"epoch": 1, "loss_d": 0.8, "val_accuracy": 0.6}]  # NaN skipped
    assert sets["fit / negative"] == [{"epoch": 0, "loss_g": 3.0, "val_accuracy": 0.4}]  # null and text skipped
    assert [row["lr"] for row in sets["stage1 / photo"]] == [1e-5, 2e-3]
    assert sets["stage1 / negative / sketch"] == [{"epoch": 0, "train_loss": 0.9}]  # a bool is not a series
    assert sets["folds / 0"] == [{"epoch": 0, "train_loss": 4.0}, {"epoch": 1, "train_loss": 3.0}]  # no epoch key


@pytest.mark.slow
def test_plot_curves_returns_none_without_history_and_writes_a_png_otherwise(tmp_path):
    zero_shot = tmp_path / "zero-shot"
    zero_shot.mkdir()
    (zero_shot / "metrics.json").write_text(json.dumps({"fit": {}}))
    assert curve_sets(zero_shot) == {} and plot_curves(zero_shot) is None
    assert not (zero_shot / "curves.png").exists()

    import matplotlib.image

    trained = _run_dir(tmp_path / "trained")
    path = plot_curves(trained)
    assert path == trained / "curves.png" and path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 800  # five curve sets: one row each, three panels
    assert plot_curves(trained, tmp_path / "elsewhere.png") == tmp_path / "elsewhere.png"


def test_write_tensorboard_writes_the_same_series(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = write_tensorboard(_run_dir(tmp_path / "run"), tmp_path / "tb")
    events = EventAccumulator(str(log_dir))
    events.Reload()
    scalars = {tag: [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)]
               for tag in events.Tags()["scalars"]}
    assert scalars["fit/positive/loss_g"] == [(0, 2.0)]  # the NaN at epoch 1 skipped
    assert scalars["fit/positive/loss_d"] == [(0, 1.0), (1, 0.8)]
    assert scalars["stage1/photo/train_loss"] == [(0, 1.5), (1, 1.1)]
    assert scalars["stage1/negative/sketch/train_loss"] == [(0, 0.9)]
    assert len(scalars) == 3 + 2 + 3 + 1 + 1  # every numeric key of every set
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_tensorboard(empty, tmp_path / "tb-empty") is None


def test_write_tensorboard_says_what_to_install_when_tensorboard_is_missing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # what an import without tensorboard does
    with pytest.raises(PromptgenError, match="pip install tensorboard"):
        write_tensorboard(_run_dir(tmp_path / "run"), tmp_path / "tb")


class Page(HTMLParser):
    """What the tests read off index.html: table cells, image sources, link targets, the title."""

    def __init__(self, text: str):
        super().__init__()
        self.cells, self.images, self.links, self.title = [], [], [], ""
        self._in = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("td", "th", "title"):
            self._in = tag
            if tag != "title":
                self.cells.append("")
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in:
            self.cells[-1] += data


def test_a_perf_suite_output_gets_a_page_of_tables_only(tmp_path):
    (tmp_path / "records").mkdir()
    (tmp_path / "records" / "perf.json").write_text(json.dumps({"settings": {}, "rows": []}))
    (tmp_path / "summary.json").write_text(json.dumps({"suite": "perf <fast>", "rows": 1}))
    (tmp_path / "table.md").write_text("perf: speed-ups\n\n| measurement | ratio |\n|---|---:|\n"
                                       "| cache | **2.00x** |\n")
    page = Page((write_report(tmp_path)).read_text())
    assert page.title == "perf <fast>" and "&lt;fast&gt;" in (tmp_path / "index.html").read_text()
    assert page.cells == ["measurement", "ratio", "cache", "2.00x"] and page.images == [] and page.links == []


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, private_cache_dir):
    """A real sweep through the CLI, as small as it gets: zero-shot and 2 epochs of CoOp, one target, one seed,
    10 images per class and domain. Run once for the tests below."""
    out = tmp_path_factory.mktemp("report") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = run.main(["--suite", "default", "--methods", "zero-shot", "coop", "--targets", "photo", "--seeds", "0",
                         "--set", "coop.epochs=2", "--set", "digits-dg.per_class=10", "--out", str(out),
                         "--cache-dir", str(private_cache_dir), "--log", "tensorboard", "--quiet"])
    assert code == 0, printed.getvalue()
    return out, printed.getvalue()


@pytest.mark.slow
def test_a_sweep_writes_an_index_html_with_its_tables_plots_curves_and_jobs(sweep):
    out, printed = sweep
    assert f"wrote {out}/table.md, table.csv, table.png, pairs.csv, index.html and records/" in printed
    assert "<h2>pairs.md</h2>" in (out / "index.html").read_text(encoding="utf-8")  # coop against zero-shot
    page = Page((out / "index.html").read_text(encoding="utf-8"))
    assert page.title == "default"
    assert {"zero-shot", "coop"} <= set(page.cells)
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert all(base64.b64decode(src.split(",", 1)[1])[:8] == PNG_SIGNATURE for src in page.images)
    # table.png (the default suite's average over datasets), table.digits-dg.png (--targets photo leaves
    # digits-traps out) and coop's curves.png (zero-shot has no history; one seed: no spread)
    assert len(page.images) == 3
    records = RecordStore(out).records()
    assert sorted(r["job"]["method"] for r in records) == ["coop", "zero-shot"]
    for record in records:
        run_dir = out / "runs" / record["job"]["id"]
        assert f"runs/{record['job']['id']}/metrics.json" in page.links
        assert (run_dir / "curves.png").is_file() == (record["job"]["method"] == "coop")
        assert record["job"]["id"] in page.cells
    assert all((out / link).is_file() for link in page.links)
    coop = next(r for r in records if r["job"]["method"] == "coop")
    rundir.verify(out / "runs" / coop["job"]["id"])  # curves.png is written before the manifest: part of the run
    assert len(json.loads((out / "runs" / coop["job"]["id"] / "history.json").read_text())) == 2


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("Chromium not installed (apt-get install chromium): the headless-browser check of index.html")


def _browse(tmp_path: Path, *options: str, page: Path) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
               *options, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)


@pytest.mark.slow
def test_a_browser_loads_every_image_of_the_report_and_draws_it(sweep, tmp_path):
    out, _ = sweep
    page = out / "index.html"
    dom = _browse(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page=page).stdout
    body = Page(dom)
    loaded = dom.split('data-images-loaded="')[1].split('"')[0]
    total = dom.split('data-images="')[1].split('"')[0]
    assert loaded == total and int(total) == 3  # the average table, digits-dg's table, coop's curves
    assert {"zero-shot", "coop"} <= set(body.cells) and "<table>" in dom

    import matplotlib.image

    shot = tmp_path / "screenshot.png"
    _browse(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", page=page)
    pixels = matplotlib.image.imread(shot)[..., :3]  # floats in [0, 1]
    assert pixels.shape[:2] == (2000, 1200)
    non_white = (pixels.min(axis=2) < 0.9).mean()
    saturated = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.4).sum()  # the bars and curves, not grey text
    assert non_white > 0.03, f"the page looks blank: {non_white:.1%} non-white pixels"
    assert saturated > 2000, f"no coloured plot on the page: {saturated} saturated pixels"


def _scalars(log_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


@pytest.mark.slow  # needs the module's sweep fixture: a real CLI sweep, about 20 s
def test_a_sweep_with_log_tensorboard_writes_each_runs_curves_as_events(sweep):
    pytest.importorskip("tensorboard")
    out, _ = sweep
    (coop,) = [d for d in (out / "runs").iterdir() if "coop" in d.name]
    history = json.loads((coop / "history.json").read_text())
    scalars = _scalars(coop / "tensorboard")
    assert [value for _, value in scalars["fit/train_loss"]] == pytest.approx([row["train_loss"] for row in history])
    (zero_shot,) = [d for d in (out / "runs").iterdir() if "zero-shot" in d.name]
    assert not (zero_shot / "tensorboard").exists()  # nothing per epoch to log
    rundir.verify(coop)  # the events sit beside the run's files without breaking its manifest


@pytest.mark.slow
def test_promptgen_train_log_tensorboard(tmp_path, private_cache_dir, capsys):
    pytest.importorskip("tensorboard")
    from promptgen import cli

    out = tmp_path / "run"
    assert cli.main(["train", "--method", "coop", "--target", "photo", "--set", "coop.epochs=2",
                     "--set", "digits-dg.per_class=10", "--out", str(out), "--cache-dir", str(private_cache_dir),
                     "--log", "tensorboard", "--quiet"]) == 0
    assert f"tensorboard --logdir {out / 'tensorboard'}" in capsys.readouterr().out
    assert len(_scalars(out / "tensorboard")["fit/val_accuracy"]) == 2
    assert (out / "curves.png").exists()


def test_log_tensorboard_without_tensorboard_fails_before_training(tmp_path, monkeypatch, capsys):
    from promptgen import cli

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert cli.main(["train", "--method", "coop", "--target", "photo", "--out", str(tmp_path / "run"),
                     "--log", "tensorboard"]) == 2
    assert "pip install tensorboard" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
