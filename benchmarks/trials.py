"""A search's per-trial table: every trial of every cell, its drawn values, the score its selection method read and
its test accuracy, with the trial taken and the ties named (benchmarks.selection chooses; this shows why).

Two trials can share a score (accuracies on a few hundred images move in steps of 0.25 points): the cell then takes
the lower trial, and two selection methods can report the same number while taking different trials. The table
marks every trial sharing the selected score ``tie`` so that neither reads as an accident.
"""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Sequence

# What each selection method's score column holds: the validation accuracy it selects by.
SCORES = {
    "training-domain": "the run's source val (its source domains' val splits, at the epoch it kept)",
    "leave-one-domain-out": "the mean over its sources v of the trial trained without v and scored on v, at its "
                            "best epoch",
    "oracle": "the held-out domain's val split at the last epoch (its val split, not its test split)",
}
TIE_RULE = "the lower trial wins"
# A search of many trials has thousands of rows: table.md lists this many per selection method, the CSV every one.
LISTED_ROWS = 200


def rows(choices: Sequence[dict], records: Sequence[dict], order: Sequence[str]) -> list[dict]:
    """One row per (method, column, seed, trial) of the cells in ``choices`` (benchmarks.selection.select's), in
    ``order``'s method order: trial, drawn values, score (percent; None where the run has none), test (percent),
    whether it was selected and whether it shares the selected score with another trial."""
    drawn = {(r["job"]["method"], r["job"]["trial"]): r["job"].get("hparams") or {} for r in records
             if r["job"].get("trial") is not None}
    rank = {method: index for index, method in enumerate(order)}
    found = []
    for choice in sorted(choices, key=lambda c: rank.get(c["method"], len(rank))):
        for score in choice["scores"]:
            found.append({"method": choice["method"], "column": choice["column"], "seed": choice["seed"],
                          "trial": score["trial"], "hparams": drawn.get((choice["method"], score["trial"]), {}),
                          "score": 100 * score["val"] if math.isfinite(score["val"]) else None,
                          "test": 100 * score["test"], "selected": score["trial"] == choice["trial"],
                          "tie": score["trial"] in choice["tied"]})
    return found


def drawn_text(hparams: dict) -> str:
    """A trial's drawn values as ``--set`` writes them (``coop.lr=0.00098``); trial 0's none: ``preset``."""
    values = [f"{component}.{option}={value:.3g}" if isinstance(value, float) else f"{component}.{option}={value}"
              for component, options in hparams.items() for option, value in options.items()]
    return ", ".join(values) or "preset"


def choice_text(row: dict) -> str:
    if row["selected"]:
        return f"**selected**, tie: {TIE_RULE}" if row["tie"] else "**selected**"
    return f"tie: {TIE_RULE}" if row["tie"] else ""


def markdown(selection: str, found: Sequence[dict], column: str, csv_name: str) -> str:
    """The per-trial table of ``selection`` under its heading; ``column``: what a cell's column is (held out)."""
    heading = (f"Every trial, {selection}: score = {SCORES[selection]}; test = the test accuracy (%) the cell reports "
               f"for that trial; a tie (the same score) goes to the lower trial, trial 0 being the preset "
               f"(all rows: {csv_name})")
    lines = [heading, "", f"| method | {column} | seed | trial | drawn values | score | test | choice |",
             "|---|---|---:|---:|---|---:|---:|---|"]
    for row in found[:LISTED_ROWS]:
        score = "–" if row["score"] is None else f"{row['score']:.2f}"
        lines.append(f"| {row['method']} | {row['column']} | {row['seed']} | {row['trial']} | "
                     f"{drawn_text(row['hparams'])} | {score} | {row['test']:.2f} | {choice_text(row)} |")
    if len(found) > LISTED_ROWS:
        lines += ["", f"... and {len(found) - LISTED_ROWS} more rows in {csv_name}"]
    return "\n".join(lines)


def csv_text(found: Sequence[dict]) -> str:
    """Every row; scores and tests in percent, the drawn values as JSON ({component: {option: value}})."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "column", "seed", "trial", "hparams", "score", "test", "selected", "tie"])
    for row in found:
        writer.writerow([row["method"], row["column"], row["seed"], row["trial"],
                         json.dumps(row["hparams"], sort_keys=True),
                         "" if row["score"] is None else f"{row['score']:.4f}", f"{row['test']:.4f}",
                         int(row["selected"]), int(row["tie"])])
    return buffer.getvalue()
