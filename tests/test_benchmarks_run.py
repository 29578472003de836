"""python -m benchmarks.run: the suites run end to end and write their tables and records."""

import json

from benchmarks import run


def test_default_suite_writes_table_and_record(tmp_path, capsys):
    assert run.main(["--quiet", "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "default" / "record.json").read_text())
    assert set(record["accuracy"]) == {"handwritten", "typeset", "photo", "sketch"}
    assert record["fingerprint"].startswith("tiny-clip-digits@")
    assert all(0.0 <= value <= 1.0 for value in record["accuracy"].values())
    table = (tmp_path / "default" / "table.md").read_text()
    assert "| zeroshot |" in table and table.strip() in capsys.readouterr().out


def test_truncation_suite_reports_ratio_and_difference(tmp_path):
    assert run.main(["--suite", "truncation", "--classes", "7", "40", "--repeats", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "truncation" / "record.json").read_text())["rows"]
    assert [row["classes"] for row in rows] == [7, 40]
    for row in rows:
        assert row["tokens_truncated"] < row["tokens_full"] == 32  # tiny-clip-digits' context length
        assert row["max_abs_diff"] <= 1e-4
        assert row["speedup"] > 0


def test_backbone_errors_exit_cleanly(tmp_path, capsys):
    assert run.main(["--backbone", "openclip", "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown open_clip model 'nope'" in capsys.readouterr().err
