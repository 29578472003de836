"""Any two methods of a suite side by side: for every pair, per dataset and column, the difference of their means
with a paired 95% interval and the paired test over the same test images, Holm-corrected per column.

The pairing is the table's (benchmarks.tables.paired_images: per test image, each method's correctness averaged
over its own seeds, weighted as the cell averages its domains); the statistics are benchmarks.stats's
(paired_p, paired_interval, holm). One Holm family is one column of one table: every pair of the methods that have
that cell. Outputs: ``pairs.csv`` (every pair of every column), ``pairs.md`` (a matrix per table's avg column, also
a section of table.md and of index.html), and ``--compare A B``'s answer for one pair.
"""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Sequence

import attrs

from benchmarks import stats, tables
from promptgen.errors import ConfigError, suggestion
from promptgen.files import write_text

AVERAGE = "average"  # the dataset of the pairs in a several-dataset suite's table averaged over its datasets
CSV_FIELDS = ("dataset", "column", "method_a", "method_b", "mean_a", "mean_b", "diff", "low", "high", "p", "p_holm")


@attrs.frozen
class Pair:
    dataset: str  # a dataset, or AVERAGE
    column: str  # a table column: a target domain (a dataset, in AVERAGE's table) or "avg"
    method_a: str
    method_b: str
    mean_a: float  # the cells' means (percent), as the table shows them
    mean_b: float
    low: float | None = None  # the 95% paired interval of mean_a - mean_b (points); None where nothing pairs the runs
    high: float | None = None
    p: float | None = None  # the paired test; None where nothing pairs the runs
    p_holm: float | None = None  # p after Holm's correction over the column's pairs
    family: int = 0  # how many tested pairs that correction ran over

    @property
    def diff(self) -> float:
        return self.mean_a - self.mean_b

    @property
    def differs(self) -> bool:
        return self.p_holm is not None and self.p_holm < stats.ALPHA

    def swapped(self) -> Pair:
        """The same comparison read the other way: b − a."""
        return attrs.evolve(self, method_a=self.method_b, method_b=self.method_a, mean_a=self.mean_b,
                            mean_b=self.mean_a, low=None if self.high is None else 0.0 - self.high,
                            high=None if self.low is None else 0.0 - self.low)  # 0.0 - x: no "-0.0" printed


def column_pairs(rows: Sequence[dict], targets: Sequence[str], methods: Sequence[str], dataset: str) -> list[Pair]:
    """Every pair of ``methods`` (in their order: a before b) in every column of the table accuracy_table makes of
    ``rows``, each column's p values Holm-corrected together."""
    methods, columns, by_cell = tables.cell_runs(rows, targets, methods)
    pairs = []
    for column in columns:
        present = [method for method in methods if (method, column) in by_cell]
        found = [_pair(dataset, column, a, b, by_cell[(a, column)], by_cell[(b, column)])
                 for a, b in itertools.combinations(present, 2)]
        adjusted = stats.holm([pair.p for pair in found])
        family = sum(pair.p is not None for pair in found)
        pairs += [attrs.evolve(pair, p_holm=q, family=family) for pair, q in zip(found, adjusted)]
    return pairs


def _pair(dataset: str, column: str, a: str, b: str, runs_a: dict[int, dict], runs_b: dict[int, dict]) -> Pair:
    values_a = [row["test_accuracy"] for row in runs_a.values()]
    values_b = [row["test_accuracy"] for row in runs_b.values()]
    pair = Pair(dataset, column, a, b, 100 * statistics.mean(values_a), 100 * statistics.mean(values_b))
    domains = tables.paired_images(runs_a, runs_b)
    if domains is None:
        return pair
    low, high = stats.paired_interval(domains, values_a, values_b)
    return attrs.evolve(pair, low=100 * low, high=100 * high, p=stats.paired_p(domains))


def suite_pairs(suite, jobs: Sequence, records: Sequence[dict]) -> tuple[list[Pair], dict[str, str]]:
    """The pairs of a suite's tables from its records, and {dataset: its table's name in a heading}: each dataset's
    table, after (several datasets) the table averaged over them; a search's table of its first selection method
    (the one table.csv holds)."""
    from benchmarks import selection, sweep

    if suite.search is not None:
        main = [job for job in jobs if not job.loo_for]
        columns, methods = sweep.table_columns(suite, main)
        names = selection.applied(suite.search.selection, jobs)
        rows, _ = selection.select(names[0], records) if names else ([], [])
        title = f"{suite.dataset}, selected by {names[0]}" if names else suite.dataset
        return column_pairs(rows, columns, methods, suite.dataset), {suite.dataset: title}
    pairs, by_dataset = [], {}
    for part in suite.parts():
        mine = [job for job in jobs if job.dataset == part.dataset]
        if not mine:  # --targets left this dataset out
            continue
        by_dataset[part.dataset] = sweep.table_rows([r for r in records if r["job"]["dataset"] == part.dataset])
        columns, methods = sweep.table_columns(part, mine)
        pairs += column_pairs(by_dataset[part.dataset], columns, methods, part.dataset)
    titles = {dataset: dataset for dataset in by_dataset}
    if suite.datasets:
        methods = list(dict.fromkeys(job.method for job in jobs))
        pairs = column_pairs(tables.dataset_average_rows(by_dataset), list(by_dataset), methods, AVERAGE) + pairs
        titles = {AVERAGE: "average over datasets", **titles}
    return pairs, titles


def write(suite, jobs: Sequence, records: Sequence[dict], out: Path) -> tuple[list[Pair], str]:
    """Write ``pairs.csv`` and ``pairs.md`` (empty where no column has two methods) into ``out``; return the pairs
    and the markdown (table.md's section)."""
    pairs, titles = suite_pairs(suite, jobs, records)
    write_text(out / "pairs.csv", csv(pairs))
    text = markdown(pairs, titles)
    write_text(out / "pairs.md", text + "\n" if text else "")
    return pairs, text


def selected_by(suite, jobs: Sequence) -> str | None:
    """The selection method whose table a search's pairs come from; None outside a search."""
    from benchmarks import selection

    names = selection.applied(suite.search.selection, jobs) if suite.search is not None else []
    return names[0] if names else None


# --- the outputs ----------------------------------------------------------------------------------------------------

def csv(pairs: Sequence[Pair]) -> str:
    lines = [",".join(CSV_FIELDS)]
    for pair in pairs:
        numbers = [_number(value) for value in (pair.mean_a, pair.mean_b, pair.diff, pair.low, pair.high)]
        lines.append(",".join([pair.dataset, pair.column, pair.method_a, pair.method_b, *numbers,
                               _number(pair.p, ".6g"), _number(pair.p_holm, ".6g")]))
    return "\n".join(lines) + "\n"


def _number(value: float | None, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


LEGEND = ("Cell: the row's mean minus the column's (points) [95% paired interval over the same test images: per image "
          "the difference in correctness, each method's averaged over its own seeds and weighted as the cell averages "
          "its domains; a normal interval of that weighted mean difference, plus each method's seed spread (s²/k) with "
          "Welch–Satterthwaite df where a method has several seeds; per pair, not corrected]; †: the paired test over "
          "the same test images (exact McNemar with one seed each, else sign flips: benchmarks/stats.py) has p < "
          f"{stats.ALPHA} after Holm's correction over the tested pairs of its matrix (every pair of the methods in "
          "that column of that table, counted in its heading: one family per matrix; each other column, in pairs.csv, "
          "is a family of its own); – where nothing pairs two runs (no per-image predictions, or other test images): "
          "no interval, no test, not in the family")


def markdown(pairs: Sequence[Pair], titles: dict[str, str]) -> str:
    """A matrix per table's avg column (rows and columns the methods; cell row − column), in ``titles``' order
    ({dataset: how a heading names its table}), then the legend; "" when no table has two methods."""
    sections = []
    for dataset, title in titles.items():
        mine = {(pair.method_a, pair.method_b): pair for pair in pairs
                if pair.dataset == dataset and pair.column == "avg"}
        if not mine:
            continue
        methods = list(dict.fromkeys(name for key in mine for name in key))
        family = next(iter(mine.values())).family
        lines = [f"Pairwise differences, {title}: avg test accuracy (%), row − column; † after Holm over its "
                 f"{family} tested pairs", "",
                 "| row − column | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
        for row in methods:
            cells = []
            for column in methods:
                pair = mine.get((row, column)) or (mine[(column, row)].swapped() if (column, row) in mine else None)
                cells.append("·" if row == column else "–" if pair is None else _cell_text(pair))
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections + [LEGEND]) if sections else ""


def _cell_text(pair: Pair) -> str:
    interval = f" [{pair.low:+.1f}, {pair.high:+.1f}]" if pair.low is not None else " –"
    return f"{pair.diff:+.1f}{interval}" + ("†" if pair.differs else "")


# --- one pair: --compare A B ----------------------------------------------------------------------------------------

def check_methods(names: Sequence[str], present: Sequence[str], why: str) -> None:
    """Refuse, in one line, a --compare that names the same method twice or one not among ``present``; ``why``
    says what the method lacks and introduces the list of ``present``."""
    first, second = names
    if first == second:
        raise ConfigError(f"--compare: {first!r} twice; name two different methods")
    for name in names:
        if name not in present:
            raise ConfigError(f"--compare: method {name!r} {why}: {', '.join(present) or 'none'}"
                              f"{suggestion(name, present)}")


def answer(pairs: Sequence[Pair], first: str, second: str, heading: str) -> str:
    """The pair (first, second) in every dataset and column both have: the two means, first − second in points with
    its 95% paired interval, the paired test's p and the Holm-adjusted p (its family: that column's pairs)."""
    chosen = [pair if pair.method_a == first else pair.swapped() for pair in pairs
              if {pair.method_a, pair.method_b} == {first, second}]
    header = ("dataset", "column", first, second, "diff", "95% interval", "p", "p (Holm)", "Holm over")
    # two decimals: 400 test images step by 0.25 points, and one decimal would show 79.3 - 78.5 = +0.7
    rows = [(_label(pair.dataset), pair.column, f"{pair.mean_a:.2f}", f"{pair.mean_b:.2f}", f"{pair.diff:+.2f}",
             f"[{pair.low:+.2f}, {pair.high:+.2f}]" if pair.low is not None else "–", _p(pair.p), _p(pair.p_holm),
             f"{pair.family} pair{'s' if pair.family != 1 else ''}") for pair in chosen]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) if i < 2 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in [header, *rows]]
    text = "\n".join([
        f"{first} vs {second}, {heading}: test accuracy (%)",
        f"diff: {first} − {second} in points, with its 95% paired interval over the same test images (per pair, not "
        f"corrected)",
        "p: the paired test over the same test images (exact McNemar with one seed each, else sign flips); p (Holm): "
        "corrected over every pair of the suite's methods in that column, as many as 'Holm over' says (pairs.csv "
        "has them all)"])
    if not chosen:
        return text + "\n\nno column has both methods' results"
    return text + "\n\n" + "\n".join(lines)


def _label(dataset: str) -> str:
    return "average over datasets" if dataset == AVERAGE else dataset


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"
