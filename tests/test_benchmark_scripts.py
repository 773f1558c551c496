"""The benchmark scripts whose figures README and docs quote still run: each at a small size, checked for the line
it prints its verdict on (a refactor of a step's `run()` once broke benchmarks/decontam.py without a test noticing)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def test_decontam_benchmark_runs_and_agrees_with_the_naive_loop():
    out = script("decontam.py", "--entries", "400", "--naive-entries", "6", "--workers", "1")
    assert "same set: True" in out and "fast step: 400 entries" in out


def test_dedup_benchmark_runs_and_drops_no_original():
    out = script("dedup.py", "--n", "2000", "--workers", "1")
    assert "0 lost every seed, 0 planted copies missed" in out


def test_demo_run_reads_the_runs_own_files_beside_the_goals(tmp_path):
    import json
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
