"""``aiev check-tests``: whether a passing entry's tests could fail, and whether its code does what the problem
says (docs/check-tests.md). Beyond the paper, which keeps every dialogue whose program exits 0.

Per passing entry (``solution``, ``tests``, ``problem``):

- static facts from the syntax trees: the checks the tests hold (``assert`` statements, ``self.assert...`` and
  ``pytest.raises`` calls, doctest examples), always-true assertions, repeated identical assertions, the
  functions and classes the solution defines and which of them the tests name, the functions the problem asks
  for (:func:`aiev.curate.problem.asked_functions`);
- one sandbox execution (:func:`aiev.interpreter.run_batch`): the entry's program through the harness (the
  dialogue's verdict, the checks executed, the distinct cases and the calls of the solution, counted as they
  run); each mutant of the solution (:mod:`aiev.curate.mutants`) against the same tests, judged by the tests'
  verdict; each code fragment of the problem against the tests (one that passes gives the answer away); the
  examples the problem states run on the solution (:mod:`aiev.curate.problem`).

Where the entry ran, its run decides; the syntax tree decides only what no run can say (always-true checks)
and stands in for the run where there is none (an entry that installed packages).

A removed row names its ``reason`` (:data:`REASONS`) and the figures; a kept row gains ``quality``. Modes:
``filter`` removes, ``report`` removes nothing and reports what it would remove (the paper's run), ``off``
copies. Every finished entry is appended (fsynced) to a progress file outside the rule's outputs: a killed job
resumes without checking an entry twice.
"""

from __future__ import annotations

import ast
import dataclasses
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiev.codeblocks import normalize_code
from aiev.curate.mutants import mutants
from aiev.curate.problem import asked_functions, code_fragments, fragment_program, stated_examples
from aiev.interpreter import checked_program, program_passed, program_verdict
from aiev.io import SkipLog, fsync_path, read_jsonl, write_jsonl
from aiev.llm.agents import STAGE_ROLE
from aiev.runtime import ModelSettings, Resume, Session, Tally

log = logging.getLogger("aiev.check_tests")

#: Why an entry is removed, in the order they are decided.
REASONS = (
    "no_assertions",  # the tests hold no check at all
    "tests_not_run",  # the program executed no check of its tests
    "tests_fail",  # run here (a TestCase nothing ran before is run), the tests fail
    "tautology",  # every check is always true
    "not_called",  # the tests call none of the solution's functions, or the function asked for is not defined
    "solution_in_problem",  # code the problem holds already passes the tests
    "example_mismatch",  # the solution disagrees with an example the problem states
    "weak",  # fewer distinct cases than check_tests.min_distinct_checks, or too few mutants killed
)
#: Which model wrote a batch, by its stage (the second solution asks the same one).
#: Why an entry could not be run (kept, counted): installs it needs, a program that fails here but passed there.
UNCHECKED = ("installs", "does_not_parse", "sandbox_error")
ASSERT_CALL = re.compile(r"^(assert\w*|fail\w*|raises)$")
_DOCTEST_LINE = re.compile(r"^\s*>>> ", re.M)


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


def static_facts(problem: str, solution: str, tests: str) -> dict[str, Any]:
    """What the syntax trees say (``parse_error`` when the tests or the solution do not parse)."""
    try:
        tests_tree = ast.parse(tests)
        solution_tree = ast.parse(solution)
    except SyntaxError as exc:
        return {"parse_error": f"line {exc.lineno}: {exc.msg}"}
    checks = _assert_nodes(tests_tree)
    examples = len(_DOCTEST_LINE.findall(tests)) if "doctest" in tests else 0  # doctest examples are checks too
    swallowed = _swallowed(tests_tree)
    texts = [ast.unparse(n) for n in checks]
    live = [t for n, t in zip(checks, texts, strict=True) if not _always_true(n) and id(n) not in swallowed]
    top, every = _defined(solution_tree)
    used = {n.id for n in ast.walk(tests_tree) if isinstance(n, ast.Name)} | {
        n.attr for n in ast.walk(tests_tree) if isinstance(n, ast.Attribute)
    }
    named = asked_functions(problem)
    return {
        "assertions": len(checks) + examples,
        "tautologies": sum(_always_true(n) for n in checks),
        "swallowed": len(swallowed),
        "duplicates": len(texts) - len(set(texts)),
        "defined": top,
        "called": [name for name in top if name in used],
        "named": named,
        "named_defined": [n for n in named if n in every],
        "distinct": len(set(live)) + examples,
    }


def solution_similarity(problem: str, solution: str) -> float:
    """How much of the solution the problem's text holds, by decontamination's Levenshtein measure (the highest
    similarity to a code fragment of the problem, or to its text): the fallback of an entry that cannot be run."""
    from aiev.curate.decontam import similarity

    sol = normalize_code(solution)
    if not sol:
        return 0.0
    blocks = [normalize_code(f) for f in code_fragments(problem or "")]
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
        keys = ("checks_executed", "cases", "calls", "mutants", "killed", "stillborn", "mutation_score", "survivors")
        quality |= {k: run.get(k) for k in keys}
        quality["examples"] = len(run.get("examples") or [])
        quality["examples_unchecked"] = run.get("examples_unchecked", 0)
        if "second_solution_passes" in run:
            # a second solution that fails the tests: the tests (or the problem) may say something else
            quality["second_solution_passes"] = run["second_solution_passes"]
    return {"reason": reason, "detail": detail, "quality": quality}


def _verdict(facts: dict[str, Any], run: dict[str, Any] | None, section: dict[str, Any]) -> tuple[str | None, str]:
    """(reason, detail) of a removal, or (None, "") when the entry is kept. Where the entry ran, its run decides
    (what executed, in any style); the syntax tree decides only what a run cannot say (always-true checks) and
    stands in for the run where there is none."""
    executed = None if run is None else run.get("checks_executed")
    if facts["assertions"] == 0 and not executed:
        return "no_assertions", "the tests hold no assertion, unittest check or doctest example"
    if run is not None and run.get("failed"):
        return "tests_fail", run["failed"]
    if executed == 0:
        return "tests_not_run", "the program executed no check of its tests"
    if facts["tautologies"] == facts["assertions"]:
        return "tautology", f"all {facts['assertions']} assertion(s) are always true"
    if run is not None and run.get("given_away"):
        return "solution_in_problem", run["given_away"]
    calls = None if run is None else run.get("calls")
    if facts["defined"] and not facts["called"] and not calls:
        return "not_called", f"the tests use none of {', '.join(facts['defined'][:5])}"
    if facts["named"] and not facts["named_defined"] and facts["defined"]:
        return "not_called", f"the problem asks for {', '.join(facts['named'][:3])}, the solution defines " + ", ".join(
            facts["defined"][:3]
        )
    cases = facts["distinct"] if run is None or run.get("cases") is None else run["cases"]
    if cases < section["min_distinct_checks"]:
        repeated = f" ({facts['duplicates']} repeated assertion(s))" if facts["duplicates"] else ""
        return "weak", f"the tests check {cases} distinct case(s){repeated}"
    if run is None and facts.get("solution_in_problem", 0) > section["solution_in_problem"]:
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
        from aiev.interpreter import passing_installs

        t0 = time.perf_counter()
        problem, solution, tests = entry.get("problem") or "", entry.get("solution") or "", entry.get("tests") or ""
        facts = static_facts(problem, solution, tests)
        run: dict[str, Any] | None = None
        unchecked = None
        if "parse_error" in facts:
            unchecked = "does_not_parse"
        elif passing_installs(entry):
            facts["solution_in_problem"] = round(solution_similarity(problem, solution), 4)
            unchecked = "installs"  # its packages are in the dialogue's prefix, not here: static facts only
        else:
            run = self._run(entry["id"], problem, solution, tests, facts, second)
            unchecked = "sandbox_error" if run is None else None
        return {"id": entry["id"], "facts": facts, "run": run, "unchecked": unchecked,
                "seconds": round(time.perf_counter() - t0, 4)}  # fmt: skip

    def _run(self, eid: str, problem: str, solution: str, tests: str, facts: dict[str, Any],
             second: str | None) -> dict[str, Any] | None:  # fmt: skip
        """One sandbox execution: the entry's program, its mutants, the problem's code fragments and the second
        solution (each against the tests, each as its own ``main.py``), and the stated examples on the solution."""
        from aiev.interpreter import run_batch

        target = next(iter(facts["named_defined"]), None)
        muts = mutants(solution, self.section["mutants"], seed=eid, target=target)
        fragments = [fragment_program(f, solution) for f in code_fragments(problem)]
        programs = [_program(solution, tests)]  # the others are judged by their verdict alone
        programs += [_program(_without_self_checks(m.source), tests, cases=False) for m in muts]
        programs += [_program(f, tests, cases=False) for f in fragments]
        if second is not None:
            programs.append(_program(second, tests, cases=False))
        top = {n.name for n in ast.parse(solution).body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        examples, unchecked = stated_examples(problem, top) if self.section["examples"] else ([], 0)
        job = {"programs": programs, "examples": [e.to_dict() for e in examples], "solution": solution,
               "timeout_s": self.section["mutant_timeout_s"]}  # fmt: skip
        raw = run_batch(self.sandbox, job, self.limits)
        if raw is None or len(raw.get("programs") or []) != len(programs):
            return None
        results = raw["programs"]
        second_run = results.pop() if second is not None else None
        fragment_runs = results[len(results) - len(fragments) :] if fragments else []
        results = results[: len(results) - len(fragments)]
        run = _summarise(results, muts, job["examples"], raw.get("examples"))
        run["examples_unchecked"] = unchecked
        given = [i for i, r in enumerate(fragment_runs) if program_passed(r)]
        if given and not run.get("failed"):
            run["given_away"] = f"code the problem holds passes the tests ({len(given)} of {len(fragments)} fragments)"
        if second_run is not None:
            run["second_solution_passes"] = program_passed(second_run)
        return run


def _without_self_checks(source: str) -> str:
    """A mutant without the solution's own top-level asserts: they would kill it before the tests run, and a
    mutant is judged by the tests alone."""
    tree = ast.parse(source)
    body = [n for n in tree.body if not isinstance(n, ast.Assert)]
    return source if len(body) == len(tree.body) else ast.unparse(ast.Module(body or [ast.Pass()], []))


def _program(solution: str, tests: str, cases: bool = True) -> dict[str, Any]:
    source, tests_line = checked_program(solution, tests)
    return {"source": source + "\n", "tests_line": tests_line, "cases": cases}


def _summarise(results: list[dict[str, Any]], muts: list[Any], examples: list[dict[str, Any]],
               examples_raw: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    """The run's figures from the batch's results: the entry's program first, then its mutants. A mutant is
    killed when the tests' verdict on it is a fail; one that died in the solution's own module code before the
    tests ran (``stillborn``) says nothing of the tests and is left out of the score."""
    original, *rest = results
    counts = original.get("result") or {}
    figures = {"checks_executed": int(counts.get("checks", 0)), "cases": counts.get("cases"),
               "calls": counts.get("calls")}  # fmt: skip
    nothing = {"mutants": 0, "killed": 0, "stillborn": 0, "mutation_score": None, "survivors": [], "examples": []}
    passed, why = program_verdict(original)
    if why == "tests_not_run":  # exit 0, nothing failed, but no check executed
        return figures | nothing
    if not passed:
        return figures | nothing | {"failed": f"the entry's program {_why_failed(original)}"}
    stillborn = [((r.get("result") or {}).get("died_in") == "solution") for r in rest]
    killed = [not program_passed(r) and not born for r, born in zip(rest, stillborn, strict=True)]
    judged = len(rest) - sum(stillborn)
    survivors = [m.what for m, k, b in zip(muts, killed, stillborn, strict=False) if not k and not b]
    ex = [{**spec, **got} for spec, got in zip(examples, (examples_raw or {}).get("result") or [], strict=False)]
    return figures | {
        "mutants": judged,
        "killed": sum(killed),
        "stillborn": sum(stillborn),
        "mutation_score": round(sum(killed) / judged, 4) if judged else None,
        "survivors": survivors[:5],
        "examples": ex,
    }


def _why_failed(result: dict[str, Any]) -> str:
    counts = result.get("result") or {}
    if result["timed_out"]:
        why = "ran past the time limit"
    elif counts.get("failed") or counts.get("tests_failed"):
        n = int(counts.get("failed") or 0) + int(counts.get("tests_failed") or 0)
        first = (counts.get("failures") or [""])[0]
        why = f"reported {n} failed check(s) or test(s)" + (f" ({first})" if first else "")
    elif counts.get("skipped"):
        why = f"exited before the checks from line {counts['skipped']} on ran"
    else:
        why = f"exited with {result['status']}"
    ran = counts.get("ran") or []
    if ran:
        why += f" (its {', '.join(ran)} tests, which nothing had run, were run)"
    return why


# ------------------------------------------------------------------------------------------------ second solution


def _second_of(reply: str) -> str | None:
    """The solution a second reply holds (one block without tests is all solution)."""
    from aiev.codeblocks import CodeProblem, blocks_of_kind, extract_program

    program = extract_program(reply)
    if isinstance(program, CodeProblem):
        return "\n\n".join(f.code for f in blocks_of_kind(reply, "python")) or None
    return program.solution


async def _second_solutions(model: ModelSettings, entries: list[dict[str, Any]], state: Path):
    """A second, independent solution per entry from the model that wrote it (one programmer request each, a
    different sampling seed, the dialogue's own prompts): {id: solution or None}, and the usage."""
    import asyncio

    from aiev.llm.client import LLMError

    usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    out: dict[str, str | None] = {}

    async def one(agents: Any, entry: dict[str, Any]) -> None:
        try:
            out[entry["id"]] = _second_of(await agents.answer(entry["problem"] or ""))
        except LLMError as exc:
            log.warning("%s: no second solution: %s", entry["id"], exc)
            out[entry["id"]] = None

    async with Session(model, state / "second_solution_cache.sqlite") as session:
        agents = session.agents(usage)
        await asyncio.gather(*(one(agents, e) for e in entries))
    return out, usage | {"cost_usd": session.usage().get("cost_usd")}


# ------------------------------------------------------------------------------------------------ the step


#: The settings the stored measurements depend on; the others (mode, thresholds, workers) only judge them.
MEASURED_WITH = ("mutants", "mutant_timeout_s", "examples", "second_solution")
#: The code that measures an entry: these modules and every aiev module they import.
CODE_ROOTS = ("aiev.curate.checks", "aiev.sandbox.harness")


@dataclass(frozen=True)
class CheckSettings:
    """What check-tests runs with: its section, the sandbox section, and the model asked for a second solution
    (the one that wrote the batch, at another sampling seed; None without ``check_tests.second_solution``)."""

    section: dict[str, Any]
    sandbox: dict[str, Any]
    second: ModelSettings | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any], stage: str = "teaching") -> CheckSettings:
        section = cfg["check_tests"]
        second = None
        if section["second_solution"] and section["mode"] != "off":
            model = ModelSettings.from_section(cfg["llm"], STAGE_ROLE[stage])
            second = model.with_client(seed=(model.client.seed or 0) + 1)  # not the dialogue's own sample
        return cls(section, cfg["sandbox"], second)

    def limits(self, limits: Any) -> Any:
        """One execution runs the program, its mutants and the examples, each under its own time limit."""
        s = self.section
        return dataclasses.replace(limits, timeout_s=s["mutant_timeout_s"] * (s["mutants"] + 3) + 10)


def _read_entries(path: str | Path, skips: SkipLog) -> list[dict[str, Any]]:
    good = []
    for n, e in read_jsonl(path, skips):
        if not isinstance(e.get("id"), str) or not e.get("passed") or not isinstance(e.get("solution"), str) or (
            not isinstance(e.get("tests"), str)
        ):  # fmt: skip
            skips.add("bad-row: not a passing entry with solution and tests", file=str(path), line=n, id=e.get("id"))
        else:
            good.append(e)
    return good


def _measure_all(settings: CheckSettings, good: list[dict[str, Any]], state: Path,
                 sandbox: Any = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Every entry's measurements, judged: those of an earlier run with the same settings and code from the
    progress store, the others measured now (each fsynced as it finishes). Also: how many were resumed, the
    store set aside, and the second solutions' figures."""
    import asyncio

    from aiev.sandbox import execution_settings, from_config

    section = settings.section
    sb, limits, _ = from_config(settings.sandbox)
    sb, limits = sandbox or sb, settings.limits(limits)
    shaping = {"check": {k: section[k] for k in MEASURED_WITH}, "sandbox": execution_settings(settings.sandbox, limits)}
    resume = Resume(state, "check_tests.progress", shaping, CODE_ROOTS)
    store = resume.open()
    results = dict(store.done)
    todo = [e for e in good if e["id"] not in results]
    info: dict[str, Any] = {"resumed": len(good) - len(todo), "stale_store": resume.stale, "seconds": {}, "usage": None}
    if settings.second is not None and todo:
        info["seconds"], info["usage"] = asyncio.run(_second_solutions(settings.second, todo, state))
    checker = Checker(section, sb, limits)
    try:
        with ThreadPoolExecutor(max_workers=section["workers"]) as pool:
            for measured in pool.map(lambda e: checker.measure(e, info["seconds"].get(e["id"])), todo):
                store.add(measured)  # fsynced: a killed job loses at most the entries being checked
                results[measured["id"]] = measured
    finally:
        store.close()
    fsync_path(resume.progress)
    return {k: v | judge(v, section) for k, v in results.items()}, info


def _sort(good: list[dict[str, Any]], results: dict[str, dict[str, Any]], mode: str):
    """(kept rows, removed rows): ``filter`` removes what has a reason, ``report`` marks it ``would_remove``."""
    kept_rows, removed_rows = [], []
    for e in good:
        res = results.get(e["id"])
        if res is None:  # mode off
            kept_rows.append(e)
        elif res["reason"] is not None and mode == "filter":
            removed_rows.append({"id": e["id"], "reason": res["reason"], "detail": res["detail"],
                                 "quality": res["quality"]})  # fmt: skip
        else:
            quality = res["quality"] | {"would_remove": res["reason"]} if res["reason"] else res["quality"]
            kept_rows.append(e | {"quality": quality})
    return kept_rows, removed_rows


def _figures(checked: list[dict[str, Any]]) -> dict[str, Any]:
    """The quality figures summed over the checked entries."""

    def total(key: str) -> int:
        return sum(int(r["quality"].get(key) or 0) for r in checked)

    scores = [r["quality"].get("mutation_score") for r in checked if r["quality"].get("mutation_score") is not None]
    return {
        "unchecked": Tally().count(r.get("unchecked") for r in checked).of(UNCHECKED),
        "mutants": total("mutants"),
        "killed": total("killed"),
        "mutation_scores": scores,
        "mean_mutation_score": round(sum(scores) / len(scores), 4) if scores else None,
        "examples_checked": total("examples"),
        "examples_unchecked": total("examples_unchecked"),
        "stillborn_mutants": total("stillborn"),
    }


def run(settings: CheckSettings, paths: Any, sandbox: Any = None) -> dict[str, Any]:
    """The ``check-tests`` step (``paths``: ``input``, ``output``, ``removed``, ``state_dir``). ``sandbox``: a
    sandbox to run in instead of the section's (tests)."""
    section, mode = settings.section, settings.section["mode"]
    t0 = time.perf_counter()
    skips = SkipLog()
    good = _read_entries(paths.input, skips)
    results: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"resumed": 0, "stale_store": None, "seconds": {}, "usage": None}
    if mode != "off" and good:
        results, info = _measure_all(settings, good, Path(paths.state_dir), sandbox)
    kept_rows, removed_rows = _sort(good, results, mode)
    write_jsonl(paths.output, kept_rows)
    write_jsonl(paths.removed, removed_rows)
    checked = [results[e["id"]] for e in good if e["id"] in results]
    reasons = Tally().count(r["reason"] for r in checked if r["reason"])
    second = [r["quality"].get("second_solution_passes") for r in checked]
    return {
        "input": str(paths.input),
        "mode": mode,
        "settings": section,
        "entries": len(good),
        "kept": len(kept_rows),
        "removed": len(removed_rows),
        "removed_by_reason": reasons.of(REASONS) if mode == "filter" else {},
        "would_remove_by_reason": reasons.of(REASONS),
        "resumed": info["resumed"],
        "stale_store": info["stale_store"],
        **_figures(checked),
        "second_solution": None
        if not section["second_solution"]
        else {
            "requested": len(info["seconds"]) if mode != "off" else 0,
            "disagree": second.count(False),
            "agree": second.count(True),
            "usage": info["usage"],
        },
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_per_entry": round(sum(r.get("seconds", 0) for r in checked) / len(checked), 4) if checked else None,
        "bad_rows": skips.rows,
    }
