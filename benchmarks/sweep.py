"""An accuracy suite's sweep: one job through the engine (JobRunner, which benchmarks.orchestration hands to a
launcher), and the table, CSV and plot derived from the records.

Output directory (``--out``, default results/<suite>/):
  records/<job id>.json   one per job: status, accuracy per target, val accuracy, stage times, versions
  runs/<job id>/          the engine's run directory (prompt labels, generator, metrics, curves.png)
  features.json           a launcher whose workers share no disk (benchmarks.remote): the features planned,
                          extracted on the workers and packed for them, and the seconds it took
  table.md, table.csv     rows = methods, columns = domains + avg, mean over seeds with a 95% interval over
                          seeds and test images, and a paired test against each column's best (benchmarks.tables)
  table.png               bars per domain, error bars = those intervals
  pairs.md, pairs.csv     every pair of methods: difference, paired interval, paired test, Holm (benchmarks.compare)
  methods.md              per method: seed stability, stage II time, generator quality (FID, KID, P/R, diversity)
  domain_gap.md           FID and KID between the image features of every pair of domains
  table.<selection>.csv   a search (benchmarks.search): a table per selection method, the first also as table.csv;
  trials.<selection>.csv  every trial of every cell: drawn values, the score selection read, test, ties (.trials);
  selection.json          the trial each cell took; search.png, accuracy against trials (benchmarks.selection)
  index.html              all of the above on one self-contained page (benchmarks.report)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Sequence

import attrs
from tqdm.auto import tqdm

from benchmarks.records import Job
from benchmarks.suites import Suite
from benchmarks.tables import Table, accuracy_table
from promptgen.storage.cache import FeatureCache
from promptgen.runs.curves import TENSORBOARD_DIR, write_tensorboard
from promptgen.toolkit.device import choose_device
from promptgen.components.resolve import Settings
from promptgen.runs.engine import build_dataset, run
from promptgen.components.presets import preset_for_device
from promptgen.toolkit.quality import domain_gap
from promptgen.components.registry import default_registry


@attrs.frozen
class JobRunner:
    """Runs one job through the engine (picklable, so it travels to process pools and Ray tasks).

    The installed plugins are used (a registry does not pickle); ``cache_dir`` and ``device`` say
    where this runner reads and computes (e.g. cuda:<local rank>), not what the job is.
    """

    out: Path
    cache_dir: str | None = None
    progress: bool = True
    device: str | None = None
    log: str | None = None  # "tensorboard": also each run's curves as TensorBoard events

    def __call__(self, job: Job) -> dict:
        config = attrs.evolve(job.config, cache_dir=self.cache_dir)
        if self.device:
            config = attrs.evolve(config, backbone=attrs.evolve(config.backbone, device=self.device))
        run_dir = self.out / "runs" / job.id
        start = time.perf_counter()
        metrics = run(config, run_dir, progress=self.progress, force=True)  # a job run again replaces its run
        if self.log == "tensorboard":
            write_tensorboard(run_dir, run_dir / TENSORBOARD_DIR)
        # the whole job's seconds (its stages and what they leave out: building the backbone, writing the run)
        return {**metrics, "run_dir": str(run_dir), "job_seconds": round(time.perf_counter() - start, 3)}


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
            rows.append({**base, "target": job["sources"][0], "test_accuracy": sum(accuracy.values()) / len(accuracy),
                         "parts": [_part(record, domain, 1 / len(accuracy)) for domain in accuracy]})
        else:
            rows += [{**base, "target": target, "test_accuracy": value, "parts": [_part(record, target, 1.0)]}
                     for target, value in accuracy.items()]
    return rows


def _part(record: dict, domain: str, weight: float) -> dict:
    """One test domain of a record as a table cell reads it (benchmarks.tables): its accuracy, its number of test
    images (from the per-image predictions, else from the run's split sizes: older records have no
    predictions) and the predictions for the paired test."""
    predictions = (record.get("test_predictions") or {}).get(domain)
    images = predictions["images"] if predictions else (record.get("sizes") or {}).get(f"test/{domain}")
    return {"key": domain, "accuracy": record["test_accuracy"][domain], "images": images, "weight": weight,
            "predictions": predictions}


def table_columns(suite: Suite, jobs: Sequence[Job]) -> tuple[list[str], list[str]]:
    """(columns, rows) of the suite's table: the target domains (single-source: the source domains) and the
    methods, in the jobs' order."""
    columns = list(dict.fromkeys(
        (job.sources[0] if suite.protocol == "single-source" else target) for job in jobs
        for target in (job.targets if suite.protocol != "single-source" else job.sources[:1])))
    return columns, list(dict.fromkeys(job.method for job in jobs))


def suite_table(suite: Suite, jobs: Sequence[Job], records: Sequence[dict]) -> Table:
    columns, methods = table_columns(suite, jobs)
    return accuracy_table(table_rows(records), targets=columns, methods=methods)


def title(suite: Suite, seeds: Sequence[int], backbone: str) -> str:
    what = {
        "multi-source": f"{suite.dataset}, leave one domain out (column = target domain)",
        "single-source": f"{suite.dataset}, single source (column = source domain; mean over the other domains)",
        "cross-dataset": f"trained on {suite.dataset}, tested on {suite.target_dataset} (column = target domain)",
    }[suite.protocol]
    return f"Test accuracy (%) — {what}; {seeds_text(seeds)} [95% interval]; backbone {backbone}; best in bold"


def seeds_text(seeds: Sequence[int]) -> str:
    """What a table's cells average: '1 seed (0)', 'mean over 3 seeds (0, 1, 2)'."""
    listed = ", ".join(map(str, seeds))
    return f"1 seed ({listed})" if len(seeds) == 1 else f"mean over {len(seeds)} seeds ({listed})"


def counted(number: int, noun: str) -> str:
    """'1 job', '2 jobs': a number with its noun, singular or plural."""
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def plot(table: Table, path: Path, heading: str) -> Path:
    """Grouped bars: one group per column (domain, avg), one bar per method, error bars = the cells' 95% intervals
    (the std over seeds where a cell has none). The y axis starts at a round value below every interval, and its
    label says where: a bar's height is then not mistaken for its share of 100 %."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(1, len(table.rows))
    figure, axes = plt.subplots(figsize=(2.6 + 1.3 * len(table.columns), 3.6))
    for index, method in enumerate(table.rows):
        cells = [table.cells.get((method, column)) for column in table.columns]
        below = [cell.mean - (cell.low if cell.low is not None else cell.mean - cell.std) if cell else 0
                 for cell in cells]
        above = [(cell.high if cell.high is not None else cell.mean + cell.std) - cell.mean if cell else 0
                 for cell in cells]
        axes.bar([c + (index - (len(table.rows) - 1) / 2) * width for c in range(len(table.columns))],
                 [cell.mean if cell else 0 for cell in cells], width, yerr=[below, above], capsize=2, label=method)
    lows = [cell.low if cell.low is not None else cell.mean - cell.std for cell in table.cells.values()]
    highs = [cell.high if cell.high is not None else cell.mean + cell.std for cell in table.cells.values()]
    start = max(0.0, 10 * ((min(lows) - 5) // 10)) if lows else 0.0
    axes.set_ylim(start, min(100.0, max(highs) + 3) if highs else 100.0)
    axes.set_xticks(range(len(table.columns)), table.columns)
    axes.set_ylabel(f"test accuracy (%), axis from {start:.0f}")
    axes.set_title(heading, fontsize=9)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_seed_spread(records: Sequence[dict], path: Path, heading: str) -> Path | None:
    """One column per method with two or more seeds: each seed's accuracy averaged over the columns (a dot),
    the mean (a bar): how far one seed's run can land from another's. None when no method has two seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spread: dict[str, list[float]] = {}
    for method in dict.fromkeys(r["job"]["method"] for r in records if r.get("status") == "ok"):
        per_seed: dict[int, list[float]] = {}
        for row in table_rows([r for r in records if r.get("status") == "ok" and r["job"]["method"] == method]):
            per_seed.setdefault(row["seed"], []).append(100 * row["test_accuracy"])
        if len(per_seed) > 1:
            spread[method] = [statistics.mean(values) for values in per_seed.values()]
    if not spread:
        return None
    figure, axes = plt.subplots(figsize=(2.0 + 0.9 * len(spread), 3.4))
    for index, (method, values) in enumerate(spread.items()):
        axes.scatter([index] * len(values), values, s=14, zorder=3)
        axes.hlines(statistics.mean(values), index - 0.3, index + 0.3, color="black", linewidth=1)
    axes.set_xticks(range(len(spread)), list(spread), rotation=30, ha="right", fontsize=8)
    axes.set_ylabel("accuracy averaged over targets (%)")
    axes.set_title(heading, fontsize=9)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


QUALITY = (("fid", "FID", 1.0), ("kid", "KID ×10³", 1e3), ("precision", "precision", 1.0), ("recall", "recall", 1.0),
           ("diversity", "diversity", 1.0))


def _mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> str:
    values = [scale * v for v in values if v == v]  # NaN (undefined) values are left out
    if not values:
        return "–"
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def seed_stability(rows: Sequence[dict]) -> dict[str, float] | None:
    """Over the seeds of one method: each seed's accuracy averaged over the columns it has (points), then
    their mean, their std, the worst seed's, and the mean over columns of the per-column std. None with
    fewer than two seeds."""
    per_seed: dict[int, list[float]] = {}
    by_column: dict[str, list[float]] = {}
    for row in rows:
        per_seed.setdefault(row["seed"], []).append(100 * row["test_accuracy"])
        by_column.setdefault(row["target"], []).append(100 * row["test_accuracy"])
    if len(per_seed) < 2:
        return None
    averages = [statistics.mean(values) for values in per_seed.values()]
    return {"seeds": len(averages), "mean": statistics.mean(averages), "std": statistics.stdev(averages),
            "worst": min(averages),
            "column_std": statistics.mean(statistics.stdev(v) for v in by_column.values() if len(v) > 1)}


def method_table(jobs: Sequence[Job], records: Sequence[dict]) -> str:
    """Per method: seed stability (the mean over columns of the std of accuracy over seeds; the seed-averaged
    accuracy's mean, std across seeds and worst seed), stage II seconds and the generator quality metrics
    (each mean ± std over the method's jobs: every target and seed, not seeds alone). Where no method has two
    seeds, one line under the table says why its seed columns are '–'."""
    ok = [r for r in records if r.get("status") == "ok"]
    spread = False
    lines = ["| method | seed std (points) | mean over seeds | std across seeds | worst seed | stage II s per job | "
             "kept last epoch | prompts off labels (×) | " + " | ".join(title for _, title, _ in QUALITY) + " |",
             "|---|" + "---:|" * (7 + len(QUALITY))]
    for method in dict.fromkeys(job.method for job in jobs):
        mine = [r for r in ok if r["job"]["method"] == method]
        stability = seed_stability(table_rows(mine))
        spread = spread or stability is not None
        seeds = ([f"{stability['column_std']:.2f}", f"{stability['mean']:.2f}", f"{stability['std']:.2f}",
                  f"{stability['worst']:.2f}"] if stability else ["–"] * 4)
        stage2 = _mean_std([r["seconds"]["stage2"] for r in mine if "stage2" in r["seconds"]], digits=1)
        quality = [r["generator_quality"] for r in mine if r.get("generator_quality")]
        cells = [_mean_std([q[key] for q in quality], scale) for key, _, scale in QUALITY]
        kept = kept_last_epoch(mine)
        off = _mean_std([r["prompt_distance"]["ratio"] for r in mine if r.get("prompt_distance")], digits=1)
        lines.append(f"| {method} | " + " | ".join([*seeds, stage2, f"{kept[0]} of {kept[1]}" if kept[1] else "–",
                                                    off, *cells]) + " |")
    if ok and not spread:
        lines += ["", no_spread_line(ok)]
    return "\n".join(lines)


def no_spread_line(records: Sequence[dict]) -> str:
    """Why every seed column of the per-method table is '–': too few seeds, or (a deterministic method, run once)
    one seed of each method."""
    seeds = len({r["job"]["seed"] for r in records})
    if seeds < 2:
        return f"The seed columns need 2 or more seeds; this sweep ran {seeds}."
    return (f"The seed columns need 2 or more seeds of one method; this sweep ran {seeds}, but each method's finished "
            f"runs are of one seed.")


def kept_last_epoch(records: Sequence[dict]) -> tuple[int, int]:
    """(how many, of the runs whose loop reports its epochs) kept their loop's last epoch: the source val accuracy
    was still at its best when the schedule ended, so a longer schedule might have trained further."""
    fits = [r.get("fit") or {} for r in records]
    known = [fit for fit in fits if type(fit.get("best_epoch")) is int and type(fit.get("last_epoch")) is int]
    return sum(fit["best_epoch"] == fit["last_epoch"] for fit in known), len(known)


OFF_LABELS = 1.0  # generated prompts farther than a label entry's own RMS size from their nearest label


def off_their_labels(jobs: Sequence[Job], records: Sequence[dict]) -> list[str]:
    """The methods whose generated prompts lie, on average over their runs, farther from the nearest stage I label
    than a label entry's own RMS size (metrics' prompt_distance): their generator did not reach its labels, so
    their rows say how that generator was trained, not what the method can do (``promptgen inspect`` says more)."""
    ok = [r for r in records if r.get("status") == "ok" and r.get("prompt_distance")]
    named = []
    for method in dict.fromkeys(job.method for job in jobs):
        ratios = [r["prompt_distance"]["ratio"] for r in ok if r["job"]["method"] == method]
        if ratios and statistics.mean(ratios) > OFF_LABELS:
            named.append(f"{method} ({statistics.mean(ratios):.1f}×)")
    return named


def under_trained(jobs: Sequence[Job], records: Sequence[dict]) -> list[str]:
    """The methods that kept their loop's last epoch in at least half of their runs: under-trained by their
    schedule (docs/benchmarks.md), named under the tables so that a reader does not take them for weak."""
    ok = [r for r in records if r.get("status") == "ok"]
    named = []
    for method in dict.fromkeys(job.method for job in jobs):
        kept, runs = kept_last_epoch([r for r in ok if r["job"]["method"] == method])
        if runs and 2 * kept >= runs:
            named.append(f"{method} ({kept} of {runs} runs)")
    return named


def domain_gap_table(gaps: dict[str, dict[str, float]], domains: Sequence[str]) -> str:
    """FID above the diagonal, KID ×10³ below it."""
    lines = ["| FID \\ KID ×10³ | " + " | ".join(domains) + " |", "|---|" + "---:|" * len(domains)]
    for i, a in enumerate(domains):
        cells = []
        for j, b in enumerate(domains):
            gap = gaps.get(f"{a}|{b}") or gaps.get(f"{b}|{a}")
            cells.append("–" if gap is None else f"{gap['fid']:.3f}" if j > i else f"{1e3 * gap['kid']:.2f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


GAP_SAMPLE = 500  # test images per domain for the domain-gap table (evenly spaced: the same every sweep)


def domain_gaps(suite: Suite, cache_dir: str | None, device: str | None = None, registry=None,
                progress: bool = True, per_domain: int = GAP_SAMPLE) -> tuple[list[str], dict]:
    """Image features of up to ``per_domain`` test images of every domain (from the feature cache) and their
    pairwise FID/KID."""
    registry = registry or default_registry()
    example = suite.example()
    if device:
        example = attrs.evolve(example, backbone=attrs.evolve(example.backbone, device=device))
    preset = preset_for_device(example.preset, choose_device(example.backbone.device).type)
    backbone = example.backbone.build(registry, Settings.of(example, preset))
    features, domains = {}, []
    with FeatureCache(cache_dir) as cache:
        for name in dict.fromkeys(filter(None, (example.dataset, example.target_dataset))):
            dataset = build_dataset(example, registry, name, preset, progress=False)
            for domain in tqdm(dataset.domains, desc=f"domain gap: {name} features", unit="domain",
                               disable=not progress, leave=False):
                key = domain if name == example.dataset else f"{name}/{domain}"
                samples = list(dataset.samples(domain, "test"))
                sample = samples[:: max(1, len(samples) // per_domain)][:per_domain]
                features[key] = cache.get(backbone, dataset, name, sample, progress=progress).features
                domains.append(key)
    return domains, domain_gap(features)
