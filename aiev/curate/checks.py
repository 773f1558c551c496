"""``aiev check-tests``: whether a passing entry's tests could fail, and whether its code does what the problem
says (docs/check-tests.md). Beyond the paper, which keeps every dialogue whose program exits 0.

Per passing entry (``solution``, ``tests``, ``problem``):

- static facts from the syntax trees: the checks the tests hold (``assert`` statements, ``self.assert...`` and
  ``pytest.raises`` calls), always-true assertions, assertions inside a ``try`` whose handler swallows
  ``AssertionError``, repeated identical assertions, the functions and classes the solution defines and which of
  them the tests use, the functions the problem names (`` `name(` `` or ``def name(``);
- one sandbox execution (:func:`aiev.interpreter.run_batch`): the entry's program, counted (a pass means the
  tests ran); each mutant of the solution (:mod:`aiev.curate.mutants`) against the same tests, in a forked child
  with its own time limit (the mutation score is the share the tests kill); the examples the problem states
  (`` `f(2)` returns `5` ``, or doctest lines) run on the solution;
- whether the problem already holds the solution's code (the decontamination's similarity).

A removed row names its ``reason`` (:data:`REASONS`) and the figures; a kept row gains ``quality``. Modes:
``filter`` removes, ``report`` removes nothing and reports what it would remove (the paper's run), ``off``
copies. Every finished entry is appended (fsynced) to a progress file outside the rule's outputs: a killed job
resumes without checking an entry twice.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiev.codeblocks import fenced_blocks, normalize_code
from aiev.curate.mutants import mutants
from aiev.io import ProgressStore, SkipLog, fsync_path, read_jsonl, write_json, write_jsonl
from aiev.llm.agents import STAGE_ROLE

log = logging.getLogger("aiev.check_tests")

#: Why an entry is removed, in the order they are decided.
REASONS = (
    "no_assertions",  # the tests hold no check at all
    "tests_not_run",  # the program executed no check of its tests
    "tests_fail",  # run here (a TestCase nothing ran before is run), the tests fail
    "tautology",  # every check is always true
    "swallowed",  # every check sits in a try whose handler swallows its failure
    "not_called",  # the tests use none of the solution's functions, or the problem's function is not defined
    "solution_in_problem",  # the problem statement already holds the solution's code
    "example_mismatch",  # the solution disagrees with an example the problem states
    "weak",  # fewer distinct checks than check_tests.min_distinct_checks, or too few mutants killed
)
#: Which model wrote a batch, by its stage (the second solution asks the same one).
#: Why an entry could not be run (kept, counted): installs it needs, a program that fails here but passed there.
UNCHECKED = ("installs", "does_not_parse", "sandbox_error")
ASSERT_CALL = re.compile(r"^(assert\w*|fail\w*|raises)$")
_EXAMPLE = re.compile(
    r"`(?P<call>[A-Za-z_][\w.]*\([^`]*\))`\s*(?:should\s+)?(?:returns?|gives|is|==|->|=>|evaluates to|yields)\s+"
    r"`(?P<expected>[^`]+)`"
)
_DOCTEST = re.compile(r"^\s*>>> (?P<call>.+)\n\s*(?P<expected>(?!>>>)\S.*)$", re.M)
_NAMED = re.compile(r"(?:`|\bdef\s+)(?<![.\w])([A-Za-z_]\w*)\s*\(")
_BUILTINS = frozenset(dir(builtins))


# ------------------------------------------------------------------------------------------------ static facts


def _assert_nodes(tree: ast.AST) -> list[ast.AST]:
    """The checks of the tests: assert statements and assert-like calls (``self.assertEqual``, ``pytest.raises``)."""
    out: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            out.append(node)
        elif isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if ASSERT_CALL.match(name) and name != "assert_":
                out.append(node)
    return out


def _always_true(node: ast.AST) -> bool:
    """An assertion that cannot fail: a true constant, ``x == x`` (``f(1) == f(1)`` too), ``isinstance(x,
    object)``, ``... or True``, ``assertTrue(1)``, ``assertEqual(x, x)``."""
    if isinstance(node, ast.Assert):
        test = node.test
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
        name = node.func.attr
        if name in ("assertEqual", "assertEquals") and len(node.args) >= 2:
            return ast.dump(node.args[0]) == ast.dump(node.args[1])
        if name != "assertTrue":
            return False
        test = node.args[0]
    else:
        return False
    if isinstance(test, ast.Constant):
        return bool(test.value)
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.Is):
        return ast.dump(test.left) == ast.dump(test.comparators[0])  # f(x) == f(x): true for any f worth testing
    if isinstance(test, ast.Call) and getattr(test.func, "id", "") == "isinstance" and len(test.args) == 2:
        return getattr(test.args[1], "id", "") == "object"
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return any(isinstance(v, ast.Constant) and bool(v.value) for v in test.values)
    return False


def _swallowed(tree: ast.AST) -> set[int]:
    """The ids of checks inside a ``try`` body whose handlers catch AssertionError (bare, Exception, ...)
    without raising again."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        swallows = False
        for h in node.handlers:
            names = {ast.unparse(h.type).rsplit(".", 1)[-1]} if h.type is not None else {"BaseException"}
            if isinstance(h.type, ast.Tuple):
                names = {ast.unparse(e).rsplit(".", 1)[-1] for e in h.type.elts}
            if names & {"AssertionError", "Exception", "BaseException"} and not any(
                isinstance(n, ast.Raise) for n in ast.walk(h)
            ):
                swallows = True
        if swallows:
            for stmt in node.body:
                out |= {id(n) for n in _assert_nodes(stmt)}
    return out


def _defined(tree: ast.AST) -> tuple[list[str], set[str]]:
    """(top-level functions and classes, every function name defined anywhere) of the solution."""
    top = [n.name for n in getattr(tree, "body", []) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef |
                                                                     ast.ClassDef)]  # fmt: skip
    every = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)}
    return top, every


def named_functions(problem: str) -> list[str]:
    """The functions a problem names (`` `name(...)` `` or ``def name(``), builtins left out."""
    names = dict.fromkeys(m.group(1) for m in _NAMED.finditer(problem or ""))
    return [n for n in names if n not in _BUILTINS and not n.startswith("test")]


def static_facts(problem: str, solution: str, tests: str) -> dict[str, Any]:
    """What the syntax trees say (``parse_error`` when the tests or the solution do not parse)."""
    try:
        tests_tree = ast.parse(tests)
        solution_tree = ast.parse(solution)
    except SyntaxError as exc:
        return {"parse_error": f"line {exc.lineno}: {exc.msg}"}
    checks = _assert_nodes(tests_tree)
    swallowed = _swallowed(tests_tree)
    texts = [ast.unparse(n) for n in checks]
    live = [t for n, t in zip(checks, texts, strict=True) if not _always_true(n) and id(n) not in swallowed]
    top, every = _defined(solution_tree)
    used = {n.id for n in ast.walk(tests_tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tests_tree) if isinstance(n, ast.Attribute)
    }
    named = named_functions(problem)
    return {
        "assertions": len(checks),
        "tautologies": sum(_always_true(n) for n in checks),
        "swallowed": len(swallowed),
        "duplicates": len(texts) - len(set(texts)),
        "defined": top,
        "called": [name for name in top if name in used],
        "named": named,
        "named_defined": [n for n in named if n in every],
        "_live": len(live),
        "distinct": len(set(live)),
    }


def problem_examples(problem: str, defined: set[str]) -> list[dict[str, str]]:
    """The examples a problem states for the solution's functions: `` `f(2)` returns `5` `` and doctest
    lines; only those whose expected value is a Python literal."""
    found = [(m.group("call"), m.group("expected")) for m in _EXAMPLE.finditer(problem or "")]
    found += [(m.group("call").strip(), m.group("expected").strip()) for m in _DOCTEST.finditer(problem or "")]
    out = []
    for call, expected in dict.fromkeys(found):
        try:
            node = ast.parse(call, mode="eval").body
            ast.literal_eval(expected)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in defined:
            out.append({"call": call, "expected": expected})
    return out


def solution_in_problem(problem: str, solution: str) -> float:
    """How much of the solution the problem already holds: the highest similarity of the solution to a code block
    of the problem (or to the problem's text, when it has none), by decontamination's Levenshtein measure."""
    from aiev.curate.decontam import similarity

    sol = normalize_code(solution)
    if not sol:
        return 0.0
    blocks = [normalize_code(f.code) for f in fenced_blocks(problem or "")]
    candidates = [b for b in blocks if b] or [normalize_code(problem or "")]
    best = max((similarity(sol, b, "levenshtein") for b in candidates), default=Fraction(0))
    return float(best)


# ------------------------------------------------------------------------------------------------ one entry


def judge(measured: dict[str, Any], section: dict[str, Any]) -> dict[str, Any]:
    """What the thresholds of ``section`` make of an entry's measurements (:meth:`Checker.measure`): ``reason``
    (None: kept), ``detail`` and ``quality`` (the figures a kept row carries). Cheap: a changed threshold re-judges
    stored measurements, it does not run anything again."""
    facts, run = measured["facts"], measured["run"]
    if "parse_error" in facts:
        return {"reason": None, "detail": facts["parse_error"], "quality": {}}
    reason, detail = _verdict(facts, run, section)
    quality = {k: v for k, v in facts.items() if not k.startswith("_")}
    if run is not None:
        quality |= {k: run[k] for k in ("checks_executed", "mutants", "killed", "mutation_score", "survivors")}
        quality["examples"] = len(run.get("examples") or [])
        if "second_solution_passes" in run:
            # a second solution that fails the tests: the tests (or the problem) may say something else
            quality["second_solution_passes"] = run["second_solution_passes"]
    return {"reason": reason, "detail": detail, "quality": quality}


def _verdict(facts: dict[str, Any], run: dict[str, Any] | None, section: dict[str, Any]) -> tuple[str | None, str]:
    """(reason, detail) of a removal, or (None, "") when the entry is kept."""
    if facts["assertions"] == 0:
        return "no_assertions", "the tests hold no assertion and no unittest check"
    if run is not None and run.get("failed"):
        return "tests_fail", run["failed"]
    if run is not None and run.get("checks_executed") == 0:
        return "tests_not_run", "the program executed no check of its tests"
    if facts["tautologies"] == facts["assertions"]:
        return "tautology", f"all {facts['assertions']} assertion(s) are always true"
    if facts["_live"] == 0:
        return "swallowed", "every assertion sits in a try whose handler swallows its failure"
    if facts["distinct"] < section["min_distinct_checks"]:
        repeated = f" ({facts['duplicates']} repeated assertion(s))" if facts["duplicates"] else ""
        return "weak", f"the tests check {facts['distinct']} distinct case(s){repeated}"
    if facts["defined"] and not facts["called"]:
        return "not_called", f"the tests use none of {', '.join(facts['defined'][:5])}"
    if facts["named"] and not facts["named_defined"] and facts["defined"]:
        return "not_called", f"the problem names {', '.join(facts['named'][:3])}, the solution defines " + ", ".join(
            facts["defined"][:3]
        )
    if facts["solution_in_problem"] > section["solution_in_problem"]:
        return (
            "solution_in_problem",
            f"the problem holds the solution's code (similarity {facts['solution_in_problem']:.2f})",
        )
    if run is not None:
        bad = [e for e in run.get("examples") or [] if not e["ok"]]
        if bad:
            return "example_mismatch", f"`{bad[0]['call']}` gave {bad[0]['got']}, the problem says {bad[0]['expected']}"
        score = run.get("mutation_score")
        if score is not None and run["mutants"] >= 2 and score < section["min_mutation_score"]:
            return "weak", f"the tests killed {run['killed']} of {run['mutants']} mutants"
    return None, ""


class Checker:
    """Checks entries in a sandbox (``sandbox``, ``limits``: the ``sandbox`` section's)."""

    def __init__(self, section: dict[str, Any], sandbox: Any, limits: Any) -> None:
        self.section = section
        self.sandbox = sandbox
        self.limits = limits

    def check(self, entry: dict[str, Any], second: str | None = None) -> dict[str, Any]:
        """:meth:`measure`, judged by this checker's thresholds (:func:`judge`)."""
        measured = self.measure(entry, second)
        return measured | judge(measured, self.section)

    def measure(self, entry: dict[str, Any], second: str | None = None) -> dict[str, Any]:
        """What one entry is: ``facts`` (static), ``run`` (the sandbox's figures, None when it could not run),
        ``unchecked`` (why not) and ``seconds``. ``second``: an independent solution of the same problem, run
        against the entry's tests (a disagreement is spec doubt)."""
        from aiev.interpreter import passing_installs, run_batch

        t0 = time.perf_counter()
        problem, solution, tests = entry.get("problem") or "", entry.get("solution") or "", entry.get("tests") or ""
        facts = static_facts(problem, solution, tests)
        run: dict[str, Any] | None = None
        unchecked = None
        if "parse_error" in facts:
            unchecked = "does_not_parse"
        elif passing_installs(entry):
            facts["solution_in_problem"] = round(solution_in_problem(problem, solution), 4)
            unchecked = "installs"  # its packages are in the dialogue's prefix, not here: static facts only
        else:
            facts["solution_in_problem"] = round(solution_in_problem(problem, solution), 4)
            target = next(iter(facts["named_defined"]), None)
            muts = mutants(solution, self.section["mutants"], seed=entry["id"], target=target)
            tests_line = solution.count("\n") + 3
            programs = [{"source": f"{solution}\n\n{tests}\n", "tests_line": tests_line}]
            programs += [{"source": f"{m.source}\n\n{tests}\n", "tests_line": m.source.count("\n") + 3} for m in muts]
            if second is not None:
                programs.append({"source": f"{second}\n\n{tests}\n", "tests_line": second.count("\n") + 3})
            _, every = _defined(ast.parse(solution))
            examples = problem_examples(problem, every) if self.section["examples"] else []
            job = {"programs": programs, "examples": examples, "solution": solution,
                   "timeout_s": self.section["mutant_timeout_s"]}  # fmt: skip
            raw = run_batch(self.sandbox, job, self.limits)
            second_run = None
            if raw and second is not None and len(raw.get("programs") or []) == len(programs):
                second_run = raw["programs"].pop()
            run = _summarise(raw, muts, examples)
            if run is not None and second_run is not None:
                run["second_solution_passes"] = second_run["status"] == 0 and not second_run["timed_out"]
            unchecked = "sandbox_error" if run is None else None
        return {"id": entry["id"], "facts": facts, "run": run, "unchecked": unchecked,
                "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip


def _summarise(raw: dict[str, Any] | None, muts: list[Any], examples: list[dict[str, str]]) -> dict[str, Any] | None:
    """The run's figures from the sandbox batch's raw result (None: the execution ended without them)."""
    if raw is None or not raw.get("programs"):
        return None
    original, *rest = raw["programs"]
    counts = original.get("result") or {}
    executed = int(counts.get("asserts", 0)) + int(counts.get("assert_calls", 0))
    if original["status"] != 0 or original["timed_out"]:
        why = "ran past the time limit" if original["timed_out"] else f"exited with {original['status']}"
        ran = counts.get("ran") or []
        if ran:
            why += f" (its {', '.join(ran)} tests, which nothing had run, were run)"
        return {"checks_executed": executed, "mutants": 0, "killed": 0, "mutation_score": None, "survivors": [],
                "examples": [], "failed": f"the entry's program {why}"}  # fmt: skip
    killed = [r["status"] != 0 or r["timed_out"] for r in rest]
    survivors = [m.what for m, k in zip(muts, killed, strict=False) if not k]
    ex = []
    ex_raw = (raw.get("examples") or {}).get("result") or []
    for spec, got in zip(examples, ex_raw, strict=False):
        ex.append({**spec, **got})
    run = {
        "checks_executed": executed,
        "mutants": len(rest),
        "killed": sum(killed),
        "mutation_score": round(sum(killed) / len(rest), 4) if rest else None,
        "survivors": survivors[:5],
        "examples": ex,
    }
    return run


# ------------------------------------------------------------------------------------------------ second solution


async def _second_solutions(cfg: dict[str, Any], entries: list[dict[str, Any]], role: str, state: Path):
    """A second, independent solution per entry from the model that wrote it (one programmer request each, a
    different sampling seed, the dialogue's own prompts): {id: solution or None}, and the usage."""
    import asyncio

    from aiev.codeblocks import CodeProblem, blocks_of_kind, extract_program
    from aiev.llm.agents import agents_for, load_prompts
    from aiev.llm.client import LLMError, client_session, endpoint_settings

    settings = endpoint_settings(cfg["llm"], role)
    settings = dataclasses.replace(settings, seed=(settings.seed or 0) + 1)  # not the dialogue's own sample
    usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    prompts = load_prompts(cfg["llm"][role]["mode"])
    out: dict[str, str | None] = {}

    async def one(agents: Any, entry: dict[str, Any]) -> None:
        try:
            reply = await agents.answer(entry["problem"] or "")
        except LLMError as exc:
            log.warning("%s: no second solution: %s", entry["id"], exc)
            out[entry["id"]] = None
            return
        program = extract_program(reply)
        if isinstance(program, CodeProblem):  # one block without tests is all solution
            code = "\n\n".join(f.code for f in blocks_of_kind(reply, "python"))
            out[entry["id"]] = code or None
        else:
            out[entry["id"]] = program.solution

    async with client_session(settings, state / "second_solution_cache.sqlite") as client:
        agents = agents_for(cfg["llm"][role]["mode"], prompts, client, usage)
        await asyncio.gather(*(one(agents, e) for e in entries))
    return out, usage | {"cost_usd": client.usage.to_dict().get("cost_usd")}


# ------------------------------------------------------------------------------------------------ the step


#: The settings the stored measurements depend on; the others (mode, thresholds, workers) only judge them.
MEASURED_WITH = ("mutants", "mutant_timeout_s", "examples", "second_solution")


def settings_sha256(section: dict[str, Any], sandbox_section: dict[str, Any]) -> str:
    """What decides a measurement: :data:`MEASURED_WITH`, the sandbox's limits and the checker's code."""
    import importlib.util

    measured_with = {k: section[k] for k in MEASURED_WITH}
    h = hashlib.sha256(json.dumps({"check": measured_with, "sandbox": sandbox_section}, sort_keys=True).encode())
    for name in ("aiev.curate.checks", "aiev.curate.mutants", "aiev.sandbox.harness", "aiev.interpreter"):
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        h.update(Path(spec.origin).read_bytes())
    return h.hexdigest()


def run(
    cfg: dict[str, Any],
    *,
    input: str | Path,
    output: str | Path,
    removed: str | Path,
    report: str | Path,
    state_dir: str | Path,
    sandbox: Any = None,
    stage: str = "teaching",
) -> dict[str, Any]:
    """The ``check-tests`` step (the ``check_tests`` and ``sandbox`` sections of ``cfg``; with
    ``check_tests.second_solution`` the ``llm`` section too, and the model of ``stage``)."""
    section = cfg["check_tests"]
    second_usage: dict[str, Any] | None = None
    t0 = time.perf_counter()
    skips = SkipLog()
    rows = [(n, e) for n, e in read_jsonl(input, skips)]
    good = []
    for n, e in rows:
        if not isinstance(e.get("id"), str) or not e.get("passed") or not isinstance(e.get("solution"), str) or (
            not isinstance(e.get("tests"), str)
        ):  # fmt: skip
            skips.add("bad-row: not a passing entry with solution and tests", file=str(input), line=n, id=e.get("id"))
        else:
            good.append(e)
    mode = section["mode"]
    seconds: dict[str, str | None] = {}
    results: dict[str, dict[str, Any]] = {}
    resumed = 0
    if mode != "off" and good:
        from aiev.sandbox import execution_settings, from_config

        sb, limits, _ = from_config(cfg["sandbox"])
        sb = sandbox or sb
        # one execution runs the program, its mutants and the examples, each under its own time limit
        limits = dataclasses.replace(limits, timeout_s=section["mutant_timeout_s"] * (section["mutants"] + 3) + 10)
        fingerprint = settings_sha256(section, execution_settings(cfg["sandbox"], limits))
        state = Path(state_dir)
        state.mkdir(parents=True, exist_ok=True)
        progress_path = state / "check_tests.progress.jsonl"
        store = ProgressStore(progress_path, key="id", keep=lambda row: row.get("fingerprint") == fingerprint)
        results = dict(store.done)
        resumed = sum(1 for e in good if e["id"] in results)
        todo = [e for e in good if e["id"] not in results]
        checker = Checker(section, sb, limits)
        if section["second_solution"] and todo:
            import asyncio

            seconds, second_usage = asyncio.run(_second_solutions(cfg, todo, STAGE_ROLE[stage], state))
        try:
            with ThreadPoolExecutor(max_workers=section["workers"]) as pool:
                for measured in pool.map(lambda e: checker.measure(e, seconds.get(e["id"])), todo):
                    measured["fingerprint"] = fingerprint
                    store.add(measured)  # fsynced: a killed job loses at most the entries being checked
                    results[measured["id"]] = measured
        finally:
            store.close()
        fsync_path(progress_path)
        results = {k: v | judge(v, section) for k, v in results.items()}

    kept_rows, removed_rows = [], []
    for e in good:
        res = results.get(e["id"])
        if res is None:  # mode off
            kept_rows.append(e)
            continue
        if res["reason"] is not None and mode == "filter":
            removed_rows.append({"id": e["id"], "reason": res["reason"], "detail": res["detail"],
                                 "quality": res["quality"]})  # fmt: skip
        else:
            kept_rows.append(e | {"quality": res["quality"] | {"would_remove": res["reason"]} if res["reason"] else
                                  res["quality"]})  # fmt: skip
    write_jsonl(output, kept_rows)
    write_jsonl(removed, removed_rows)
    checked = [results[e["id"]] for e in good if e["id"] in results]
    scores = [r["quality"].get("mutation_score") for r in checked if r["quality"].get("mutation_score") is not None]
    reasons = Counter(r["reason"] for r in checked if r["reason"])
    rep = {
        "input": str(input),
        "mode": mode,
        "settings": section,
        "entries": len(good),
        "kept": len(kept_rows),
        "removed": len(removed_rows),
        "removed_by_reason": {k: reasons.get(k, 0) for k in REASONS} if mode == "filter" else {},
        "would_remove_by_reason": {k: reasons.get(k, 0) for k in REASONS},
        "unchecked": {k: sum(1 for r in checked if r.get("unchecked") == k) for k in UNCHECKED},
        "resumed": resumed,
        "mutants": sum(int(r["quality"].get("mutants") or 0) for r in checked),
        "killed": sum(int(r["quality"].get("killed") or 0) for r in checked),
        "mutation_scores": scores,
        "mean_mutation_score": round(sum(scores) / len(scores), 4) if scores else None,
        "examples_checked": sum(int(r["quality"].get("examples") or 0) for r in checked),
        "second_solution": None
        if not section["second_solution"]
        else {
            "requested": len(seconds) if mode != "off" else 0,
            "disagree": sum(r["quality"].get("second_solution_passes") is False for r in checked),
            "agree": sum(r["quality"].get("second_solution_passes") is True for r in checked),
            "usage": second_usage,
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_per_entry": round(sum(r.get("seconds", 0) for r in checked) / len(checked), 4) if checked else None,
        "bad_rows": skips.rows,
    }
    write_json(report, rep)
    return rep
