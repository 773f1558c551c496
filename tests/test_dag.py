"""The four views of the workflow's graph (docs/dag.md), and README's picture checked to be current."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.workflow

LOOP = {"seeds", "dedup", "batches", "generate", "merge_dialogues", "check_tests", "decontaminate", "split", "format",
        "train", "evaluate", "decide_stage", "dataset", "summary", "plots", "benchmark_generate", "benchmark_score",
        "all"}  # fmt: skip


def test_every_view_and_the_committed_pictures_are_current(repo, tmp_path, tool_env):
    if shutil.which("dot") is None:
        pytest.skip("graphviz's dot is missing (scripts/system-deps.sh test installs it)")
    out = subprocess.run([sys.executable, str(repo / "scripts" / "dag.py"), "--views", str(tmp_path)], env=tool_env,
                         capture_output=True, text=True)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    rules = set(re.findall(r'label = "(\w+)"', (tmp_path / "dag.dot").read_text()))
    assert rules == LOOP, rules ^ LOOP
    mermaid = (tmp_path / "dag.mmd").read_text()
    assert "flowchart" in mermaid and set(re.findall(r"id\d+\[(\w+)\]", mermaid)) == LOOP
    # the job graph names the jobs' wildcards; the d3 JSON is nodes and edges (Snakemake 9.27: up to the checkpoint)
    jobs = (tmp_path / "jobs.dot").read_text()
    assert "generate\\nk: 0\\ns: 0" in jobs and "evaluate\\nwho: student" in jobs
    d3 = json.loads((tmp_path / "dag.d3.json").read_text())
    assert {n["value"]["rule"] for n in d3["nodes"]} >= {"seeds", "dedup", "batches"} and d3["edges"]
    svg = (tmp_path / "dag.svg").read_text()
    assert all(f">{rule}</text>" in svg for rule in LOOP)
    # README shows docs/dag.svg; it and its sources are what `make dag` makes now
    assert "![rule graph](docs/dag.svg)" in (repo / "README.md").read_text()
    for name in ("dag.dot", "dag.mmd", "dag.svg"):
        assert (repo / "docs" / name).read_text() == (tmp_path / name).read_text(), (
            f"docs/{name} is out of date: run `make dag` and commit it"
        )
