"""Model selection over a search's records, DomainBed's three methods (collect_results; model_selection.py:54-167).

Each method gives every trial of a cell (method, held-out domain, seed) a validation accuracy and a test accuracy,
and the cell takes the test accuracy of the trial with the best validation accuracy (the lower trial of equal
ones, so trial 0, the preset, wins a tie):

  training-domain       the source domains' val splits, at the epoch the run kept by them (the run's own result:
                        every loop keeps its epoch by the same split; DomainBed's IIDAccuracySelectionMethod)
  leave-one-domain-out  each source v held out in turn: the trial's run trained without v, scored on v; the mean
                        over v, per epoch, and the epoch and trial with the best (LeaveOneOutSelectionMethod)
  oracle                the held-out domain's own val split at the last epoch, no early stopping
                        (OracleSelectionMethod): it looks at the target, so it is an upper bound, not a DG result

A run's epochs are its last watched loop's (promptgen.toolkit.best_epoch): the stage whose model predicts. A run
with no watched loop (zero-shot, a method training in a loop of its own) has one checkpoint, its final model.
The records come from benchmarks.search's jobs; a job without a finished record is left out and said so.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Sequence

from benchmarks.records import Job
from benchmarks.search import LOO, SELECTION_METHODS
from benchmarks.tables import Table, accuracy_table



def _last_loop(record: dict) -> list[dict] | None:
    loops = (record.get("checkpoints") or {}).get("loops") or []
    return loops[-1]["checkpoints"] if loops and loops[-1]["checkpoints"] else None


def _final(record: dict, val: float) -> dict:
    return {"val": val, "test": dict(record["test_accuracy"]), "final": True}


class SelectionMethod:
    """One of DomainBed's selection methods (model_selection.py's SelectionMethod): how a trial's record is scored.
    ``score`` gives {"val", "test": {target: accuracy}, "final": whether it is the final model's} or None when the
    record cannot be scored (missing leave-one-domain-out runs)."""

    name = ""
    description = ""
    reads_held_out_runs = False  # whether it needs the leave-one-domain-out runs of a trial

    def score(self, record: dict, held_out: dict[str, dict]) -> dict | None:
        raise NotImplementedError


class TrainingDomain(SelectionMethod):
    """IIDAccuracySelectionMethod: the source domains' val splits, at the epoch the run kept by them."""

    name = "training-domain"
    description = "training-domain validation (the source domains' val splits; SPG's and DomainBed's default)"

    def score(self, record, held_out):
        return _final(record, record["val_accuracy"])


class LeaveOneDomainOut(SelectionMethod):
    """LeaveOneOutSelectionMethod: each source v held out in turn, the trial's run trained without v scored on v;
    the mean over v, per epoch, and the epoch with the best. ``held_out``: those runs' records by v."""

    name = LOO
    description = ("leave-one-domain-out validation (each source domain held out in turn, trained without it and "
                   "scored on it)")
    reads_held_out_runs = True

    def score(self, record, held_out):
        sources = record["job"]["sources"]
        if any(source not in held_out for source in sources):
            return None
        main, held = _last_loop(record), {source: _last_loop(held_out[source]) for source in sources}
        epochs = [c["epoch"] for c in main] if main else None
        if main is None or any(h is None or [c["epoch"] for c in h] != epochs for h in held.values()):
            # no epochs to compare (or runs whose epochs differ): their final models
            return _final(record, statistics.mean(held_out[v]["test_accuracy"][v] for v in sources))
        best = None
        for index, checkpoint in enumerate(main):
            if not checkpoint.get("candidate", True):
                continue
            val = statistics.mean(held[v][index][f"test/{v}"] for v in sources)
            if best is None or val > best["val"]:
                best = {"val": val, "test": {d: checkpoint[f"test/{d}"] for d in record["job"]["targets"]},
                        "final": False}
        return best


class Oracle(SelectionMethod):
    """OracleSelectionMethod: the held-out domain's own val split at the last epoch, no early stopping."""

    name = "oracle"
    description = ("test-domain validation, the ORACLE (it selects by the held-out domain's val split at the last "
                   "epoch, not by its test split, and reports the selected trial's test accuracy: the per-trial "
                   "table shows both): an upper bound, not a domain-generalization result")

    def score(self, record, held_out):
        targets = record["job"]["targets"]
        last = _last_loop(record)
        if last is None:
            target_val = record["checkpoints"]["target_val"]
            return _final(record, statistics.mean(target_val[d] for d in targets))
        checkpoint = last[-1]
        return {"val": statistics.mean(checkpoint[f"target-val/{d}"] for d in targets),
                "test": {d: checkpoint[f"test/{d}"] for d in targets}, "final": False}


METHODS: dict[str, SelectionMethod] = {method.name: method for method in (TrainingDomain(), LeaveOneDomainOut(),
                                                                           Oracle())}
assert tuple(METHODS) == SELECTION_METHODS  # benchmarks.search checks the names a suite gives against these
DESCRIPTIONS = {name: method.description for name, method in METHODS.items()}


def _columns(record: dict, test: dict[str, float], final: bool) -> dict[str, tuple[float, list[dict]]]:
    """{column: (accuracy, parts)} as the suite's table reads a record (benchmarks.sweep.table_rows): a column per
    target; single-source, a column per source averaging its targets. Per-image predictions only for the final
    model's accuracy (another epoch's has none: no paired test there)."""
    job = record["job"]

    def part(domain: str, weight: float) -> dict:
        predictions = (record.get("test_predictions") or {}).get(domain) if final else None
        images = predictions["images"] if predictions else (record.get("sizes") or {}).get(f"test/{domain}")
        return {"key": domain, "accuracy": test[domain], "images": images, "weight": weight,
                "predictions": predictions}

    if job["protocol"] == "single-source":
        return {job["sources"][0]: (statistics.mean(test.values()), [part(d, 1 / len(test)) for d in test])}
    return {domain: (value, [part(domain, 1.0)]) for domain, value in test.items()}


def select(method: str, records: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """The table rows (what benchmarks.tables.accuracy_table reads) of selection ``method`` over a search's
    records, and the choices: per cell, the trial taken, its validation and test accuracy, the trials seen, the
    trials ``tied`` with it (the same validation accuracy: the lower one wins; [] without a tie) and ``scores``,
    every trial's validation (-inf: none) and test accuracy, in trial order (benchmarks.trials shows them)."""
    rows, choices = [], []
    for (name, column, seed), found in scored_cells(method, records).items():
        best = max(found, key=lambda c: (c["val"], -c["trial"]))
        tied = [c["trial"] for c in found if c["val"] == best["val"]]
        rows.append({"method": name, "target": column, "seed": seed, "test_accuracy": best["test"],
                     "parts": best["parts"]})
        choices.append({"method": name, "column": column, "seed": seed, "trial": best["trial"], "val": best["val"],
                        "test": best["test"], "trials": [c["trial"] for c in found],
                        "tied": tied if len(tied) > 1 else [],
                        "scores": [{"trial": c["trial"], "val": c["val"], "test": c["test"]} for c in found]})
    return rows, choices


def scored_cells(method: str, records: Sequence[dict]) -> dict[tuple, list[dict]]:
    """{(method, column, seed): its trials in trial order, each {trial, val, test, parts}}: ``val`` the validation
    accuracy selection ``method`` reads (-inf where a run has none, so that it never wins), ``test`` the column's
    test accuracy at the same checkpoint."""
    ok = [r for r in records if r.get("status") == "ok" and r["job"].get("trial") is not None]
    loo: dict[tuple, dict[str, dict]] = {}
    for record in ok:
        job = record["job"]
        if job.get("loo_for"):
            loo.setdefault(_cell_key(job, job["loo_for"].split("+")), {})[job["targets"][0]] = record
    cells: dict[tuple, list[dict]] = {}
    for record in ok:
        job = record["job"]
        if job.get("loo_for"):
            continue
        scored = METHODS[method].score(record, loo.get(_cell_key(job, job["targets"]), {}))
        if scored is None:
            continue
        val = scored["val"] if not math.isnan(scored["val"]) else -math.inf
        for column, (value, parts) in _columns(record, scored["test"], scored["final"]).items():
            cells.setdefault((job["method"], column, job["seed"]), []).append(
                {"trial": job["trial"], "val": val, "test": value, "parts": parts})
    return {key: sorted(found, key=lambda c: c["trial"]) for key, found in cells.items()}


def _cell_key(job: dict, targets) -> tuple:
    return (job["dataset"], job["method"], job["seed"], job["trial"], tuple(targets))


def missing(method: str, jobs: Sequence[Job], records: Sequence[dict]) -> list[str]:
    """The jobs selection ``method`` reads that have no finished record (their ids)."""
    finished = {r["job"]["id"] for r in records if r.get("status") == "ok"}
    needed = [job for job in jobs if job.trial is not None and (METHODS[method].reads_held_out_runs or not job.loo_for)]
    return [job.id for job in needed if job.id not in finished]


def tables(jobs: Sequence[Job], records: Sequence[dict], columns: Sequence[str], methods: Sequence[str],
           selection: Sequence[str] = SELECTION_METHODS) -> dict[str, tuple[Table, list[dict]]]:
    """{selection method: (its table, its choices)} in ``selection``'s order."""
    out = {}
    for name in selection:
        rows, choices = select(name, records)
        out[name] = (accuracy_table(rows, targets=list(columns), methods=list(methods)), choices)
    return out


def applied(names: Sequence[str], jobs: Sequence[Job]) -> list[str]:
    """The selection methods of ``names`` that a search's ``jobs`` can apply, in order: leave-one-domain-out only
    where they include its runs (left out, with a note, on too few sources)."""
    return [name for name in names if not METHODS[name].reads_held_out_runs or any(job.loo_for for job in jobs)]


def choices_text(choices: Sequence[dict], trials: int) -> str:
    """One line per method: which trial each cell took (how often trial 0, the preset, won)."""
    lines = []
    for method in dict.fromkeys(c["method"] for c in choices):
        mine = [c for c in choices if c["method"] == method]
        taken = ", ".join(f"{c['column']}/seed{c['seed']}: trial {c['trial']}" for c in mine)
        short = [c for c in mine if len(c["trials"]) < min(trials, max(len(x["trials"]) for x in mine))]
        lines.append(f"- {method}: {taken}" + (f" ({len(short)} cells chose among fewer trials: missing records)"
                                                if short else ""))
    return "\n".join(lines)


def best_so_far(records: Sequence[dict], method: str, trials: int) -> dict[str, list[float]]:
    """Per method: for k = 1..trials, the test accuracy (%) averaged over the cells of the trial ``method`` selects
    among trials 0..k-1 (how a search's result grows with its trials)."""
    curves: dict[str, list[float]] = {}
    for k in range(1, trials + 1):
        first = [r for r in records if r["job"].get("trial") is not None and r["job"]["trial"] < k]
        rows, _ = select(method, first)
        for name in dict.fromkeys(row["method"] for row in rows):
            values = [100 * row["test_accuracy"] for row in rows if row["method"] == name]
            curves.setdefault(name, [math.nan] * (k - 1)).append(statistics.mean(values))
    return curves


def plot(records: Sequence[dict], trials: int, selection: Sequence[str], path: Path, heading: str) -> Path | None:
    """One panel per selection method: the test accuracy of the selected trial against the number of trials
    searched, a line per method (dots: each trial's own accuracy at its kept epoch)."""
    if not any(r.get("status") == "ok" for r in records):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(selection), figsize=(3.6 * len(selection) + 1.6, 3.4), squeeze=False,
                                sharey=True)
    own: dict[str, dict[int, list[float]]] = {}
    for record in records:
        job = record["job"]
        if record.get("status") == "ok" and job.get("trial") is not None and not job.get("loo_for"):
            value = statistics.mean(record["test_accuracy"].values())
            own.setdefault(job["method"], {}).setdefault(job["trial"], []).append(100 * value)
    for panel, name in zip(axes[0], selection):
        for index, (method, values) in enumerate(best_so_far(records, name, trials).items()):
            color = f"C{index}"
            panel.plot(range(1, len(values) + 1), values, marker="o", markersize=3, color=color, label=method)
            dots = own.get(method, {})
            panel.scatter([t + 1 for t in dots], [statistics.mean(v) for v in dots.values()], s=10, color=color,
                          alpha=0.35)
        panel.set_title(name, fontsize=9)
        panel.set_xticks(range(1, trials + 1))
        panel.set_xlabel("trials searched")
        panel.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%) of the selected trial")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.suptitle(heading, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_tables(suite, jobs: Sequence[Job], records: Sequence[dict], backbone: str, out: Path) -> str:
    """A search's outputs: a table per selection method (markdown, returned; ``table.<method>.csv``) with its
    per-trial table under it (``trials.<method>.csv``, benchmarks.trials), the first method's as table.csv/png, the
    choices (``selection.json``) and the accuracy-against-trials plot (``search.png``). A selection whose jobs lack
    records says which and how many."""
    from benchmarks import sweep, trials
    from promptgen.files import write_json, write_text

    columns, methods = sweep.table_columns(suite, [job for job in jobs if not job.loo_for])
    names = applied(suite.search.selection, jobs)
    results = tables(jobs, records, columns, methods, names)
    count = suite.search.trials
    held = "source" if suite.protocol == "single-source" else "held out"
    texts, chosen = [], {}
    for index, (name, (table, choices)) in enumerate(results.items()):
        write_text(out / f"table.{name}.csv", table.csv())
        if index == 0:
            write_text(out / "table.csv", table.csv())
            if table.cells:
                sweep.plot(table, out / "table.png", f"{suite.label}: test accuracy (%), selected by {name}")
        lacking = missing(name, jobs, records)
        heading = (f"Selected by {DESCRIPTIONS[name]}: {sweep.title(suite, suite.seeds, backbone)}; the best of "
                   f"{sweep.counted(count, 'trial')} (search seed {suite.search.seed})")
        text = table.markdown(heading) + "\n\nTrials taken:\n" + (choices_text(choices, count) or "- none yet")
        every = trials.rows(choices, records, methods)
        write_text(out / f"trials.{name}.csv", trials.csv_text(every))
        if every:
            text += "\n\n" + trials.markdown(name, every, held, f"trials.{name}.csv")
        if lacking:
            text += (f"\n\nPartial: {len(lacking)} of the jobs this selection reads have no finished record yet "
                     f"(e.g. {lacking[0]}); its cells chose among the trials that have one, and a cell with none "
                     f"is '–'.")
        texts.append(text)
        chosen[name] = {"choices": choices, "missing": lacking}
    write_json(out / "selection.json", {"trials": count, "seed": suite.search.seed, "selection": chosen})
    plot(records, count, names, out / "search.png", f"{suite.label}: the selected trial's test accuracy as the "
                                                    f"search grows (dots: each trial's own)")
    return "\n\n".join(texts)
