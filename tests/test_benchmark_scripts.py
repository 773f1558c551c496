"""The benchmark scripts whose figures README and docs quote still run: each at a small size, checked for the line
it prints its verdict on, and for the record it writes (benchmarks/record.py), here into a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch) -> Path:
    """The scripts' records go here, not into benchmarks/results/."""
    folder = tmp_path / "records"
    monkeypatch.setenv("AIEV_BENCHMARK_RESULTS", str(folder))
    return folder


def recorded(folder: Path, name: str) -> dict:
    doc = json.loads((folder / f"{name}.json").read_text())
    assert {"name", "script", "command", "date", "machine", "commit", "goal", "met", "figures"} <= set(doc)
    assert doc["machine"]["cores"] and doc["machine"]["kernel"] and doc["source"] == "measured"
    return doc


def script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def test_decontam_benchmark_runs_and_agrees_with_the_naive_loop(records):
    out = script("decontam.py", "--entries", "400", "--naive-entries", "6", "--workers", "1")
    assert "same set: True" in out and "fast step: 400 entries" in out
    doc = recorded(records, "decontam")
    assert doc["met"] is True and doc["figures"]["entries"] == 400
    assert doc["command"] == "python benchmarks/decontam.py --entries 400 --naive-entries 6 --workers 1"


def test_dedup_benchmark_runs_and_drops_no_original(records):
    out = script("dedup.py", "--n", "2000", "--workers", "1")
    assert "0 lost every seed, 0 planted copies missed" in out
    figures = recorded(records, "dedup")["figures"]
    assert figures["seeds"] == 2000 and figures["groups_lost"] == 0 and figures["copies_missed"] == 0


def test_demo_run_reads_the_runs_own_files_beside_the_goals(tmp_path, records):
    import os
    from datetime import datetime

    results = tmp_path / "results"
    results.mkdir()
    batch = {"batch": 0, "seeds": 172, "passed": 13, "prompt_cache": 0.731,
             "wall_seconds": {"generate": 1675.2, "train": 156.0, "evaluate_teacher": None}}  # fmt: skip
    (results / "summary.json").write_text(json.dumps({"batches": [batch]}))
    logs = tmp_path / ".snakemake" / "log"
    logs.mkdir(parents=True)
    log = logs / "2026-12-02T173557.144587.snakemake.log"
    log.write_text("1 of 2 steps (50%) done\n2 of 2 steps (100%) done\n")  # no Elapsed line: from name to mtime
    start = datetime(2026, 12, 2, 17, 35, 57).timestamp()
    os.utime(log, (start + 1230, start + 1230))
    (logs / "2026-12-02T180535.295169.snakemake.log").write_text("Creating report...\n")  # snakemake --report
    out = script("demo_run.py", "--workdir", str(tmp_path))
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "20.5 min, 13 of 172 dialogues passed" in lines["workflow (snakemake, after set-up)"]
    assert lines["workflow (snakemake, after set-up)"].endswith("NO")
    assert "generate 1675 s, train 156 s" in lines["batch 0: wall seconds by step"]
    cache = lines["batch 0: prompt tokens from the engines' caches"]
    assert "73.1%" in cache and ">= 85%" in cache and cache.endswith("NO")
    log.write_text(log.read_text() + "Complete log(s): x\nElapsed time: 0:14:26.5\n")  # snakemake's own count
    out = script("demo_run.py", "--workdir", str(tmp_path))
    assert "14.4 min, 13 of 172 dialogues passed" in out and "yes" in out
    doc = recorded(records, "demo_run")
    assert doc["figures"]["workflow (snakemake, after set-up)"] == "14.4 min, 13 of 172 dialogues passed"
    assert doc["met"] is False  # the prompt cache's share is below its goal


CI_LOG = """snakemake --lint
============================= slowest 20 durations =============================
169.32s call     tests/test_workflow.py::test_loop_each_branch[teacher-stays]
1 failed, 528 passed, 32 skipped, 6 deselected in 836.95s (0:13:56)

== the SLURM tests (tests/test_slurm.py, loop), run beside the others: exit 0
397.69s call     tests/test_slurm.py::test_the_tiny_loop_through_slurm_equals_a_local_run
1 passed, 566 deselected in 420.10s (0:07:00)

== the SLURM tests (tests/test_slurm.py, faults), run beside the others: exit 0
5 passed, 562 deselected in 950.50s (0:15:50)
"""


def test_ci_minutes_reads_each_session_of_the_test_log_beside_the_goal(tmp_path, records):
    log = tmp_path / "test.log"
    log.write_text(CI_LOG)
    out = script("ci_minutes.py", str(log))
    lines = out.splitlines()
    assert "the rest" in lines[0] and "13.9 min" in lines[0] and "1 failed, 528 passed" in lines[0]
    assert "loop" in lines[1] and "7.0 min" in lines[1]
    assert "faults" in lines[2] and "15.8 min" in lines[2]
    assert "15.8 min" in lines[3] and lines[3].endswith("NO")  # the sessions run at once: the longest counts
    log.write_text(CI_LOG.replace("950.50s", "700.00s"))
    assert script("ci_minutes.py", str(log)).splitlines()[-1].endswith("13.9 min  goal <= 15 min: yes")
    doc = recorded(records, "ci_minutes")
    assert doc["met"] is True and doc["figures"]["pytest, sessions at once (min)"] == 13.9


def test_verdicts_truth_measures_both_rules_against_the_plus_tests(tmp_path):
    """benchmarks/verdicts_truth.py on one task of each suite in two styles: right solutions kept by both rules, the
    notebook idiom's failing tests kept by the exit-code rule and not by check-tests, the figures written."""
    out = script("verdicts_truth.py", "--tasks", "1", "--styles", "plain,unittest_exit_false", "--per-kind", "1",
                 "--json", str(tmp_path / "truth.json"))  # fmt: skip
    assert "| all |" in out and "goal: wrong kept by check-tests" in out
    figures = json.loads((tmp_path / "truth.json").read_text())["figures"]
    assert figures["all"]["right"] > 0 and figures["all"]["wrong"] > 0
    notebook = figures["unittest_exit_false"]
    assert notebook["wrong_kept_exit"] == notebook["wrong"]  # exit 0 whatever failed
    assert notebook["wrong_kept_check"] <= figures["plain"]["wrong_kept_exit"]
    assert figures["all"]["right_kept_exit"] == figures["all"]["right"]
