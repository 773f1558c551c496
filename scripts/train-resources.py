#!/usr/bin/env python3
"""What SLURM is asked for the paper's training job, as the workflow's own dry run prints it.

    python scripts/train-resources.py [--profile profiles/slurm] [--configfile config/paper.yaml]

From scratch a dry run stops at the `batches` checkpoint (which batches exist is known only once it ran), so this
copies the workflow into a temporary folder, lays out one finished batch there (the checkpoint's outputs and what
comes before them, a few seeds), and runs `snakemake --profile PROFILE --configfile CONFIG -n` for batch 0's
student. It prints the train job's block (its resources: nodes, tasks, gres, partition, memory, time) and
nothing is submitted. Needs snakemake and the slurm executor plugin (the project's venv)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPY = (
    "Snakefile",
    "config.yaml",
    "config",
    "rules",
    "profiles",
    "aiev",
    "schemas",
    "envs",
    "scripts",
    "containers",
    "docs",
)


def stage(root: Path) -> None:
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy2(src, root / name)
    seed = {"id": "s:0", "source": "staged", "kind": "instruction", "text": "Write add(a, b).", "provenance": {}}
    seeds = root / "results" / "seeds"
    (seeds / "batches").mkdir(parents=True)
    line = json.dumps(seed) + "\n"
    for path in (seeds / "seeds.jsonl", seeds / "dedup.jsonl", seeds / "batches" / "batch_0.jsonl"):
        path.write_text(line)
    (seeds / "seeds_report.json").write_text("{}")
    (seeds / "dedup_report.json").write_text("{}")
    (seeds / "batches_report.json").write_text(json.dumps({"batches": 1, "sizes": [1]}))
    old = time.time() - 3600
    for path in seeds.rglob("*"):
        os.utime(path, (old, old))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="profiles/slurm")
    ap.add_argument("--configfile", default="config/paper.yaml")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiev-resources-") as tmp:
        root = Path(tmp)
        stage(root)
        target = "results/batch_0/train_report.json"
        cmd = ["snakemake", "--profile", args.profile, "--configfile", args.configfile, "-n", target]
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        out = done.stdout + done.stderr
        block = re.search(r"^rule train:\n(?:^ +.*\n)+", out, re.M)
        if done.returncode != 0 or block is None:
            sys.stderr.write(out)
            print("no train job in the dry run", file=sys.stderr)
            return 1
        print(f"$ {' '.join(cmd)}   (one staged batch)")
        print(block.group(0).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
