"""The evaluation stage's step: ``aiev evaluate`` (rules/evaluate.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override


def _evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--role", choices=("teacher", "student"), required=True, help="the model scored (llm.ROLE)")
    p.add_argument("--test", required=True, help="a batch's test.jsonl (entries with problem and tests)")
    p.add_argument("--results", required=True, help="per-task results JSONL to write")
    p.add_argument("--summary", required=True, help="the summary JSON to write (n, passed, pass_at_1, model...)")
    p.add_argument("--state-dir", dest="state_dir", required=True, help="LLM cache and progress (kept for re-runs)")
    p.add_argument("--batch-index", dest="batch_index", type=int, default=None)
    override(p, "--max-tokens", key="evaluate.max_tokens", type=int)


def _evaluate(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.evaluate import passk

    return passk.run(
        cfg, role=args.role, test=args.test, results=args.results, summary=args.summary, state_dir=args.state_dir,
        batch=args.batch_index,
    )  # fmt: skip


def _line(r: dict[str, Any]) -> str:
    if not r["n"]:
        return f"{r['role']}: no test task (pass@1 undefined)"
    return f"{r['role']} {r.get('model')}: pass@1 = {r['passed']}/{r['n']} = {r['pass_at_1']:.3f}"


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    what = "generate: samples from a served model; score: evalplus's verdicts on a samples file"
    p.add_argument("action", choices=("generate", "score"), help=what)
    from aiev.evaluate.suites import SUITES

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
        from aiev.evaluate import samples

        if not args.state_dir:
            raise ValueError("benchmark generate needs --state-dir (the LLM cache)")
        return samples.generate(cfg, suite=args.suite, role=args.role, samples=args.samples, mode=args.mode,
                                state_dir=args.state_dir, report=args.output, data=args.data)  # fmt: skip
    from aiev.evaluate import suites

    if not args.output:
        raise ValueError("benchmark score needs --output")
    return suites.score(cfg, suite=args.suite, samples=args.samples, output=args.output, data=args.data)


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


STEPS = [Step("evaluate", "pass@1 of the teacher or the student on a batch's test split", _evaluate_args, _evaluate,
              _line),
         Step("benchmark", "benchmark samples and scores (HumanEval+, MBPP+, MultiPL-E, DS-1000), in the sandbox",
              _benchmark_args, _benchmark, _benchmark_line)]  # fmt: skip
