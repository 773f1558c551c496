"""The stage decision's step: ``aiev decide-stage`` (rules/stage.smk, the checkpoint)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override


def _decide_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="the teacher's evaluation summary JSON")
    p.add_argument("--student", required=True, help="the student's evaluation summary JSON (same test split)")
    p.add_argument("--previous", help="the stage.json of the batch before (its 'next' is this batch's stage)")
    p.add_argument("--output", required=True, help="stage.json to write")
    p.add_argument("--batch-index", dest="batch_index", type=int, default=None)
    override(p, "--force", key="stage.force", choices=("teacher", "student"))


def _decide(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.stage import decide

    return decide.run(cfg["stage"], args)


STEPS = [
    Step("decide-stage", "teaching or self-learning for the next batch, from both pass@1 scores", _decide_args,
         _decide, lambda r: f"batch {r['batch']}: next = {r['next']} ({r['reason']})", report="output"),
]  # fmt: skip
