"""The report steps read the batch files they are handed, by name, and nothing else in the batch folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiev.cli import main as aiev_main
from aiev.config import load_config
from aiev.report.batches import group


def test_files_are_grouped_by_batch_in_order_and_named_below_it(tmp_path):
    paths = [tmp_path / "results/batch_10/check_report.json", tmp_path / "results/batch_2/eval/teacher.json",
             tmp_path / "results/batch_2/student"]  # fmt: skip
    got = group(paths)
    assert [b.index for b in got] == [2, 10]
    assert sorted(got[0].files) == ["eval/teacher.json", "student"]
    assert got[1].path("check_report.json") == paths[0]
    assert got[1].path("decontam_report.json") is None
    assert got[1].json("check_report.json") == {}  # handed over but not written: empty, not an error


def test_a_path_outside_any_batch_folder_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="not inside a batch folder"):
        group([tmp_path / "results/seeds/dedup_report.json"])
    with pytest.raises(ValueError, match="two folders for batch 0"):
        group([tmp_path / "a/batch_0/x.json", tmp_path / "b/batch_0/x.json"])


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
            "--batch-files", str(batch / "generate_report.json"), "--benchmarks",
            "--dedup-report", str(tmp_path / "dedup.json"), "--batches-report", str(tmp_path / "batches.json"),
            "--output", str(out), "--markdown", str(tmp_path / "summary.md")]  # fmt: skip
    assert aiev_main(argv) == 0
    row = json.loads(Path(out).read_text())["batches"][0]
    assert (row["batch"], row["passed"], row["rejected"]) == (0, 3, 1)
    assert not row.get("requests")
