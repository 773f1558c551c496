#!/usr/bin/env python3
"""The workflow's pictures, regenerated (``make dag``) or checked to be current (``--check``, run by the tests).

The DAG of this workflow depends on two checkpoints (``batches``: how many batches; ``decide_stage``: who
generates the next one), so Snakemake can only draw the whole of it once they have run. This script builds a
throwaway working directory with one seed, runs the cheap part for real (seeds, dedup, batches), records a stage
decision for the one batch, and then asks Snakemake for every rule's place in the graph, on a config with every
stage on (generation, training, evaluation, benchmarks). It writes:

* ``docs/dag.dot``: ``snakemake --rulegraph`` (Graphviz source);
* ``docs/dag.svg``: the picture README.md shows: that graph without its redundant edges (``tred``), with the two
  dependencies that go through checkpoints drawn dashed (:func:`picture`), by ``dot -Tsvg``;
* ``docs/dag.mmd``: ``snakemake --rulegraph mermaid-js`` (renders on GitHub and in Mermaid tools).

``--views DIR`` writes those three and the job-level views (``--dag`` as ``jobs.dot``, ``--d3dag`` as
``dag.d3.json``) to DIR instead; docs/dag.md says what each one is for.

``--check`` regenerates into a temporary place and fails, naming the file, when a committed one differs.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG = {
    "seeds": {"sources": [{"name": "local", "type": "jsonl", "path": "seeds.jsonl", "text_field": "problem"}]},
    "dedup": {"near": False, "workers": 1},
    "batches": {"batch_size": 8},
    "generate": {"enabled": True},
    "train": {"enabled": True},
    "evaluate": {"enabled": True},
    "benchmark": {"enabled": True, "models": ["final"], "suites": ["humaneval"]},
    "llm": {"teacher": {"serve": None, "base_url": "http://127.0.0.1:9/v1", "model": "teacher"}},
}


def snakemake(workdir: Path, *args: str) -> str:
    cmd = ["snakemake", *args, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
           str(workdir / "config.yaml"), "--cores", "1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


def graph_source(workdir: Path, view: str) -> str:
    """One view of the whole graph; the text Snakemake prints before the graph (if any) is dropped."""
    text = snakemake(workdir, *view.split())
    start = {"--rulegraph": "digraph", "--dag": "digraph", "--rulegraph mermaid-js": "---", "--d3dag": "{"}[view]
    return canonical(text[text.index(start) :].rstrip() + "\n")


def canonical(text: str) -> str:
    """Edges in a fixed order: Snakemake lists them in set order, which changes from run to run (and dot lays a
    graph out by edge order), so the committed picture would never be "current"."""
    lines = text.splitlines()
    edges = sorted((ln for ln in lines if re.fullmatch(r"\s*\w+ -(>|->) \w+", ln)), key=_edge_key)
    it = iter(edges)
    return "\n".join(next(it) if re.fullmatch(r"\s*\w+ -(>|->) \w+", ln) else ln for ln in lines) + "\n"


def _edge_key(line: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", line))


def picture(dot: str) -> str:
    """The README picture's graph: Snakemake's rule graph with its redundant edges removed (Graphviz ``tred``: an
    edge implied by a longer path is dropped, so ``all`` no longer fans in from every rule), plus, dashed, the two
    dependencies that go through checkpoints and that a rule graph cannot show: the batch files the ``batches``
    checkpoint writes feed ``generate``, and ``decide_stage`` of batch k chooses who generates batch k + 1."""
    reduced = subprocess.run(["tred"], input=dot, capture_output=True, text=True, check=True).stdout
    ids = dict((label, node) for node, label in re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    style = "style=dashed, fontname=sans, fontsize=9"
    extra = [
        f'\t{ids["batches"]} -> {ids["generate"]} [{style}, label=" batch k"];',
        f'\t{ids["decide_stage"]} -> {ids["generate"]} [{style}, label=" batch k+1", constraint=false];',
    ]
    return reduced.rstrip().removesuffix("}").rstrip() + "\n" + "\n".join(extra) + "\n}\n"


def build(dest: Path, every_view: bool = False) -> dict[str, Path]:
    with tempfile.TemporaryDirectory(prefix="aiev-dag-") as tmp:
        work = Path(tmp)
        (work / "seeds.jsonl").write_text(json.dumps({"problem": "Write a function that adds two numbers."}) + "\n")
        (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))
        cmd = ["snakemake", "results/seeds/batches_report.json", "-s", str(REPO / "Snakefile"), "-d", str(work),
               "--configfile", str(work / "config.yaml"), "--cores", "1"]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"seeding the throwaway run failed:\n{run.stdout}\n{run.stderr}")
        stage = work / "results" / "batch_0" / "stage.json"
        stage.parent.mkdir(parents=True)
        stage.write_text(json.dumps({"batch": 0, "stage": "teaching", "next": "teaching"}))
        files = {
            "dag.dot": graph_source(work, "--rulegraph"),
            "dag.mmd": graph_source(work, "--rulegraph mermaid-js"),
        }
        if every_view:  # the job-level graph and the d3 JSON (not committed: they grow with the batches)
            files["jobs.dot"] = graph_source(work, "--dag")
            files["dag.d3.json"] = graph_source(work, "--d3dag")
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, text in files.items():
        (dest / name).write_text(text)
        out[name] = dest / name
    svg = subprocess.run(["dot", "-Tsvg"], input=picture(files["dag.dot"]), capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    (dest / "dag.svg").write_text(svg)
    out["dag.svg"] = dest / "dag.svg"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if docs/dag.{dot,svg,mmd} are not current")
    ap.add_argument("--docs", type=Path, default=REPO / "docs")
    ap.add_argument("--views", type=Path, metavar="DIR",
                    help="write every view (also --dag: jobs.dot, --d3dag: dag.d3.json) to DIR instead")  # fmt: skip
    args = ap.parse_args()
    if shutil.which("dot") is None:
        sys.exit("graphviz's dot is missing: apt-get install graphviz")
    if not args.check:
        for path in build(args.views or args.docs, every_view=args.views is not None).values():
            print(f"wrote {path} ({path.stat().st_size} bytes)")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = build(Path(tmp))
        stale = []
        for name, path in fresh.items():
            committed = args.docs / name
            old = committed.read_text() if committed.exists() else ""
            if old != path.read_text():
                diff = difflib.unified_diff(
                    old.splitlines(), path.read_text().splitlines(), str(committed), "fresh", lineterm=""
                )
                stale.append("\n".join(list(diff)[:40]))
        if stale:
            print("\n\n".join(stale))
            print("the pictures are out of date: run `make dag` and commit docs/dag.*", file=sys.stderr)
            return 1
    print("docs/dag.dot, docs/dag.svg, docs/dag.mmd are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
