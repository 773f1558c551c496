"""The verdicts against an outside truth: EvalPlus's plus tests decide whether a solution is right.

    python benchmarks/verdicts_truth.py [--tasks 20] [--styles all] [--workers 2] [--samples FILE] [--json OUT]

Entries are made from HumanEval+ and MBPP+ (the shared benchmark data: benchmarks/shared_data.py):
problem = the task's prompt;
tests = the task's base inputs with the canonical solution's outputs, written in each style instruct models write
tests in (:mod:`aiev.curate.styles`); solutions = the canonical one, and plausible wrong ones: mutants of the
canonical solution that pass the base tests but fail the plus tests (EvalPlus's own case), mutants that fail the
base tests too, and, with ``--samples``, a model's recorded solutions ({task_id, solution} per line). Truth = the
plus tests' verdict (the canonical outputs on the plus inputs, floats within the task's atol).

For each style and in all it prints, for the paper's rule (the program exits 0) and for ``aiev check-tests`` (an
entry is kept when no reason removes it): the share of wrong solutions kept and of right solutions kept, and the
share of right solutions kept among those whose tests check >= 3 distinct cases. Goal: check-tests keeps at most
a third of the wrong solutions the exit-code rule keeps, keeps >= 90% of the right ones whose tests check >= 3
cases, and its verdict does not depend on the style. Tasks whose outputs are floats, or whose inputs or outputs
are not Python literals, are left out (the styles compare with ``==``).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import platform
import subprocess
import sys
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import record  # noqa: E402
from shared_data import BENCHMARK_DATA  # noqa: E402

from aiev.config import load_config  # noqa: E402
from aiev.curate.checks import Checker  # noqa: E402
from aiev.curate.mutants import mutants  # noqa: E402
from aiev.curate.styles import STYLES, render  # noqa: E402
from aiev.interpreter import program_passed, run_batch, run_program  # noqa: E402
from aiev.sandbox import Limits, get_sandbox  # noqa: E402

DATA = BENCHMARK_DATA / "evalplus"
SUITES = {"humaneval+": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp+": "MbppPlus-v0.2.0.jsonl.gz"}
MAX_REPR = 400  # characters of one input or output in the tests
MAX_PLUS = 200  # plus inputs per task
LIMITS = Limits(timeout_s=120)


def load(suite: str, data: Path) -> list[dict[str, Any]]:
    with gzip.open(data / SUITES[suite], "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def canonical(task: dict[str, Any], suite: str) -> str:
    if suite == "humaneval+":
        return task["prompt"] + task["canonical_solution"]
    return task["canonical_solution"].strip("\n") + "\n"


def _literal(text: str) -> bool:
    try:
        ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return len(text) <= MAX_REPR


def outputs(sandbox: Any, solution: str, entry: str, inputs: list[Any]) -> list[str] | None:
    """The reprs of ``entry``'s outputs on ``inputs`` (run in the sandbox), or None when one is not a literal."""
    program = (f"{solution}\n\nimport copy, json\nout = []\nfor args in {inputs!r}:\n"
               f"    out.append(repr({entry}(*copy.deepcopy(args))))\nprint(json.dumps(out))\n")  # fmt: skip
    res = run_program(sandbox, program, Limits(timeout_s=60), None)
    if res["exit_code"] != 0:
        return None
    got = json.loads(res["stdout"].strip().splitlines()[-1])
    return got if all(_literal(g) and not isinstance(ast.literal_eval(g), float) for g in got) else None


def truth_program(solution: str, entry: str, cases: list[tuple[Any, str]], atol: float) -> dict[str, Any]:
    table = ",\n".join(f"    ({args!r}, {want})" for args, want in cases)
    tests = (f"import copy, math\n\ndef _close(got, want):\n    if isinstance(want, float) or isinstance(got, float):\n"
             f"        return math.isclose(got, want, rel_tol=0, abs_tol={atol or 1e-9})\n    return got == want\n\n"
             f"_CASES = [\n{table}\n]\nfor _args, _want in _CASES:\n"
             f"    assert _close({entry}(*copy.deepcopy(_args)), _want)\n")  # fmt: skip
    return {"source": f"{solution}\n\n{tests}", "tests_line": solution.count("\n") + 3}


def prepare(sandbox: Any, suite: str, task: dict[str, Any], samples: list[str], per_kind: int) -> dict | None:
    """The task's entry parts and its candidate solutions, each with its truth; None when the task is left out."""
    entry = task["entry_point"]
    sol = canonical(task, suite)
    base_in = task["base_input"]
    plus_in = task["plus_input"][:MAX_PLUS]
    if not all(_literal(repr(a)) for a in base_in):
        return None
    base_out = outputs(sandbox, sol, entry, base_in)
    plus_out = outputs(sandbox, sol, entry, plus_in) if plus_in else []
    if base_out is None or plus_out is None:
        return None
    base = list(zip(base_in, base_out, strict=True))
    plus = list(zip(plus_in, plus_out, strict=True)) + base
    candidates = [("canonical", sol)] + [("sample", s) for s in samples]
    candidates += [("mutant", m.source) for m in mutants(sol, 30, seed=task["task_id"])]
    programs = []
    for _, code in candidates:
        programs += [truth_program(code, entry, base, task["atol"]), truth_program(code, entry, plus, task["atol"])]
    raw = run_batch(sandbox, {"programs": programs, "timeout_s": 10}, Limits(timeout_s=600))
    if raw is None:
        return None
    verdicts = [program_passed(r) for r in raw["programs"]]
    chosen, kinds = [], defaultdict(int)
    for i, (kind, code) in enumerate(candidates):
        base_ok, plus_ok = verdicts[2 * i], verdicts[2 * i + 1]
        if kind == "canonical" and not plus_ok:
            return None  # the harness and EvalPlus disagree on the canonical solution: leave the task out
        if kind == "mutant":
            kind = "mutant_base_passes" if base_ok else "mutant_base_fails"
            if plus_ok or kinds[kind] >= per_kind:
                continue  # an equivalent mutant, or enough of this kind
        kinds[kind] += 1
        chosen.append({"n": i, "kind": kind, "solution": code, "right": plus_ok, "base_passes": base_ok})
    cases = [(tuple(args), ast.literal_eval(out)) for args, out in base]
    return {"suite": suite, "task_id": task["task_id"], "problem": task["prompt"], "entry": entry,
            "cases": cases, "candidates": chosen}  # fmt: skip


def judge_one(sandbox: Any, checker: Checker, prepared: dict, style: str, cand: dict) -> dict[str, Any]:
    tests = render(style, prepared["entry"], prepared["cases"])
    program = f"{cand['solution']}\n\n{tests}\n"
    plain = run_program(sandbox, program, LIMITS, None)
    row = {"id": f"{prepared['task_id']}:{style}:{cand['kind']}", "problem": prepared["problem"],
           "solution": cand["solution"], "tests": tests, "passed": True, "messages": []}  # fmt: skip
    got = checker.check(row)
    return {"task_id": prepared["task_id"], "suite": prepared["suite"], "style": style, "kind": cand["kind"],
            "n": cand["n"], "right": cand["right"],
            "exit_rule_keeps": plain["exit_code"] == 0 and not plain["timed_out"],
            "check_keeps": got["reason"] is None, "reason": got["reason"],
            "cases": got["quality"].get("cases")}  # fmt: skip


def share(rows: list[dict], key: str) -> str:
    return f"{sum(r[key] for r in rows)}/{len(rows)}" if rows else "-"


def table(rows: list[dict], styles: list[str]) -> tuple[str, dict[str, Any]]:
    lines = ["| style | wrong kept: exit rule | wrong kept: check-tests | right kept: exit rule | "
             "right kept: check-tests | right, >= 3 cases, kept: check-tests |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    figures: dict[str, Any] = {}
    for style in [*styles, "all"]:
        mine = [r for r in rows if style in ("all", r["style"])]
        wrong = [r for r in mine if not r["right"]]
        right = [r for r in mine if r["right"]]
        three = [r for r in right if (r["cases"] or 0) >= 3]
        figures[style] = {
            "wrong": len(wrong), "wrong_kept_exit": sum(r["exit_rule_keeps"] for r in wrong),
            "wrong_kept_check": sum(r["check_keeps"] for r in wrong), "right": len(right),
            "right_kept_exit": sum(r["exit_rule_keeps"] for r in right),
            "right_kept_check": sum(r["check_keeps"] for r in right), "right_3_cases": len(three),
            "right_3_cases_kept_check": sum(r["check_keeps"] for r in three),
        }  # fmt: skip
        lines.append(f"| {style} | {share(wrong, 'exit_rule_keeps')} | {share(wrong, 'check_keeps')} | "
                     f"{share(right, 'exit_rule_keeps')} | {share(right, 'check_keeps')} | "
                     f"{share(three, 'check_keeps')} |")  # fmt: skip
    return "\n".join(lines), figures


def style_agreement(rows: list[dict]) -> tuple[int, int, list[dict]]:
    """(solutions, those whose check-tests verdict is the same in every style, the others with each style's)."""
    by: dict[tuple[str, int], dict[str, Any]] = defaultdict(dict)
    for r in rows:
        by[(r["task_id"], r["n"])][r["style"]] = r["reason"] or "kept"
    split = [{"task_id": t, "solution": n, "verdicts": v} for (t, n), v in by.items() if len(set(v.values())) > 1]
    return len(by), len(by) - len(split), split


def machine() -> dict[str, Any]:
    """The CPU model, its cores here and Python's version: the figures' context."""
    import os

    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=20, help="tasks per suite (spread evenly over it)")
    ap.add_argument("--styles", default="all", help="comma-separated styles, or all")
    ap.add_argument("--per-kind", type=int, default=2, help="mutants of each kind per task")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--samples", type=Path, help="a model's solutions: JSON lines {task_id, solution}")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    styles = list(STYLES) if args.styles == "all" else args.styles.split(",")
    sandbox = get_sandbox("bwrap")
    checker = Checker(load_config({})["check_tests"], sandbox, LIMITS)
    samples: dict[str, list[str]] = defaultdict(list)
    if args.samples:
        for line in args.samples.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                samples[row["task_id"]].append(row["solution"])
    t0 = time.perf_counter()
    prepared = []
    for suite in SUITES:
        tasks = load(suite, args.data)
        step = max(1, len(tasks) // args.tasks)
        for task in tasks[::step]:
            if len(prepared) - sum(p["suite"] != suite for p in prepared) >= args.tasks:
                break
            p = prepare(sandbox, suite, task, samples.get(task["task_id"], []), args.per_kind)
            if p is not None:
                prepared.append(p)
    jobs = [(p, style, c) for p in prepared for style in styles for c in p["candidates"]]
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(lambda j: judge_one(sandbox, checker, *j), jobs))
    text, figures = table(rows, styles)
    solutions, agree, split = style_agreement(rows)
    wrong_kept = sorted({(r["task_id"], r["kind"]) for r in rows if r["check_keeps"] and not r["right"]})
    reasons: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["check_keeps"] is False:
            reasons[f"{'right' if r['right'] else 'wrong'}: {r['reason']}"] += 1
    all_ = figures["all"]
    third = all_["wrong_kept_check"] * 3 <= all_["wrong_kept_exit"]
    right3 = all_["right_3_cases_kept_check"] / all_["right_3_cases"] if all_["right_3_cases"] else None
    per_suite = ", ".join(f"{s}: {sum(p['suite'] == s for p in prepared)}" for s in SUITES)
    print(f"{len(prepared)} tasks ({per_suite}), "
          f"{sum(len(p['candidates']) for p in prepared)} solutions, {len(styles)} styles, {len(rows)} entries, "
          f"{time.perf_counter() - t0:.0f} s")  # fmt: skip
    print(text)
    print(f"removed by check-tests, by reason: {dict(sorted(reasons.items()))}")
    print(f"same check-tests verdict in every style: {agree} of {solutions} solutions; the others: {split}")
    print(f"wrong solutions check-tests keeps (task, kind): {wrong_kept}")
    print(f"goal: wrong kept by check-tests <= 1/3 of the exit rule's ({all_['wrong_kept_check']} vs "
          f"{all_['wrong_kept_exit']}): {'yes' if third else 'no'}; right with >= 3 cases kept >= 90% "
          f"({right3 if right3 is None else f'{right3:.1%}'}): {'yes' if right3 and right3 >= 0.9 else 'no'}; "
          f"style-independent: {'yes' if agree == solutions else 'no'}")  # fmt: skip
    if args.json:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "script": "benchmarks/verdicts_truth.py", "argv": sys.argv[1:], "date": datetime.now(UTC).isoformat(),
            "machine": machine(),
            "commit": commit.stdout.strip(), "figures": figures, "removed_by_reason": reasons,
            "style_agreement": {"solutions": solutions, "same_in_every_style": agree, "split": split},
            "wrong_kept_by_check_tests": wrong_kept,
            "goals": {"wrong_third_of_exit_rule": third, "right_3_cases_kept": right3},
        }, indent=1) + "\n")  # fmt: skip
    record("verdicts_truth", {"all": all_, "same_check_tests_verdict_in_every_style": f"{agree} of {solutions}"},
           goal="check-tests keeps <= 1/3 of the wrong entries the exit-code rule keeps; >= 90% of the right ones "
           "with >= 3 cases; the same verdict in every style",
           met=bool(third and right3 and right3 >= 0.9 and agree == solutions))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
