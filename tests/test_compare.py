"""Any two methods side by side (benchmarks.compare): the pairwise matrix of paired tests and paired intervals with
Holm's correction, against values computed by hand on a 40-image toy; --compare through the command line on records
written by hand; and --selection choosing a search's selection methods (and so its runs)."""

import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import compare, protocols, run, stats, suites
from benchmarks.records import RecordStore
from benchmarks.tables import accuracy_table
from promptgen.components.registry import default_registry
from promptgen.toolkit.evaluate import pack_correct

# 40 photo images. strong: 30 right. middle: the same 30 minus images 0-9, plus images 30-31 (10 vs 2 discordant).
# weak: images 0-9 only (strong alone got 20, weak alone none; middle alone 22, weak alone 10).
STRONG = [True] * 30 + [False] * 10
MIDDLE = [False] * 10 + [True] * 22 + [False] * 8
WEAK = [True] * 10 + [False] * 30
P_STRONG_MIDDLE = 2 * sum(math.comb(12, i) for i in range(3)) / 2**12  # McNemar: 2 * P(Bin(12, 1/2) <= 2)
P_STRONG_WEAK = 2 / 2**20  # 20 vs 0
P_MIDDLE_WEAK = 2 * sum(math.comb(32, i) for i in range(11)) / 2**32  # 22 vs 10


def _row(method, target, correct, seed=0):
    """One run's table row with its packed per-image predictions (as tests/test_tables.py builds them)."""
    correct = torch.tensor(correct, dtype=torch.bool)
    part = {"key": target, "accuracy": correct.float().mean().item(), "images": len(correct), "weight": 1.0,
            "predictions": pack_correct(correct, [f"{target}/{i}" for i in range(len(correct))])}
    return {"method": method, "target": target, "seed": seed, "test_accuracy": part["accuracy"], "parts": [part]}


def _toy_pairs():
    rows = [_row("strong", "photo", STRONG), _row("middle", "photo", MIDDLE), _row("weak", "photo", WEAK)]
    return {(p.column, p.method_a, p.method_b): p
            for p in compare.column_pairs(rows, ["photo"], ["strong", "middle", "weak"], "digits-dg")}


def test_holm_multiplies_the_ith_smallest_by_m_minus_i_plus_1_and_keeps_the_order():
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to 0.06
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm([0.5, None, 0.9]) == [pytest.approx(1.0), None, pytest.approx(1.0)]  # None: not in the family
    assert stats.holm([]) == []


def test_every_pair_gets_the_paired_test_by_hand_and_holm_over_the_three_pairs_of_its_column():
    pairs = _toy_pairs()
    assert set(pairs) == {(column, a, b) for column in ("photo", "avg")
                          for a, b in (("strong", "middle"), ("strong", "weak"), ("middle", "weak"))}
    for column in ("photo", "avg"):  # avg of one target pairs the same images
        sm, sw, mw = (pairs[(column, *names)] for names in (("strong", "middle"), ("strong", "weak"),
                                                            ("middle", "weak")))
        assert (sm.p, sw.p, mw.p) == (pytest.approx(P_STRONG_MIDDLE), pytest.approx(P_STRONG_WEAK),
                                      pytest.approx(P_MIDDLE_WEAK))
        assert sm.p == pytest.approx(158 / 4096) and mw.p == pytest.approx(0.0501, abs=1e-4)
        # Holm over 3 pairs: sorted strong-weak x 3, strong-middle x 2, middle-weak x 1 raised to the one before
        assert sw.p_holm == pytest.approx(3 * P_STRONG_WEAK)
        assert sm.p_holm == pytest.approx(2 * P_STRONG_MIDDLE)
        assert mw.p_holm == pytest.approx(2 * P_STRONG_MIDDLE)  # 0.0501 < 0.0771: raised to keep the order
        assert sw.differs and not sm.differs and not mw.differs  # strong vs middle: p 0.039 alone, 0.077 after Holm
        assert {sm.family, sw.family, mw.family} == {3}
        assert (sm.mean_a, sm.mean_b, sm.diff) == (pytest.approx(75.0), pytest.approx(55.0), pytest.approx(20.0))


def test_the_interval_is_the_normal_interval_of_the_mean_per_image_difference():
    pair = _toy_pairs()[("photo", "strong", "middle")]
    # differences: +1 x 10, -1 x 2, 0 x 28: mean 0.2, sample variance (12 - 40 * 0.2^2) / 39, SE^2 = that / 40
    half = stats.Z * math.sqrt((12 - 40 * 0.04) / 39 / 40)
    assert (pair.low, pair.high) == (pytest.approx(100 * (0.2 - half)), pytest.approx(100 * (0.2 + half)))
    assert pair.low == pytest.approx(4.0, abs=0.01) and pair.high == pytest.approx(36.0, abs=0.01)
    swapped = pair.swapped()
    assert (swapped.method_a, swapped.diff, swapped.low, swapped.high) == \
        ("middle", pytest.approx(-20.0), pytest.approx(-pair.high), pytest.approx(-pair.low))


def test_several_seeds_average_per_image_and_add_each_methods_seed_spread():
    # first: seeds of 20 and 24 right; second: one run of 16 (a method run once lends it to every seed)
    first = [_row("first", "photo", [True] * 20 + [False] * 20, 0), _row("first", "photo", [True] * 24 + [False] * 16, 1)]
    second = [_row("second", "photo", [True] * 16 + [False] * 24)]
    (pair,) = [p for p in compare.column_pairs(first + second, ["photo"], ["first", "second"], "d") if p.column == "photo"]
    # per image, first's correctness over its seeds: 1 on 0-19, 0.5 on 20-23, 0 after; minus second's 1 on 0-15
    d = np.array([0.0] * 16 + [1.0] * 4 + [0.5] * 4 + [0.0] * 16)
    assert pair.diff == pytest.approx(100 * d.mean()) == pytest.approx(15.0)
    images = d.var(ddof=1) / 40
    seeds = np.var([row["test_accuracy"] for row in first], ddof=1) / 2  # 0.5, 0.6; second's one run: no spread
    df = (images + seeds) ** 2 / (seeds**2 / 1)
    half = stats.t_quantile(df) * math.sqrt(images + seeds)
    assert (pair.low, pair.high) == (pytest.approx(100 * (d.mean() - half)), pytest.approx(100 * (d.mean() + half)))
    assert pair.p == pytest.approx(stats.sign_flip(d, np.full(40, 1 / 40)))


def test_runs_that_kept_no_predictions_get_a_difference_but_no_interval_or_test():
    rows = [_row("a", "photo", STRONG), _row("b", "photo", MIDDLE)]
    rows[1]["parts"][0]["predictions"] = None
    (pair,) = [p for p in compare.column_pairs(rows, ["photo"], ["a", "b"], "d") if p.column == "photo"]
    assert pair.diff == pytest.approx(20.0) and (pair.low, pair.high, pair.p, pair.p_holm, pair.family) == \
        (None, None, None, None, 0)


def test_the_matrix_shows_row_minus_column_with_a_dagger_after_holm_and_the_csv_every_number():
    rows = [_row("strong", "photo", STRONG), _row("middle", "photo", MIDDLE), _row("weak", "photo", WEAK)]
    pairs = compare.column_pairs(rows, ["photo"], ["strong", "middle", "weak"], "digits-dg")
    text = compare.markdown(pairs, {"digits-dg": "digits-dg"})
    lines = text.splitlines()
    assert lines[0] == "Pairwise differences, digits-dg: avg test accuracy (%), row − column; † after Holm over its 3 " \
                       "tested pairs"
    assert lines[2] == "| row − column | strong | middle | weak |"
    sm, sw, mw = (next(p for p in pairs if p.column == "avg" and (p.method_a, p.method_b) == names)
                  for names in (("strong", "middle"), ("strong", "weak"), ("middle", "weak")))
    assert lines[4] == (f"| strong | · | +20.0 [{sm.low:+.1f}, {sm.high:+.1f}] | "
                        f"+50.0 [{sw.low:+.1f}, {sw.high:+.1f}]† |")
    assert lines[6].startswith(f"| weak | -50.0 [{-sw.high:+.1f}, {-sw.low:+.1f}]† | -30.0 [")
    assert lines[-1] == compare.LEGEND and "Holm's correction over the tested pairs of its matrix" in lines[-1]
    assert lines[5].startswith("| middle | -20.0 [") and "†" not in lines[5]  # p 0.039 alone, 0.077 after Holm
    csv = compare.csv(pairs).splitlines()
    assert csv[0] == "dataset,column,method_a,method_b,mean_a,mean_b,diff,low,high,p,p_holm"
    assert csv[1] == (f"digits-dg,photo,strong,middle,75.0000,55.0000,20.0000,{sm.low:.4f},{sm.high:.4f},"
                      f"{P_STRONG_MIDDLE:.6g},{2 * P_STRONG_MIDDLE:.6g}")
    assert len(csv) == 1 + 2 * 3  # photo and avg, 3 pairs each
    # the table's own † (against the best alone, uncorrected) still marks middle below strong
    assert accuracy_table(rows).cells[("middle", "photo")].below_best


# --- --compare through the command line, on records written by hand ----------------------------------------------

REGISTRY = default_registry()
TWO_DATASETS = """description = "two datasets, three methods, records written by hand"
datasets = ["digits-dg", "digits-traps"]
methods = ["zero-shot", "coop", "spg"]
seeds = [0]
[backbone]
device = "cpu"
"""


def _correct(method: str, dataset: str, target: str) -> list[bool]:
    """The toy on digits-dg's photo (zero-shot weak, coop middle, spg-cgan strong); elsewhere drawn at random."""
    if (dataset, target) == ("digits-dg", "photo"):
        return {"zero-shot": WEAK, "coop": MIDDLE, "spg-cgan": STRONG}[method]
    rng = np.random.default_rng(zlib.crc32(f"{method}/{dataset}/{target}".encode()))
    return list(rng.random(40) < {"zero-shot": 0.5, "coop": 0.6, "spg-cgan": 0.7}[method])


def _hand_written_sweep(tmp_path, skip=()) -> tuple[str, Path]:
    """A suite file and its records under tmp_path/out, one per job (but ``skip``'s methods), written by hand."""
    path = tmp_path / "hand.toml"
    path.write_text(TWO_DATASETS)
    suite = suites.load(str(path))
    out = tmp_path / "out"
    store = RecordStore(out, suite=suite.name)
    for job in protocols.expand(suite, REGISTRY):
        if job.method in skip:
            continue
        (target,) = job.targets
        correct = torch.tensor(_correct(job.method, job.dataset, target))
        packed = pack_correct(correct, [f"{job.dataset}/{target}/{i}" for i in range(40)])
        store.write(job, {"status": "ok", "test_accuracy": {target: correct.float().mean().item()},
                          "test_predictions": {target: packed}, "sizes": {f"test/{target}": 40},
                          "fingerprint": "hand-written", "seconds": {}, "fit": {}})
    return str(path), out


def test_compare_answers_one_pair_in_every_dataset_and_column_from_the_records(tmp_path, capsys):
    path, out = _hand_written_sweep(tmp_path)
    assert run.main(["--suite", path, "--out", str(out), "--report", "--quiet", "--compare", "coop", "spg"]) == 0
    printed = capsys.readouterr().out
    lines = printed.splitlines()
    assert lines[1] == "coop vs spg-cgan, suite hand: test accuracy (%)"
    assert lines[2].startswith("diff: coop − spg-cgan in points, with its 95% paired interval")
    header = next(line for line in lines if line.startswith("dataset"))
    assert header.split() == ["dataset", "column", "coop", "spg-cgan", "diff", "95%", "interval", "p", "p", "(Holm)",
                              "Holm", "over"]
    rows = [line for line in lines if line.startswith(("digits-", "average over datasets"))]
    # the average over datasets (its datasets, then avg), then each dataset's targets and avg
    assert [row.split("  ")[0].strip() for row in rows] == ["average over datasets"] * 3 + ["digits-dg"] * 5 + \
        ["digits-traps"] * 5
    photo = next(row for row in rows if row.startswith("digits-dg") and " photo " in row).split()
    pair = _toy_pairs()[("photo", "strong", "middle")].swapped()  # coop − spg-cgan = middle − strong
    assert photo == ["digits-dg", "photo", "55.00", "75.00", "-20.00", f"[{pair.low:+.2f},", f"{pair.high:+.2f}]",
                     f"{P_STRONG_MIDDLE:.4f}", f"{2 * P_STRONG_MIDDLE:.4f}", "3", "pairs"]
    assert "| method |" not in printed  # the answer, not the table
    # every pair of every column in pairs.csv; the matrices in table.md after the main tables, and in index.html
    csv = (out / "pairs.csv").read_text().splitlines()
    assert len(csv) == 1 + 3 * (3 + 5 + 5)
    assert "average,avg,zero-shot,coop," in "\n".join(csv)
    table = (out / "table.md").read_text()
    heads = ["Pairwise differences, average over datasets", "Pairwise differences, digits-dg",
             "Pairwise differences, digits-traps"]
    assert table.index("Average test accuracy") < table.index(heads[0]) < table.index(heads[1]) < \
        table.index(heads[2]) < table.index("Per method:")
    assert (out / "pairs.md").read_text().startswith(heads[0])
    html = (out / "index.html").read_text()
    assert "<h2>pairs.md</h2>" in html and html.count(heads[1]) == 1  # once: its own section, not table.md's too
    # after a sweep (here one whose jobs are all done already) the same answer
    assert run.main(["--suite", path, "--out", str(out), "--quiet", "--compare", "spg-cgan", "coop"]) == 0
    after = capsys.readouterr().out
    assert "24 jobs, 24 already done, running 0" in after
    assert any(line.split()[:5] == ["digits-dg", "photo", "75.00", "55.00", "+20.00"] for line in after.splitlines())


def test_compare_refuses_a_method_without_records_in_one_line_naming_it(tmp_path, capsys):
    path, out = _hand_written_sweep(tmp_path, skip=("zero-shot",))
    for names, messages in (
            (["coop", "dpl"], ["--compare: method 'dpl' is not a method of suite hand; its methods: zero-shot, coop, "
                               "spg-cgan"]),
            (["zero-shot", "coop"], ["--compare: method 'zero-shot' has no finished record of suite hand under "
                                     f"{out / 'records'}; methods that have one: coop, spg-cgan"]),
            (["coop", "coop"], ["--compare: 'coop' twice; name two different methods"])):
        assert run.main(["--suite", path, "--out", str(out), "--report", "--compare", *names]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1 and all(message in error for message in messages), error
    assert not (out / "table.md").exists()  # refused before anything was written


def test_compare_refuses_a_dry_run_and_a_perf_suite(tmp_path, capsys):
    path, out = _hand_written_sweep(tmp_path)
    assert run.main(["--suite", path, "--out", str(out), "--dry-run", "--compare", "coop", "spg"]) == 2
    assert "drop --dry-run" in capsys.readouterr().err
    assert run.main(["--suite", "perf", "--out", str(tmp_path / "perf"), "--compare", "coop", "spg"]) == 2
    assert "is a perf suite" in capsys.readouterr().err


# --- --selection --------------------------------------------------------------------------------------------------

def _search_suite(tmp_path, extra: str = "") -> str:
    path = tmp_path / "plain.toml"
    path.write_text(f'description = "a plain suite"\ndataset = "digits-dg"\nmethods = ["zero-shot", "coop"]\n'
                    f'targets = ["photo"]\n{extra}\n[backbone]\ndevice = "cpu"\n[overrides.digits-dg]\nper_class = 10\n')
    return str(path)


def test_selection_on_the_command_line_chooses_the_methods_and_so_the_runs(tmp_path, capsys):
    path, out = _search_suite(tmp_path), str(tmp_path / "out")
    assert run.main(["--suite", path, "--out", out, "--dry-run", "--trials", "2", "--selection", "training-domain"]) == 0
    text = capsys.readouterr().out
    assert "3 runs (a method with no search space runs trial 0 only) and 0 leave-one-domain-out runs; selection: " \
           "training-domain" in text
    assert ".loo-" not in text  # no leave-one-domain-out job listed
    # coop's 2 trials x 3 sources, the runs leaving out leave-one-domain-out saves (zero-shot: 1 trial x 3)
    assert "selection training-domain: 0 extra runs (reads each run's own source val) (leave-one-domain-out, not " \
           "chosen, would add 9 runs)" in text
    assert run.main(["--suite", path, "--out", out, "--dry-run", "--trials", "2", "--selection", "oracle",
                     "leave-one-domain-out"]) == 0
    text = capsys.readouterr().out
    assert "selection oracle: 0 extra runs (reads the held-out val split); leave-one-domain-out: +9 runs" in text
    assert "and 9 leave-one-domain-out runs; selection: oracle, leave-one-domain-out" in text


def test_selection_replaces_a_suites_hparams_selection_and_is_refused_without_a_search(tmp_path, capsys):
    path = _search_suite(tmp_path, 'hparams = { trials = 2, selection = ["leave-one-domain-out", "oracle"] }')
    suite = suites.load(path)
    assert sum(1 for job in protocols.expand(suite, REGISTRY) if job.loo_for) == 9
    assert run.main(["--suite", path, "--out", str(tmp_path / "out"), "--dry-run", "--selection", "oracle"]) == 0
    text = capsys.readouterr().out
    assert "selection: oracle" in text and "0 leave-one-domain-out runs" in text
    plain = _search_suite(tmp_path)
    assert run.main(["--suite", plain, "--out", str(tmp_path / "out"), "--dry-run", "--selection", "oracle"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--selection: suite plain is not a search" in error
    assert "add --trials N" in error
    with pytest.raises(SystemExit) as exited:  # argparse's one-line error (promptgen.cli.common.Parser)
        run.main(["--suite", plain, "--dry-run", "--trials", "2", "--selection", "orcale"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "invalid choice: 'orcale'" in error


def test_a_searchs_pairs_compare_the_trials_its_first_selection_method_took(tmp_path, capsys):
    path = _search_suite(tmp_path, 'hparams = { trials = 2, selection = ["training-domain"] }')
    suite = suites.load(path)
    out = tmp_path / "out"
    store = RecordStore(out, suite=suite.name)
    # coop's trial 1 has the better source val (0.9) and the toy's MIDDLE answers; trial 0 would have been STRONG
    answers = {("zero-shot", 0): (0.5, WEAK), ("coop", 0): (0.8, STRONG), ("coop", 1): (0.9, MIDDLE)}
    for job in protocols.expand(suite, REGISTRY):
        val, correct = answers[(job.method, job.trial)]
        correct = torch.tensor(correct)
        store.write(job, {"status": "ok", "val_accuracy": val, "test_accuracy": {"photo": correct.float().mean().item()},
                          "test_predictions": {"photo": pack_correct(correct, [f"photo/{i}" for i in range(40)])},
                          "sizes": {"test/photo": 40}, "checkpoints": {"loops": []}, "fingerprint": "hand-written",
                          "seconds": {}, "fit": {}})
    assert run.main(["--suite", path, "--out", str(out), "--report", "--quiet", "--compare", "coop", "zero-shot"]) == 0
    printed = capsys.readouterr().out
    assert "coop vs zero-shot, suite plain (a search: the trials selected by training-domain)" in printed
    photo = next(line for line in printed.splitlines() if line.startswith("digits-dg") and " photo " in line).split()
    assert photo[:5] == ["digits-dg", "photo", "55.00", "25.00", "+30.00"]  # trial 1 (MIDDLE) against WEAK
    assert photo[7] == f"{P_MIDDLE_WEAK:.4f}"
    assert "Pairwise differences, digits-dg, selected by training-domain" in (out / "table.md").read_text()
