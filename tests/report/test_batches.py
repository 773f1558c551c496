"""The report steps read the batch files they are handed, kind by kind, and nothing else in the batch folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiev.cli import main as aiev_main
from aiev.config import load_config
from aiev.report.batches import per_batch, read


def test_each_kind_is_one_file_per_batch_in_batch_order_and_an_absent_kind_is_none(tmp_path):
    checks = [tmp_path / "b0/check.json", tmp_path / "b1/check.json"]
    students = [tmp_path / "b0/student", tmp_path / "b1/student"]
    got = per_batch(check_reports=checks, students=students, stages=[])
    assert got == [{"check_reports": checks[0], "students": students[0], "stages": None},
                   {"check_reports": checks[1], "students": students[1], "stages": None}]  # fmt: skip
    assert read(got[1]["check_reports"]) == {}  # handed over but not written: empty, not an error
    assert read(got[1]["stages"]) == {}  # not handed over
    assert per_batch(check_reports=[], stages=[]) == []


def test_a_kind_without_one_file_per_batch_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="one file per batch"):
        per_batch(check_reports=[tmp_path / "a.json", tmp_path / "b.json"], stages=[tmp_path / "s.json"])


def test_the_summary_reads_only_what_it_was_handed(tmp_path):
    """A report lying in the batch folder but not handed over (its rule did not declare it) is not read."""
    batch = tmp_path / "results" / "batch_0"
    batch.mkdir(parents=True)
    (batch / "generate_report.json").write_text(json.dumps({"passed": 3, "rejected": 1}))
    (batch / "usage.json").write_text(json.dumps({"requests": 99}))  # on disk, never handed over
    (tmp_path / "dedup.json").write_text(json.dumps({"kept": 4}))
    (tmp_path / "batches.json").write_text(json.dumps({"batch_size": 4}))
    out = tmp_path / "summary.json"
    argv = ["summary", "--config", json.dumps({"summary": load_config({})["summary"]}),
            "--generate-reports", str(batch / "generate_report.json"), "--benchmarks",
            "--dedup-report", str(tmp_path / "dedup.json"), "--batches-report", str(tmp_path / "batches.json"),
            "--output", str(out), "--markdown", str(tmp_path / "summary.md")]  # fmt: skip
    assert aiev_main(argv) == 0
    row = json.loads(Path(out).read_text())["batches"][0]
    assert (row["batch"], row["passed"], row["rejected"]) == (0, 3, 1)
    assert not row.get("requests")
