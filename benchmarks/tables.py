"""Result tables derived from run records, DomainBed style: rows = methods, columns = target domains + avg,
the mean over seeds with a 95% interval that counts the test set's own sampling error (benchmarks.stats),
the best mean of each column in bold, and each other row marked where a paired test over the same test
images says it is below the best.

A row of input (what ``accuracy_table`` reads) is one run's contribution to one cell: ``method``,
``target`` (the column), ``seed``, ``test_accuracy`` (a fraction) and, where the record has them,
``parts``: one entry per test domain the value averages, ``{"key", "accuracy", "images", "weight",
"predictions"}`` (``predictions``: promptgen.toolkit.evaluate.pack_correct's per-image record, or None).
"""

from __future__ import annotations

import statistics
from typing import Iterable, Sequence

import attrs
import numpy as np

from benchmarks import stats
from promptgen.toolkit.evaluate import unpack_correct

LEGEND = ("[low, high]: 95% interval over seeds and test images (Wilson for one seed on one domain; else t with "
          "Welch–Satterthwaite df: benchmarks/stats.py); †: below the column's best by a paired sign-flip test over "
          f"the same test images at p < {stats.ALPHA} (exact McNemar with one seed each); (1 seed): one run, so no "
          "seed spread is in the interval")


@attrs.frozen
class Cell:
    mean: float  # percent
    std: float  # over seeds
    count: int  # seeds
    low: float | None = None  # the 95% interval (percent); None when the test image counts are unknown
    high: float | None = None
    p_vs_best: float | None = None  # the paired test against the column's best row; None for it and where untested

    @property
    def below_best(self) -> bool:
        return self.p_vs_best is not None and self.p_vs_best < stats.ALPHA

    def text(self, bold: bool = False) -> str:
        value = f"**{self.mean:.1f}**" if bold else f"{self.mean:.1f}"
        if self.low is not None:
            value += f" [{self.low:.1f}, {self.high:.1f}]"
        elif self.count > 1:
            value += f" ± {self.std:.1f}"
        return value + ("†" if self.below_best else "") + (" (1 seed)" if self.count == 1 else "")


@attrs.frozen
class Table:
    rows: tuple[str, ...]
    columns: tuple[str, ...]  # target domains, then "avg"
    cells: dict  # (row, column) -> Cell

    def best(self, column: str) -> str | None:
        present = [row for row in self.rows if (row, column) in self.cells]
        return max(present, key=lambda row: self.cells[(row, column)].mean) if present else None

    def markdown(self, title: str = "") -> str:
        lines = [title, ""] if title else []
        lines += ["| method | " + " | ".join(self.columns) + " |", "|---|" + "---:|" * len(self.columns)]
        best = {column: self.best(column) for column in self.columns}
        for row in self.rows:
            texts = [self.cells[(row, c)].text(bold=best[c] == row) if (row, c) in self.cells else "–"
                     for c in self.columns]
            lines.append(f"| {row} | " + " | ".join(texts) + " |")
        return "\n".join(lines + ["", LEGEND] if self.cells else lines)

    def csv(self) -> str:
        fields = ("mean", "std", "low", "high", "seeds", "p_vs_best")
        lines = ["method," + ",".join(f"{c}_{field}" for c in self.columns for field in fields)]
        for row in self.rows:
            values = []
            for column in self.columns:
                cell = self.cells.get((row, column))
                values += ([_number(cell.mean), _number(cell.std), _number(cell.low), _number(cell.high),
                            str(cell.count), _number(cell.p_vs_best, 6)] if cell else [""] * len(fields))
            lines.append(f"{row}," + ",".join(values))
        return "\n".join(lines) + "\n"


def _number(value: float | None, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def accuracy_table(records: Iterable[dict], targets: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                   value: str = "test_accuracy") -> Table:
    """Group rows (each with 'method', 'target' and ``value`` as a fraction) into percentages.

    Each cell is the mean ± sample std over the rows' seeds with its interval; 'avg' is, per seed, the mean
    over targets, then mean over seeds — the convention of the DG papers' tables.
    """
    methods, columns, by_cell = cell_runs(records, targets, methods, value)
    cells = {key: _cell(rows) for key, rows in by_cell.items()}
    for column in columns:
        present = [m for m in methods if (m, column) in cells]
        if len(present) < 2:
            continue
        best = max(present, key=lambda m: cells[(m, column)].mean)
        for method in present:
            if method != best:
                p = paired_test(by_cell[(best, column)], by_cell[(method, column)])
                cells[(method, column)] = attrs.evolve(cells[(method, column)], p_vs_best=p)
    return Table(tuple(methods), columns, cells)


Runs = dict  # a cell's runs: {seed: row}, the rows accuracy_table reads


def cell_runs(records: Iterable[dict], targets: Sequence[str] | None = None, methods: Sequence[str] | None = None,
              value: str = "test_accuracy") -> tuple[list[str], tuple[str, ...], dict[tuple[str, str], Runs]]:
    """(methods, columns, {(method, column): {seed: row}}): each cell's runs as accuracy_table reads ``records``,
    'avg' included (average_rows), only the cells of ``methods`` and ``columns`` (the targets, then 'avg')."""
    by_cell: dict[tuple[str, str], dict[int, dict]] = {}
    for record in records:
        by_cell.setdefault((record["method"], record["target"]), {})[record.get("seed", 0)] = \
            {**record, "test_accuracy": record[value]}
    methods = list(methods or dict.fromkeys(method for method, _ in by_cell))
    targets = list(targets or dict.fromkeys(target for _, target in by_cell))
    for method in methods:
        per_seed = average_rows({t: by_cell.get((method, t), {}) for t in targets})
        if per_seed:
            by_cell[(method, "avg")] = per_seed
    columns = (*targets, "avg")
    return methods, columns, {key: rows for key, rows in by_cell.items() if key[0] in methods and key[1] in columns}


def average_over_datasets(rows_by_dataset: dict[str, list[dict]], methods: Sequence[str] | None = None) -> Table:
    """SPG's Table 1: rows = methods, columns = datasets + avg; a dataset's cell is its 'avg' over target domains
    (per seed, then mean ± std over seeds), 'avg' the per-seed mean over datasets. ``rows_by_dataset``: each
    dataset's table rows (what accuracy_table reads) with its target domains."""
    return accuracy_table(dataset_average_rows(rows_by_dataset), targets=list(rows_by_dataset), methods=methods)


def dataset_average_rows(rows_by_dataset: dict[str, list[dict]]) -> list[dict]:
    """The rows of the table averaged over datasets: per dataset, method and seed, one row (target = the dataset)
    averaging the dataset's targets, its parts keyed '<dataset>/<target>:<domain>'."""
    averaged = []
    for dataset, rows in rows_by_dataset.items():
        by_cell: dict[tuple[str, str], dict[int, dict]] = {}
        for row in rows:
            by_cell.setdefault((row["method"], row["target"]), {})[row.get("seed", 0)] = row
        targets = list(dict.fromkeys(target for _, target in by_cell))
        for method in dict.fromkeys(method for method, _ in by_cell):
            per_seed = average_rows({t: by_cell.get((method, t), {}) for t in targets}, prefix=f"{dataset}/")
            averaged += [{**row, "method": method, "target": dataset, "seed": seed} for seed, row in per_seed.items()]
    return averaged


def average_rows(by_target: dict[str, dict[int, dict]], prefix: str = "") -> dict[int, dict]:
    """Per seed, one row averaging every target's row (its parts weighted by 1/targets); empty if a target has
    no result.

    A target run once (a deterministic method such as zero-shot) lends its one row to every seed;
    a seed missing from a target that was run several times is left out.
    """
    if not by_target or any(not rows for rows in by_target.values()):
        return {}
    averages = {}
    for seed in sorted(set().union(*by_target.values())):
        chosen = {target: rows.get(seed, next(iter(rows.values())) if len(rows) == 1 else None)
                  for target, rows in by_target.items()}
        if None in chosen.values():
            continue
        share = 1 / len(chosen)
        parts = [[{**part, "key": f"{prefix}{target}:{part['key']}", "weight": part["weight"] * share}
                  for part in row["parts"]] if row.get("parts") else None for target, row in chosen.items()]
        averages[seed] = {"test_accuracy": statistics.mean(row["test_accuracy"] for row in chosen.values()),
                          "parts": None if None in parts else [part for group in parts for part in group]}
    return averages


def _cell(rows: dict[int, dict]) -> Cell:
    values = [100 * row["test_accuracy"] for row in rows.values()]
    mean, std = statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0
    parts = _parts_over_seeds(rows)
    if parts is None:
        return Cell(mean, std, len(values))
    low, high = stats.interval([v / 100 for v in values],
                               [(statistics.mean(p["accuracy"] for p in group), group[0]["images"], group[0]["weight"])
                                for group in parts.values()])
    return Cell(mean, std, len(values), 100 * low, 100 * high)


def _parts_over_seeds(rows: dict[int, dict]) -> dict[str, list[dict]] | None:
    """Each test domain's parts, one per seed; None unless every row names its test domains and image counts."""
    grouped: dict[str, list[dict]] = {}
    for row in rows.values():
        if not row.get("parts") or any(not part.get("images") for part in row["parts"]):
            return None
        for part in row["parts"]:
            grouped.setdefault(part["key"], []).append(part)
    return grouped


def paired_test(best: dict[int, dict], other: dict[int, dict]) -> float | None:
    """The paired sign-flip test's p value between two cells' runs (benchmarks.stats.paired_p), over every test
    image the cells share; None when a run kept no per-image predictions or the two saw other images."""
    domains = paired_images(best, other)
    return None if domains is None else stats.paired_p(domains)


def paired_images(first: dict[int, dict], second: dict[int, dict]) -> list[tuple[float, np.ndarray]] | None:
    """Per test domain of two cells' runs (each {seed: row}): (its weight in the cells, per image the first cell's
    correctness minus the second's, each averaged over its own seeds). None when a run kept no per-image
    predictions or the two saw other images: then nothing pairs them."""
    mine, theirs = _parts_over_seeds(first), _parts_over_seeds(second)
    if mine is None or theirs is None or set(mine) != set(theirs):
        return None
    domains = []
    for key, group in mine.items():
        a, b = _correct_over_seeds(group), _correct_over_seeds(theirs[key])
        if a is None or b is None or group[0]["predictions"]["samples"] != theirs[key][0]["predictions"]["samples"]:
            return None
        domains.append((group[0]["weight"], a - b))
    return domains


def _correct_over_seeds(parts: list[dict]) -> np.ndarray | None:
    """Per test image, the fraction of a cell's seeds that got it right; None unless every seed saw the same images."""
    packed = [part.get("predictions") for part in parts]
    if any(p is None for p in packed) or len({p["samples"] for p in packed}) != 1:
        return None
    return np.mean([unpack_correct(p) for p in packed], axis=0)
