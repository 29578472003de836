"""An accuracy suite's sweep: run its jobs through a launcher, then derive the table, CSV and plot from the records.

Output directory (``--out``, default results/<suite>/):
  records/<job id>.json   one per job: status, accuracy per target, val accuracy, stage times, versions
  runs/<job id>/          the engine's run directory (prompt labels, generator, metrics)
  table.md, table.csv     rows = methods, columns = domains + avg, mean ± std over seeds
  table.png               bars per domain, error bars = std over seeds
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import attrs

from benchmarks.records import Job
from benchmarks.suites import Suite
from benchmarks.tables import Table, accuracy_table
from promptgen.config import BackboneConfig
from promptgen.engine import RunConfig, run


@attrs.frozen
class JobRunner:
    """Runs one job through the engine (picklable, so it travels to process pools and Ray tasks)."""

    out: Path
    cache_dir: str | None = None
    data_root: str | None = None
    progress: bool = True
    device: str | None = None  # where this runner computes (e.g. cuda:<local rank>); not part of the job's identity

    def __call__(self, job: Job) -> dict:
        config = job.config
        backbone = {**config["backbone"], **({"device": self.device} if self.device else {})}
        run_config = RunConfig(
            dataset=job.dataset, targets=job.targets, sources=job.sources, target_dataset=config["target_dataset"],
            method=job.method, seed=job.seed, preset=config["preset"], backbone=BackboneConfig(**backbone),
            views=config["views"], cache_dir=self.cache_dir, data_root=self.data_root,
            overrides=config["overrides"],
        )
        run_dir = self.out / "runs" / job.id
        metrics = run(run_config, run_dir, progress=self.progress)
        return {**metrics, "run_dir": str(run_dir)}


def table_rows(records: Sequence[dict]) -> list[dict]:
    """One row (method, column, seed, test_accuracy) per table cell contribution of each finished record.

    Multi-source and cross-dataset: a column per target domain. Single-source: a column per source
    domain, the accuracy averaged over the domains it was tested on.
    """
    rows = []
    for record in records:
        if record.get("status") != "ok":
            continue
        job, accuracy = record["job"], record["test_accuracy"]
        base = {"method": job["method"], "seed": job["seed"]}
        if job["protocol"] == "single-source":
            rows.append({**base, "target": job["sources"][0],
                         "test_accuracy": sum(accuracy.values()) / len(accuracy)})
        else:
            rows += [{**base, "target": target, "test_accuracy": value} for target, value in accuracy.items()]
    return rows


def suite_table(suite: Suite, jobs: Sequence[Job], records: Sequence[dict]) -> Table:
    columns = list(dict.fromkeys(
        (job.sources[0] if suite.protocol == "single-source" else target) for job in jobs
        for target in (job.targets if suite.protocol != "single-source" else job.sources[:1])))
    methods = list(dict.fromkeys(job.method for job in jobs))
    return accuracy_table(table_rows(records), targets=columns, methods=methods)


def title(suite: Suite, seeds: Sequence[int], backbone: str) -> str:
    what = {
        "multi-source": f"{suite.dataset}, leave one domain out (column = target domain)",
        "single-source": f"{suite.dataset}, single source (column = source domain; mean over the other domains)",
        "cross-dataset": f"trained on {suite.dataset}, tested on {suite.target_dataset} (column = target domain)",
    }[suite.protocol]
    return (f"Test accuracy (%) — {what}; mean ± std over seeds {','.join(map(str, seeds))}; "
            f"backbone {backbone}; best in bold")


def plot(table: Table, path: Path, heading: str) -> Path:
    """Grouped bars: one group per column (domain, avg), one bar per method, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(table.rows))
    figure, axes = plt.subplots(figsize=(2.6 + 1.3 * len(table.columns), 3.6))
    for index, method in enumerate(table.rows):
        cells = [table.cells.get((method, column)) for column in table.columns]
        axes.bar([c + (index - (len(table.rows) - 1) / 2) * width for c in range(len(table.columns))],
                 [cell.mean if cell else 0 for cell in cells], width, yerr=[cell.std if cell else 0 for cell in cells],
                 capsize=2, label=method)
    means = [cell.mean for cell in table.cells.values()]
    low = max(0.0, min(means) - 10) if means else 0.0
    axes.set_ylim(low, min(100.0, max(means) + 5) if means else 100.0)
    axes.set_xticks(range(len(table.columns)), table.columns)
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(heading, fontsize=9)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
