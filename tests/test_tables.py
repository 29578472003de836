"""Result tables are derived from records: mean over seeds with intervals, avg over targets, best in bold, a paired
test against the best; the statistics checked against values computed by hand."""

import math

import numpy as np
import pytest
import torch

from benchmarks import stats
from benchmarks.tables import LEGEND, accuracy_table
from promptgen.toolkit.evaluate import pack_correct, unpack_correct


def _records():
    rows = []
    for seed, (a, b) in enumerate([(0.80, 0.60), (0.90, 0.70)]):
        rows += [{"method": "spg", "target": "photo", "seed": seed, "test_accuracy": a},
                 {"method": "spg", "target": "sketch", "seed": seed, "test_accuracy": b}]
    rows += [{"method": "zero-shot", "target": "photo", "seed": 0, "test_accuracy": 0.70},
             {"method": "zero-shot", "target": "sketch", "seed": 0, "test_accuracy": 0.90}]
    return rows


def test_cells_are_mean_and_std_over_seeds_and_avg_is_over_targets_per_seed():
    table = accuracy_table(_records())
    assert table.rows == ("spg", "zero-shot") and table.columns == ("photo", "sketch", "avg")
    photo = table.cells[("spg", "photo")]
    assert (photo.mean, photo.count) == (pytest.approx(85.0), 2) and photo.std == pytest.approx(7.0711, abs=1e-3)
    assert table.cells[("spg", "avg")].mean == pytest.approx(75.0)  # seeds: 70, 80
    assert table.cells[("spg", "avg")].std == pytest.approx(7.0711, abs=1e-3)
    assert table.cells[("zero-shot", "avg")].mean == pytest.approx(80.0)


def test_markdown_bolds_the_best_of_each_column_and_csv_has_every_number():
    table = accuracy_table(_records())
    lines = table.markdown("digits-dg").splitlines()
    assert lines[0] == "digits-dg"
    # Without test image counts (records before per-image predictions) a cell has no interval; one seed says so.
    assert lines[4] == "| spg | **85.0** ± 7.1 | 65.0 ± 7.1 | 75.0 ± 7.1 |"
    assert lines[5] == "| zero-shot | 70.0 (1 seed) | **90.0** (1 seed) | **80.0** (1 seed) |"
    assert lines[-1] == LEGEND
    assert table.csv().splitlines()[0].startswith("method,photo_mean,photo_std,photo_low,photo_high,photo_seeds,")
    assert table.csv().splitlines()[1].startswith("spg,85.0000,7.0711,,,2,,65.0000,7.0711")


def test_missing_cells_show_a_dash_and_no_average():
    table = accuracy_table(_records()[:1], targets=["photo", "sketch"])
    assert table.markdown().splitlines()[-3] == "| spg | **80.0** (1 seed) | – | – |"


def test_average_over_datasets_is_each_datasets_avg_per_seed_then_over_datasets():
    from benchmarks.tables import average_over_datasets

    other = [{"method": "spg", "target": "day", "seed": seed, "test_accuracy": value}
             for seed, value in enumerate([0.40, 0.50])]
    other.append({"method": "zero-shot", "target": "day", "seed": 0, "test_accuracy": 0.30})
    table = average_over_datasets({"digits-dg": _records(), "digits-traps": other})
    assert table.columns == ("digits-dg", "digits-traps", "avg")
    assert table.cells[("spg", "digits-dg")].mean == pytest.approx(75.0)  # seeds 70, 80: the dataset's own avg
    assert table.cells[("spg", "digits-traps")].mean == pytest.approx(45.0)
    # per seed: (70 + 40) / 2 = 55, (80 + 50) / 2 = 65
    assert table.cells[("spg", "avg")].mean == pytest.approx(60.0)
    assert table.cells[("spg", "avg")].std == pytest.approx(7.0711, abs=1e-3)
    assert table.cells[("zero-shot", "avg")].mean == pytest.approx(55.0)  # (80 + 30) / 2, run once


# --- intervals and the paired test, against values computed by hand -----------------------------------------------

def test_wilson_interval_of_80_of_100():
    low, high = stats.wilson(0.8, 100)  # the textbook example: 80/100 -> [0.7112, 0.8666]
    assert (low, high) == (pytest.approx(0.71117, abs=1e-5), pytest.approx(0.86663, abs=1e-5))


def test_seeds_and_test_images_combine_with_welch_satterthwaite_degrees_of_freedom():
    # seeds 0.80, 0.90: s^2/k = 0.005/2 = 0.0025; images: 0.85 * 0.15 / 100 = 0.001275; SE^2 = 0.003775;
    # df = 0.003775^2 / (0.0025^2 / 1) = 2.2801; t(0.975, 2.2801) = 3.8338; half = 3.8338 * 0.061441 = 0.23555
    low, high = stats.interval([0.80, 0.90], [(0.85, 100, 1.0)])
    assert low == pytest.approx(0.85 - 0.235553, abs=1e-5) and high == 1.0  # clipped at 100 %
    # one seed, two equally weighted domains: z * sqrt(0.25 * (0.7*0.3/50 + 0.9*0.1/30)) = 0.083156
    low, high = stats.interval([0.8], [(0.7, 50, 0.5), (0.9, 30, 0.5)])
    assert (low, high) == (pytest.approx(0.8 - 0.083156, abs=1e-5), pytest.approx(0.8 + 0.083156, abs=1e-5))


def test_mcnemar_exact_and_the_sign_flip_test_it_is_a_case_of():
    # 10 images only the first got right, 2 only the second: p = 2 * P(Bin(12, 1/2) <= 2) = 2 * 79 / 4096
    assert stats.mcnemar_exact(10, 2) == pytest.approx(158 / 4096)
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(3, 3) == 1.0
    differences = np.array([1] * 10 + [-1] * 2 + [0] * 30)
    assert stats.sign_flip(differences) == pytest.approx(158 / 4096)
    # Fractional differences (several seeds) take random flips: close to the exact value of the same data.
    assert stats.sign_flip(differences * 0.5, np.full(42, 1 / 42)) == pytest.approx(158 / 4096, abs=0.01)
    assert stats.sign_flip(differences * 0.5, flips=2000, seed=3) == stats.sign_flip(differences * 0.5, flips=2000,
                                                                                    seed=3)


def test_per_image_predictions_round_trip():
    correct = torch.tensor([True, False, True, True, False, False, True, False, True])
    packed = pack_correct(correct, [f"img{i}" for i in range(9)])
    assert packed["images"] == 9 and (unpack_correct(packed) == correct.numpy()).all()
    assert pack_correct(correct, [f"other{i}" for i in range(9)])["samples"] != packed["samples"]


def _row(method, target, correct, seed=0):
    correct = torch.tensor(correct, dtype=torch.bool)
    part = {"key": target, "accuracy": correct.float().mean().item(), "images": len(correct), "weight": 1.0,
            "predictions": pack_correct(correct, [f"{target}/{i}" for i in range(len(correct))])}
    return {"method": method, "target": target, "seed": seed, "test_accuracy": part["accuracy"], "parts": [part]}


def test_the_table_marks_a_row_below_the_best_by_the_paired_test_and_not_a_tie():
    # 40 photo images. best: 30 right; worse: the same 30 minus 10, plus 2 others (10 vs 2 discordant: p = 0.0386);
    # close: the same 30 minus 1, plus 1 other (1 vs 1: p = 1).
    best = [True] * 30 + [False] * 10
    worse = [False] * 10 + [True] * 20 + [True] * 2 + [False] * 8
    close = [False] + [True] * 29 + [True] + [False] * 9
    rows = [_row("best", "photo", best), _row("worse", "photo", worse), _row("close", "photo", close)]
    table = accuracy_table(rows)
    assert table.cells[("worse", "photo")].p_vs_best == pytest.approx(158 / 4096)
    assert table.cells[("close", "photo")].p_vs_best == 1.0
    assert table.cells[("best", "photo")].p_vs_best is None
    lines = table.markdown().splitlines()
    low, high = (100 * v for v in stats.wilson(0.75, 40))
    assert lines[2] == f"| best | **75.0** [{low:.1f}, {high:.1f}] (1 seed) | **75.0** [{low:.1f}, {high:.1f}] (1 seed) |"
    assert lines[3].startswith("| worse | 55.0 [") and "]† (1 seed) |" in lines[3]
    assert "†" not in lines[4]
    # the avg column of one target pairs the same images: the same p value
    assert table.cells[("worse", "avg")].p_vs_best == pytest.approx(158 / 4096)


def test_no_paired_test_where_the_images_differ_or_predictions_are_missing():
    a, b = _row("a", "photo", [True] * 8 + [False] * 2), _row("b", "photo", [True] * 5 + [False] * 5)
    b["parts"][0]["predictions"] = pack_correct(torch.tensor([True] * 5 + [False] * 5), [f"x{i}" for i in range(10)])
    assert accuracy_table([a, b]).cells[("b", "photo")].p_vs_best is None
    b["parts"][0]["predictions"] = None
    cell = accuracy_table([a, b]).cells[("b", "photo")]
    assert cell.p_vs_best is None and cell.low is not None  # the interval needs only the image count


def test_seeds_of_a_method_are_averaged_per_image_for_the_paired_test():
    best = [_row("best", "photo", [True] * 20 + [False] * 20, seed) for seed in (0, 1)]
    worse = [_row("worse", "photo", [True] * 8 + [False] * 32, 0), _row("worse", "photo", [True] * 12 + [False] * 28, 1)]
    table = accuracy_table(best + worse)
    cell = table.cells[("worse", "photo")]
    assert cell.count == 2 and cell.mean == pytest.approx(25.0) and cell.p_vs_best < 0.05
    # images 0-7 both right in every seed, 8-11 right in one worse seed (difference 0.5), 12-19 only best (1.0)
    assert not math.isnan(cell.low) and cell.low < 25.0 < cell.high
