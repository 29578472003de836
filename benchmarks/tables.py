"""Result tables derived from run records, DomainBed style: rows = methods, columns = target domains + avg,
mean ± std over seeds, the best mean of each column in bold."""

from __future__ import annotations

import statistics
from typing import Iterable, Sequence

import attrs


@attrs.frozen
class Cell:
    mean: float
    std: float
    count: int

    def text(self, bold: bool = False) -> str:
        value = f"{self.mean:.1f} ± {self.std:.1f}"
        return f"**{value}**" if bold else value


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
        return "\n".join(lines)

    def csv(self) -> str:
        lines = ["method," + ",".join(f"{c}_mean,{c}_std" for c in self.columns)]
        for row in self.rows:
            values = []
            for column in self.columns:
                cell = self.cells.get((row, column))
                values += [f"{cell.mean:.4f}", f"{cell.std:.4f}"] if cell else ["", ""]
            lines.append(f"{row}," + ",".join(values))
        return "\n".join(lines) + "\n"


def accuracy_table(records: Iterable[dict], targets: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                   value: str = "test_accuracy") -> Table:
    """Group records (each with 'method', 'target' and ``value`` as a fraction) into percentages.

    Each cell is the mean ± sample std over the records' seeds; 'avg' is, per seed, the mean over
    targets, then mean ± std over seeds — the convention of the DG papers' tables.
    """
    by_cell: dict[tuple[str, str], dict[int, float]] = {}
    for record in records:
        by_cell.setdefault((record["method"], record["target"]), {})[record.get("seed", 0)] = 100 * record[value]
    methods = list(methods or dict.fromkeys(method for method, _ in by_cell))
    targets = list(targets or dict.fromkeys(target for _, target in by_cell))
    cells = {}
    for method in methods:
        for target in targets:
            if (method, target) in by_cell:
                cells[(method, target)] = _cell(list(by_cell[(method, target)].values()))
        per_seed = _average_over_targets({t: by_cell.get((method, t), {}) for t in targets})
        if per_seed:
            cells[(method, "avg")] = _cell(list(per_seed.values()))
    return Table(tuple(methods), (*targets, "avg"), cells)


def average_over_datasets(rows_by_dataset: dict[str, list[dict]], methods: Sequence[str] | None = None) -> Table:
    """SPG's Table 1: rows = methods, columns = datasets + avg; a dataset's cell is its 'avg' over target domains
    (per seed, then mean ± std over seeds), 'avg' the per-seed mean over datasets. ``rows_by_dataset``: each
    dataset's table rows (what accuracy_table reads) with its target domains."""
    averaged = []
    for dataset, rows in rows_by_dataset.items():
        by_cell: dict[tuple[str, str], dict[int, float]] = {}
        for row in rows:
            by_cell.setdefault((row["method"], row["target"]), {})[row.get("seed", 0)] = row["test_accuracy"]
        targets = list(dict.fromkeys(target for _, target in by_cell))
        for method in dict.fromkeys(method for method, _ in by_cell):
            per_seed = _average_over_targets({t: by_cell.get((method, t), {}) for t in targets})
            averaged += [{"method": method, "target": dataset, "seed": seed, "test_accuracy": value}
                         for seed, value in per_seed.items()]
    return accuracy_table(averaged, targets=list(rows_by_dataset), methods=methods)


def _average_over_targets(by_target: dict[str, dict[int, float]]) -> dict[int, float]:
    """Per seed, the mean over every target; empty if a target has no result.

    A target run once (a deterministic method such as zero-shot) lends its one value to every seed;
    a seed missing from a target that was run several times is left out.
    """
    if not by_target or any(not values for values in by_target.values()):
        return {}
    averages = {}
    for seed in sorted(set().union(*by_target.values())):
        row = [values.get(seed, next(iter(values.values())) if len(values) == 1 else None)
               for values in by_target.values()]
        if None not in row:
            averages[seed] = statistics.mean(row)
    return averages


def _cell(values: list[float]) -> Cell:
    return Cell(statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))
