"""The evaluation part's step: ``aiev evaluate`` (rules/evaluate.smk)."""

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

    return passk.run(passk.EvaluateSettings.from_config(cfg, args.role), args)


def _line(r: dict[str, Any]) -> str:
    if not r["n"]:
        return f"{r['role']}: no test task (pass@1 undefined)"
    return f"{r['role']} {r.get('model')}: pass@1 = {r['passed']}/{r['n']} = {r['pass_at_1']:.3f}"


STEPS = [Step("evaluate", "pass@1 of the teacher or the student on a batch's test split", _evaluate_args, _evaluate,
              _line, report="summary")]  # fmt: skip
