"""The paper's training job, as the workflow's dry run asks SLURM for it (scripts/train-resources.py, quoted in
docs/cluster.md): 10 nodes, one task each, 4 GPUs per node, on the GPU partition."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_paper_training_job_asks_for_10_nodes_of_4_gpus():
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "train-resources.py")], capture_output=True,
                          text=True, env=env, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    resources = next(line for line in done.stdout.splitlines() if line.strip().startswith("resources:"))
    fields = dict(kv.split("=", 1) for kv in resources.split(":", 1)[1].replace(" ", "").split(","))
    assert (fields["nodes"], fields["tasks"], fields["gres"], fields["slurm_partition"]) == ("10", "10", "gpu:4", "gpu")
    assert fields["mpi"] == "srun" and fields["tasks_per_gpu"] == "0" and fields["cpus_per_task"] == "32"
    resources_doc = (REPO / "docs" / "cluster.md").read_text()
    assert "nodes=10, mpi=srun" in resources_doc.replace("\n      ", " ")
