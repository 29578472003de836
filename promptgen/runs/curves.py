"""Per-epoch training curves of a run directory: a PNG beside the run, or TensorBoard event files.

Generic on purpose: the core never names a method. Whatever a method's fit report calls "history"
is a curve set — history.json (the report's top-level history, set "fit") and every "history"
list nested anywhere in metrics.json's "fit" object (named by its key path, e.g. "stage1 / photo").
Within a set, rows are per-epoch dicts: "epoch" is the x axis, every other numeric key a series.
Rows that carry a "path" key (two training paths logged in one list) are split into one set per path.
"""

from __future__ import annotations

import math
from pathlib import Path

from promptgen.errors import MissingDependencyError
from promptgen.files import read_json_or_none

PNG = "curves.png"
X = "epoch"
SPLIT = "path"  # rows with different values here are different curves
PANELS = (("loss", "loss"), ("accuracy", "acc"))  # (panel title, what a key contains to go there); the rest: "other"


def curve_sets(run_dir: str | Path) -> dict[str, list[dict]]:
    """{set name: rows}, each row ``{"epoch": x, series: value...}`` with only finite numbers kept.

    Empty when the run has no history (zero-shot, or a method that reports none).
    """
    run_dir = Path(run_dir)
    sets: dict[str, list[dict]] = {}
    history = read_json_or_none(run_dir / "history.json")  # missing or damaged: no curves
    if isinstance(history, list):
        _add(sets, "fit", history)
    metrics = read_json_or_none(run_dir / "metrics.json")
    if isinstance(metrics, dict):
        _walk(metrics.get("fit"), [], sets)
    return sets


def _walk(value, keys: list[str], sets: dict) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "history" and isinstance(item, list):
                _add(sets, " / ".join(keys) or "fit", item)
            else:
                _walk(item, [*keys, str(key)], sets)
    elif isinstance(value, list):  # e.g. a list of per-domain reports: their index names them
        for index, item in enumerate(value):
            _walk(item, [*keys, str(index)], sets)


def _number(value) -> float | None:
    # bool is an int to Python but never a series; NaN/inf (or null, how strict JSON stores them) are gaps.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _add(sets: dict, name: str, rows: list) -> None:
    for index, row in enumerate(r for r in rows if isinstance(r, dict)):
        split = row.get(SPLIT)
        key = f"{name} / {split}" if isinstance(split, str) else name
        x = _number(row.get(X))
        clean = {X: index if x is None else x}  # no epoch column: the row's position is its epoch
        clean.update((k, v) for k, v in ((k, _number(v)) for k, v in row.items() if k not in (X, SPLIT))
                     if v is not None)
        if len(clean) > 1:
            sets.setdefault(key, []).append(clean)


def _series(rows: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """{key: (epochs, values)}, each key over the rows that have it (a skipped NaN leaves a gap, not a zero)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key != X:
                xs, ys = series.setdefault(key, ([], []))
                xs.append(row[X])
                ys.append(value)
    return series


def _panel(key: str) -> str:
    return next((title for title, word in PANELS if word in key.lower()), "other")


def plot_curves(run_dir: str | Path, path: str | Path | None = None) -> Path | None:
    """Write the run's curves (one row per curve set: losses | accuracies | other, e.g. lr) to ``path``
    (default ``<run_dir>/curves.png``); None, writing nothing, when the run has no history."""
    run_dir = Path(run_dir)
    sets = curve_sets(run_dir)
    if not sets:
        return None
    import matplotlib  # lazily: runs without history, and imports of promptgen, never pay for it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    series = {name: _series(rows) for name, rows in sets.items()}
    titles = [t for t in (*(title for title, _ in PANELS), "other")
              if any(_panel(key) == t for s in series.values() for key in s)]
    figure, axes = plt.subplots(len(sets), len(titles), figsize=(4.2 * len(titles), 2.6 * len(sets)),
                                squeeze=False)
    for row, (name, curves) in enumerate(series.items()):
        for column, title in enumerate(titles):
            ax = axes[row][column]
            keys = [key for key in curves if _panel(key) == title]
            if not keys:
                ax.axis("off")
                continue
            for key in keys:
                xs, ys = curves[key]
                ax.plot(xs, ys, marker="o", markersize=3, label=key)
            if title == "other" and all(y > 0 for key in keys for y in curves[key][1]):
                ax.set_yscale("log")  # learning rates span decades (warm-up, cosine decay)
            ax.set_title(f"{name}: {title}", fontsize=9)
            ax.set_xlabel(X, fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, frameon=False)
    figure.tight_layout()
    target = Path(path) if path is not None else run_dir / PNG
    figure.savefig(target, dpi=100)
    plt.close(figure)
    return target


def write_tensorboard(run_dir: str | Path, log_dir: str | Path) -> Path | None:
    """The same series as TensorBoard scalars (tag ``<set>/<key>``, step = epoch) under ``log_dir``;
    None when the run has no history."""
    sets = curve_sets(run_dir)
    if not sets:
        return None
    SummaryWriter = require_tensorboard()
    log_dir = Path(log_dir)
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for name, rows in sets.items():
            for key, (xs, ys) in _series(rows).items():
                for x, y in zip(xs, ys):
                    writer.add_scalar(f"{name.replace(' / ', '/')}/{key}", y, global_step=int(x))
    finally:
        writer.close()
    return log_dir


TENSORBOARD_DIR = "tensorboard"  # inside a run directory (not in its manifest): `tensorboard --logdir runs/`


def require_tensorboard():
    """torch's SummaryWriter, or a clear error: a sweep asked for --log tensorboard checks before it runs."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch ships the writer, but it needs the tensorboard package
        raise MissingDependencyError(f"writing TensorBoard events needs the tensorboard package: "
                                     f"pip install tensorboard ({error})") from None
    return SummaryWriter
