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
