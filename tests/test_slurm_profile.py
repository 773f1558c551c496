"""profiles/slurm at the paper's scale, checked without a cluster: the exact sbatch line the executor plugin
(2.8.0) builds from the profile's resources for the 10-node x 4-GPU training job and the one-GPU evaluation job,
and the srun/torchrun line the launcher then runs inside the allocation (tests/train/test_train.py checks that
line too). The real SLURM runs are in tests/test_slurm.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


class Resources(dict):
    def __getattr__(self, name: str):
        return self[name]


def profile_resources(rule: str, **rule_resources) -> Resources:
    """A job's resources as Snakemake resolves them on the first attempt: the rule's own, then the profile's
    default-resources under them and its set-resources for the rule over them."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())

    def value(v):
        return eval(v, {}, {"attempt": 1}) if isinstance(v, str) and "attempt" in v else v

    res = {k: value(v) for k, v in profile["default-resources"].items()}
    res.update(rule_resources)
    res.update({k: value(v) for k, v in profile["set-resources"].get(rule, {}).items()})
    return Resources(res)


def sbatch_line(rule: str, **rule_resources) -> str:
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    res = profile_resources(rule, **rule_resources)
    job = SimpleNamespace(resources=res, threads=1, name=rule)
    params = {"run_uuid": "RUN", "slurm_logfile": f"results/logs/slurm/rule_{rule}/%j.log",
              "comment_str": f"rule_{rule}", "account": f"-A {res['slurm_account']}",
              "partition": f"-p {res['slurm_partition']}", "workdir": "/work"}  # fmt: skip
    return get_submit_command(job, params)


def test_the_ten_node_training_job():
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["train"]
    assert (paper["nodes"], paper["procs_per_node"]) == (10, 4)
    # rules/train.smk: nodes and tasks = train.nodes
    line = sbatch_line("train", nodes=paper["nodes"], tasks=paper["nodes"])
    assert line == (
        "sbatch --parsable --job-name RUN --output results/logs/slurm/rule_train/%j.log --export=ALL "
        "--comment rule_train -A my_account -p gpu -t 1440 --mem 400000 --nodes=10 --ntasks=10 "
        "--cpus-per-task=32 -D /work"
    )
    # the GPUs: the plugin appends --gres from the `gres` resource (per node); no hidden --ntasks-per-gpu
    res = profile_resources("train", nodes=10, tasks=10)
    assert res["gres"] == "gpu:4" and res["tasks_per_gpu"] == 0 and res["mpi"] == "srun"
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    assert set_gres_string(SimpleNamespace(resources=res)).strip() == "--gres=gpu:4"


def test_the_one_gpu_evaluation_job():
    line = sbatch_line("evaluate")  # one task (sbatch's default), no hidden --ntasks-per-gpu (tasks_per_gpu: 0)
    assert line.endswith(" -p gpu -t 120 --mem 64000 --cpus-per-task=8 -D /work") and "--ntasks" not in line
