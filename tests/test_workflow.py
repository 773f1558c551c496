"""The Snakemake workflow, run for real on a tiny config: outputs, nothing stale, minimal re-runs."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from .conftest import write_jsonl

pytestmark = pytest.mark.workflow


def smk(repo: Path, workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), "--cores", "1", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def planned_jobs(out: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> count from the 'Job stats' table of a dry run."""
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if m[0] != "total"}


def test_real_run_then_nothing_stale_then_only_batching_reruns(repo, tmp_path, tool_env):
    write_jsonl(
        tmp_path / "seeds.jsonl",
        [
            {"problem": "Write a function that merges two sorted lists into one sorted list."},
            {"problem": "Write a function that merges two sorted lists into one sorted list."},
            {"problem": "Implement a stack with push, pop and a constant-time max operation."},
        ],
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text((repo / "tests" / "data" / "workflow.yaml").read_text())

    smk(repo, tmp_path, tool_env, "--configfile", str(cfg))
    res = tmp_path / "results" / "seeds"
    batch_files = sorted((res / "batches").glob("batch_*.jsonl"))
    dedup_report = json.loads((res / "dedup_report.json").read_text())
    assert dedup_report["dropped_exact"] == 1
    kept = dedup_report["kept"]
    sizes = [len(p.read_text().splitlines()) for p in batch_files]
    assert sum(sizes) == kept and max(sizes) == 8 and len(batch_files) == -(-kept // 8)
    for name in ("seeds", "dedup", "batches"):
        assert (tmp_path / "results" / "logs" / f"{name}.log").exists()

    # a second invocation finds nothing to do
    assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n")) == {}

    # changing batch_size re-runs only the batching (and the target rule), not seeds or dedup
    data = yaml.safe_load(cfg.read_text())
    data["batches"]["batch_size"] = 5
    cfg.write_text(yaml.safe_dump(data))
    assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n")) == {
        "batches": 1,
        "all": 1,
    }
    seeds_mtime = (res / "seeds.jsonl").stat().st_mtime_ns
    smk(repo, tmp_path, tool_env, "--configfile", str(cfg))
    assert (res / "seeds.jsonl").stat().st_mtime_ns == seeds_mtime
    sizes = [len(p.read_text().splitlines()) for p in sorted((res / "batches").glob("batch_*.jsonl"))]
    assert max(sizes) == 5 and sum(sizes) == kept and len(sizes) == -(-kept // 5)
