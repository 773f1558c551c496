"""The generation part's steps: ``aiev generate`` (one shard) and ``aiev merge-dialogues`` (rules/generate.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override

STAGES = ("teaching", "self-learning")


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", required=True, help="batch_K.jsonl of seeds")
    p.add_argument("--batch-index", dest="batch_index", type=int, default=None)
    p.add_argument("--shard", type=int, default=0)
    override(p, "--shards", key="generate.shards", type=int)
    p.add_argument(
        "--stage", choices=STAGES, default="teaching",
        help="teaching: the teacher (llm.teacher) plays both agents; self-learning: the student (llm.student)",
    )  # fmt: skip
    p.add_argument(
        "--state-dir", dest="state_dir", required=True,
        help="progress store and LLM cache (kept across failed runs: outside Snakemake's outputs)",
    )  # fmt: skip
    p.add_argument("--dialogues", required=True)
    p.add_argument("--rejects", required=True)
    p.add_argument("--report", required=True)
    override(p, "--max-rounds", key="generate.max_rounds", type=int)


def _generate(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.generate import shards
    from aiev.llm.agents import STAGE_ROLE
    from aiev.runtime import ModelSettings

    gen = cfg["generate"]
    settings = shards.GenerateSettings(
        stage=args.stage, model=ModelSettings.from_section(cfg["llm"], STAGE_ROLE[args.stage]), sandbox=cfg["sandbox"],
        max_rounds=gen["max_rounds"], shards=gen["shards"], concurrent_dialogues=gen["concurrent_dialogues"],
        sandbox_workers=gen["sandbox_workers"], llm_concurrency=cfg["llm"]["concurrency"],
    )  # fmt: skip
    return shards.run(settings, args)


def _merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard", nargs=3, action="append", required=True, metavar=("DIALOGUES", "REJECTS", "REPORT"),
        help="one shard's outputs; repeat in shard order",
    )  # fmt: skip
    p.add_argument("--dialogues", required=True)
    p.add_argument("--rejects", required=True)
    p.add_argument("--usage", required=True)
    p.add_argument("--report", required=True)


def _merge(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.generate import merge

    return merge.run(cfg["llm"], args)


STEPS = [
    Step("generate", "run the AIEV dialogues of one shard of a batch (resumable)", _generate_args, _generate,
         lambda r: f"shard {r['shard']}/{r['shards']}: {r['passed']} passed, {r['rejected']} rejected, "
         f"{len(r['bad_seeds'])} bad seeds", report="report"),
    Step("merge-dialogues", "merge a batch's shards into dialogues, rejects and usage", _merge_args, _merge,
         lambda r: f"{r['passed']} passed, {r['rejected']} rejected", report="report"),
]  # fmt: skip
