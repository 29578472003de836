"""Result tables are derived from records: mean ± std over seeds, avg over targets, best in bold."""

import pytest

from benchmarks.tables import accuracy_table


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
    assert lines[4] == "| spg | **85.0 ± 7.1** | 65.0 ± 7.1 | 75.0 ± 7.1 |"
    assert lines[5] == "| zero-shot | 70.0 ± 0.0 | **90.0 ± 0.0** | **80.0 ± 0.0** |"
    assert table.csv().splitlines()[1].startswith("spg,85.0000,7.0711,65.0000,7.0711,75.0000")


def test_missing_cells_show_a_dash_and_no_average():
    table = accuracy_table(_records()[:1], targets=["photo", "sketch"])
    assert table.markdown().splitlines()[-1] == "| spg | **80.0 ± 0.0** | – | – |"


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
