"""What a suite's run leaves to read: table.md's text, composed from the records, and the files each part writes.

An accuracy sweep's text is its table (a search's: one per selection method), the pairs of methods, the
per-method summary and the notes on generators that missed their labels or ran short, then the optional
stability and domain-gap studies and the jobs that failed or have no record yet; a perf suite's is its
speed-ups and method costs. Each part writes its CSV/markdown/PNG beside table.md as it is composed, so
--report rebuilds them all from the records. The one-page view of these files is benchmarks.report.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks import compare, method_costs, perf, report, selection, stability, sweep
from benchmarks.records import Job
from benchmarks.suites import Suite
from benchmarks.tables import average_over_datasets
from promptgen.files import write_json, write_text


def preset_runs(records: list[dict]) -> list[dict]:
    """The runs the per-method summaries read: a search's trial 0 (the preset), so one run per cell as a sweep's."""
    return [r for r in records if r["job"].get("trial") in (None, 0) and not r["job"].get("loo_for")]


def accuracy_text(suite: Suite, jobs: list[Job], records: list[dict], out: Path) -> tuple[str, list]:
    """The tables, the pairs and the per-method summary with its notes, written under ``out``; with the pairs
    (for --compare's answer)."""
    fingerprints = sorted({r["fingerprint"] for r in records if r.get("status") == "ok"})
    backbone = ", ".join(fingerprints) or "-"
    text = selection.write_tables(suite, jobs, records, backbone, out) if suite.search else \
        accuracy_tables(suite, jobs, records, backbone, out)
    pairs, pairs_text = compare.write(suite, jobs, records, out)
    if pairs_text:
        text += "\n\n" + pairs_text
    runs = preset_runs(records)
    methods = sweep.method_table(jobs, runs)
    write_text(out / "methods.md", methods + "\n")
    sweep.plot_seed_spread(runs, out / "stability.png", f"{suite.label}: one dot per seed")
    text += ("\n\nPer method: seed stability, stage II time, how many runs kept their loop's last epoch, how far the "
             "generated prompts lie from their labels (× a label entry's RMS size), and generator quality; the last "
             "six columns are mean ± std over the method's jobs, every target and seed (docs/benchmarks.md)"
             + ("; a search's: over its trial 0 (the preset)" if suite.search else "") + "\n\n" + methods)
    off = sweep.off_their_labels(jobs, runs)
    if off:
        text += ("\n\nGenerators that did not reach their labels: " + ", ".join(off) + ": their generated prompts lie "
                 "farther from the nearest stage I label than a label entry's own size (source val, mean over the "
                 "runs), so these rows show an untrained generator rather than what the method can do; `promptgen "
                 "inspect RUN_DIR` says where the accuracy goes (docs/spg-study.md)")
    short = sweep.under_trained(jobs, runs)
    if short:
        text += ("\n\nUnder-trained by this schedule: " + ", ".join(short) + " kept the last epoch of their loop "
                 "(source val still at its best when it ended); a longer schedule may change their rows, so these "
                 "rows do not say how the method does")
    return text, pairs


def accuracy_tables(suite: Suite, jobs: list, records: list, backbone: str, out: Path) -> str:
    """The DomainBed-style table (markdown, table.csv, table.png); a multi-dataset suite's table per dataset
    (table.<dataset>.csv/png) after the one averaged over datasets (table.csv/png)."""
    plot_title = f"{suite.label}: test accuracy (%), {sweep.seeds_text(suite.seeds)}, 95% intervals"
    if not suite.datasets:
        table = sweep.suite_table(suite, jobs, records)
        write_text(out / "table.csv", table.csv())
        if table.cells:
            sweep.plot(table, out / "table.png", plot_title)
        return table.markdown(sweep.title(suite, suite.seeds, backbone))
    texts, rows = [], {}
    for part in suite.parts():
        mine = [job for job in jobs if job.dataset == part.dataset]
        if not mine:  # --targets left this dataset out
            continue
        ok = [record for record in records if record["job"]["dataset"] == part.dataset]
        table = sweep.suite_table(part, mine, ok)
        rows[part.dataset] = sweep.table_rows(ok)
        write_text(out / f"table.{part.dataset}.csv", table.csv())
        if table.cells:
            sweep.plot(table, out / f"table.{part.dataset}.png",
                       f"{suite.label}, {part.dataset}: test accuracy (%), {sweep.seeds_text(suite.seeds)}, "
                       f"95% intervals")
        texts.append(table.markdown(sweep.title(part, suite.seeds, backbone)))
    average = average_over_datasets(rows, list(dict.fromkeys(job.method for job in jobs)))
    write_text(out / "table.csv", average.csv())
    if average.cells:
        sweep.plot(average, out / "table.png", f"{suite.label}: average test accuracy (%) per dataset")
    heading = (f"Average test accuracy (%) over each dataset's held-out domains (column = dataset); "
               f"{sweep.seeds_text(suite.seeds)}; backbone {backbone}; best in bold")
    return "\n\n".join([average.markdown(heading), *texts])


def stability_text(rows: list[dict], out: Path) -> str:
    """The stability study's section (benchmarks.stability), its rows written as JSON, CSV and markdown."""
    write_json(out / "records" / "stability.json", {"draws": stability.DRAWS, "rows": rows})
    write_text(out / "stability.csv", stability.csv(rows))
    write_text(out / "stability.md", stability.table(rows) + "\n")
    return ("\n\nStability of the generated prompts: across seeds and across noise draws of one model "
            "(docs/generators.md)\n\n" + stability.table(rows))


def domain_gap_text(domains: list[str], gaps: dict, out: Path) -> str:
    """The domain-gap section (benchmarks.sweep.domain_gaps' measures), written as markdown and JSON."""
    gap_table = sweep.domain_gap_table(gaps, domains)
    write_text(out / "domain_gap.md", gap_table + "\n")
    write_json(out / "domain_gap.json", gaps)
    return "\n\nDomain gap in image-feature space: FID above the diagonal, KID ×10³ below\n\n" + gap_table


def outcome(suite: Suite, jobs: list[Job], records: list[dict]) -> tuple[str, dict]:
    """The lines on failed jobs and jobs without a record, and the counts summary.json keeps."""
    failed = [r for r in records if r.get("status") == "failed"]
    missing = len(jobs) - len(records)
    text = ""
    if failed:
        text += "\n\nFailed jobs (see their records):\n" + "\n".join(
            f"- {r['job']['id']}: {r['error']}" for r in failed)
    if missing:
        text += f"\n\n{missing} of {len(jobs)} jobs have no record yet (another shard, or not run)."
    return text, {"suite": suite.name, "jobs": len(jobs), "ok": len(records) - len(failed), "failed": len(failed),
                  "missing": missing}


def compare_answer(names: list[str], pairs: list, finished: list[str], suite: Suite, jobs: list) -> str:
    """--compare's answer; after a sweep whose jobs of a method all failed, a line saying so (the exit code is 1)."""
    lacking = [name for name in names if name not in finished]
    if lacking:
        return f"--compare: {lacking[0]} has no finished record: nothing to compare (see the failed jobs)"
    chosen = compare.selected_by(suite, jobs)
    heading = f"suite {suite.label}" + (f" (a search: the trials selected by {chosen})" if chosen else "")
    return compare.answer(pairs, *names, heading)


PERF_COLUMNS = ("measurement,baseline,fast,unit,baseline_rate,fast_rate,ratio,baseline_rss_mb,fast_rss_mb,"
                "max_logit_diff,floor_rate,fast_over_floor,same_predictions,baseline_cuda_mb,fast_cuda_mb")


def perf_text(suite: Suite, model: str, rows: list[dict], out: Path) -> str:
    """The perf suite's speed-ups (benchmarks.perf's rows) as table.csv and a table; empty without rows."""
    lines = [PERF_COLUMNS]
    lines += [",".join(str(r.get(key, "")) for key in PERF_COLUMNS.split(",")) for r in rows]
    write_text(out / "table.csv", "\n".join(lines) + "\n")
    return perf.table(rows, f"{suite.name}: speed-ups measured side by side, backbone {model}; peak RSS of each "
                            f"arm's own process (torch, backbone and dataset included)") if rows else ""


def method_costs_text(suite: Suite, model: str, costs: list[dict], out: Path) -> str:
    """What each method costs (benchmarks.method_costs' rows) as methods.csv and a table."""
    write_text(out / "methods.csv", method_costs.csv(costs))
    return method_costs.table(costs, f"{suite.name}: what each method costs, backbone {model}, every stage cut to "
                                     f"one epoch; peak memory above what the process held before the phase")


def write(out: Path, suite: Suite, text: str, summary: dict, seconds: float) -> None:
    """table.md, summary.json (the page's title under --dataset, the run's seconds) and index.html."""
    write_text(out / "table.md", text + "\n")
    title = {"title": suite.label} if suite.label != suite.name else {}
    write_json(out / "summary.json", {**summary, **title, "seconds": round(seconds, 1)})
    report.write_report(out)
