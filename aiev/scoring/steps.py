"""The scoring part's step: ``aiev benchmark generate|score`` (rules/scoring.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    what = "generate: samples from a served model; score: evalplus's verdicts on a samples file"
    p.add_argument("action", choices=("generate", "score"), help=what)
    from aiev.scoring.scorers import SUITES

    p.add_argument("--suite", required=True, choices=SUITES)
    p.add_argument("--samples", required=True, help="evalplus samples JSONL (task_id + solution or completion)")
    p.add_argument("--output", help="score: the scores JSON; generate: a report JSON")
    p.add_argument("--role", choices=("teacher", "student"), default="student", help="generate: the model (llm.ROLE)")
    p.add_argument("--state-dir", dest="state_dir", help="generate: the LLM cache (kept for re-runs)")
    p.add_argument(
        "--mode",
        choices=("chat", "completion"),
        help="generate: how the model is prompted (default: llm.ROLE.mode; the base model: benchmark.base_mode)",
    )
    p.add_argument("--data", help="the suite's data file or directory (default: benchmark.data.SUITE)")
    override(p, "--limit", key="benchmark.limit", type=int)


def _benchmark(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "generate":
        from aiev.scoring import samples

        if not args.state_dir:
            raise ValueError("benchmark generate needs --state-dir (the LLM cache)")
        return samples.run(samples.SampleSettings.from_config(cfg, args.role, args.mode), args)
    from aiev.scoring import scorers

    if not args.output:
        raise ValueError("benchmark score needs --output")
    return scorers.run(cfg, args)


def _benchmark_line(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return f"{r['suite']}: skipped: {r['skipped']}"
    if "scored" in r:  # DS-1000
        left = f" ({r['n'] - r['scored']} skipped: {', '.join(r['skipped_libraries'])})" if not r["complete"] else ""
        return f"{r['suite']}: n = {r['scored']}{left}, pass@1 {r['pass@1']}"
    if "pass@1" in r:
        return f"{r['suite']}: n = {r['n']}, pass@1 {r['pass@1']}"
    if "base_pass@1" not in r:
        return f"{r['suite']}: {r['n']} samples from {r['model']} ({r['empty']} empty)"
    extra = f", {len(r['missing'])} without a sample" if r["missing"] else ""
    return f"{r['suite']}: n = {r['n']}, base pass@1 {r['base_pass@1']}, plus pass@1 {r['plus_pass@1']}{extra}"


STEPS = [Step("benchmark", "benchmark samples and scores (HumanEval+, MBPP+, MultiPL-E, DS-1000), in the sandbox",
              _benchmark_args, _benchmark, _benchmark_line, report="output")]  # fmt: skip
