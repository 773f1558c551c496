"""The training part's step: ``aiev train`` (rules/train.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sft", action="append", required=True, help="SFT records JSONL (repeatable: cumulative)")
    p.add_argument("--output", required=True, help="the Hugging Face checkpoint directory to write")
    p.add_argument("--state-dir", dest="state_dir", required=True, help="DeepSpeed checkpoints, kept for resume")
    p.add_argument("--report", required=True)
    p.add_argument("--base-model", dest="base_model", help="start from this model (default: train.base_model)")
    p.add_argument("--previous", help="incremental: the previous batch's student (a trained or skipped directory)")
    p.add_argument("--launcher", default="scripts/launch_train.sh")
    override(p, "--max-steps", key="train.max_steps", type=int)
    override(p, "--procs-per-node", key="train.procs_per_node", type=int)
    override(p, "--nodes", key="train.nodes", type=int)


def _train(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.train import launch

    return launch.run(launch.TrainSettings.from_config(cfg), args)


STEPS = [
    Step("train", "full-parameter SFT of the student with DeepSpeed ZeRO-3 (torchrun, 1..N nodes)", _train_args,
         _train,
         lambda r: (f"{r['steps']} steps on {r['records']} records, world {r['world_size']}, final loss "
                    f"{r['final_loss']}") if r.get("trained") else r.get("reason", ""), report="report"),
]  # fmt: skip
