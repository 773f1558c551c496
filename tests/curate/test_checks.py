"""`aiev check-tests` on entries built here, in the real sandbox: strong tests kept, each weak kind removed with its
reason, a wrong solution behind weak tests removed, a stated example that disagrees, a TestCase nothing runs,
unittest and plain asserts alike, mutants that sleep, fork or flood contained, modes, and a kill -9 resume."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from aiev.config import load_config
from aiev.curate import checks
from aiev.curate.mutants import mutants
from aiev.sandbox import Limits, SandboxError, get_sandbox
from tests.conftest import BIN, tool_or_skip, write_jsonl

SECTION = load_config({})["check_tests"]


@pytest.fixture(scope="module")
def checker() -> checks.Checker:
    try:
        sandbox = get_sandbox("bwrap")
    except SandboxError as exc:
        tool_or_skip("bwrap", str(exc))
    return checks.Checker(SECTION, sandbox, Limits(timeout_s=120))


def entry(eid: str, problem: str, solution: str, tests: str) -> dict:
    msgs = [{"role": "user", "content": problem}, {"role": "assistant", "content": f"```python\n{solution}```"},
            {"role": "execution", "content": "exit code 0", "exit_code": 0, "stdout": "", "stderr": ""}]  # fmt: skip
    return {"id": eid, "seed_id": eid, "passed": True, "problem": problem, "solution": solution, "tests": tests,
            "messages": msgs}  # fmt: skip


ADD = "def add(a, b):\n    return a + b\n"
CASES = {
    # strong: kept, with its figures
    "strong": (entry("strong", "Write `add(a, b)`. For example, `add(2, 3)` returns `5`.", ADD,
                     "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nassert add(0, 7) == 7\n"), None),
    "unittest": (entry("unittest", "Write `add(a, b)`.", ADD,
                       "import unittest\n\nclass T(unittest.TestCase):\n    def test_add(self):\n"
                       "        self.assertEqual(add(2, 3), 5)\n        self.assertEqual(add(0, 7), 7)\n\n"
                       "unittest.main()\n"), None),
    "testcase_nothing_runs": (entry("testcase_nothing_runs", "Write `add(a, b)`.", ADD,
                                    "import unittest\n\nclass T(unittest.TestCase):\n    def test_add(self):\n"
                                    "        self.assertEqual(add(2, 3), 5)\n        self.assertEqual(add(0, 7), 7)\n"),
                              None),
    # weak kinds
    "print_only": (entry("print_only", "Write `add(a, b)`.", ADD, "print(add(2, 3))\n"), "no_assertions"),
    "tautology": (entry("tautology", "Write `add(a, b)`.", ADD, "assert True\nassert add(1, 2) == add(1, 2)\n"),
                  "tautology"),
    "swallowed": (entry("swallowed", "Write `add(a, b)`.", ADD,
                        "try:\n    assert add(2, 3) == 6\nexcept AssertionError:\n    pass\n"), "tests_fail"),
    "not_called": (entry("not_called", "Write `noop(obj)` returning obj.", "def my_noop(obj):\n    return obj\n",
                         "assert my_noop(1) == 1\nassert my_noop('a') == 'a'\n"), "not_called"),
    "never_uses_solution": (entry("never_uses_solution", "Write `add`.", ADD, "assert 1 + 1 == 2\nassert 3 > 1\n"),
                            "not_called"),
    "uncalled_test_with_args": (entry("uncalled_test_with_args", "Write `add(a, b)`.", ADD,
                                      "def check(x):\n    assert add(x, 0) == x\n"), "tests_not_run"),
    "testcase_fails": (entry("testcase_fails", "Write `add(a, b)`.", "def add(a, b):\n    return a - b\n",
                             "import unittest\n\nclass T(unittest.TestCase):\n    def test_add(self):\n"
                             "        self.assertEqual(add(2, 3), 5)\n"), "tests_fail"),
    # a wrong solution behind weak tests: quote_string returns its input, tested by one repeated assertion
    "repeated": (entry("repeated", "Write `quote_string(value)` that wraps value in double quotes.",
                       "def quote_string(value):\n    if value.startswith('\"'):\n        return value\n"
                       "    return value\n",
                       "assert quote_string('hello') == 'hello'\n" * 3), "weak"),
    "example": (entry("example", "Write `square(x)`. For example, `square(3)` returns `9`.",
                      "def square(x):\n    return x * 2\n", "assert square(2) == 4\nassert square(0) == 0\n"),
                "example_mismatch"),
    "doctest_example": (entry("doctest_example", "Write `square(x)`:\n\n>>> square(3)\n9\n",
                              "def square(x):\n    return x * 2\n", "assert square(2) == 4\nassert square(0) == 0\n"),
                        "example_mismatch"),
    "solution_in_problem": (entry("solution_in_problem", f"Fix this code:\n```python\n{ADD}```\n", ADD,
                                  "assert add(2, 3) == 5\nassert add(0, 7) == 7\n"), "solution_in_problem"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_each_kind_is_kept_or_removed_with_its_reason(checker, name):
    e, reason = CASES[name]
    got = checker.check(e)
    assert got["reason"] == reason, got
    assert got["unchecked"] is None
    if reason is None:
        q = got["quality"]
        assert q["checks_executed"] >= 2 and q["mutants"] >= 2 and q["mutation_score"] >= SECTION["min_mutation_score"]
        assert q["called"] == ["add"]


def test_unittest_and_plain_asserts_are_measured_alike(checker):
    plain = checker.check(CASES["strong"][0])["quality"]
    unit = checker.check(CASES["unittest"][0])["quality"]
    assert (plain["assertions"], unit["assertions"]) == (3, 2)
    assert plain["mutation_score"] == unit["mutation_score"] == 1.0


def test_the_figures_of_a_weak_entry_name_what_survived(checker):
    got = checker.check(CASES["repeated"][0])
    q = got["quality"]
    assert q["duplicates"] == 2 and q["killed"] < q["mutants"] / 2
    assert "quote_string: return the first argument" in q["survivors"]
    assert q["distinct"] == 1 and got["detail"] == "the tests check 1 distinct case(s) (2 repeated assertion(s))"
    # two cases, both answered by the input itself: caught by the mutants instead
    two = dict(CASES["repeated"][0], tests="assert quote_string('a') == 'a'\nassert quote_string('b') == 'b'\n")
    got = checker.check(two)
    assert got["reason"] == "weak" and got["detail"] == (
        f"the tests killed {got['quality']['killed']} of {got['quality']['mutants']} mutants"
    )


def test_mutants_that_sleep_fork_or_flood_are_contained(checker):
    """Mutants run in one sandbox execution, each in its own forked child: one that sleeps, one that forks without
    end and one that floods stdout are each killed at their own time limit, the others still run, and the
    execution ends in seconds."""
    from aiev.interpreter import run_batch

    tests = "\n\nassert f() == 1\n"
    bodies = ["return 1", "import time; time.sleep(600)", "import os\n    while True: os.fork()",
              "while True: print('y' * 100000)", "return 2", "return 1"]  # fmt: skip
    programs = [{"source": f"def f():\n    {b}\n{tests}", "tests_line": 4} for b in bodies]
    t0 = time.monotonic()
    raw = run_batch(checker.sandbox, {"programs": programs, "timeout_s": 2}, Limits(timeout_s=60))
    assert time.monotonic() - t0 < 30
    assert raw is not None, "the execution ended without its results"
    ok = [r["status"] == 0 and not r["timed_out"] for r in raw["programs"]]
    assert ok == [True, False, False, False, False, True]  # the fork bomb fails at the sandbox's process limit
    timed_out = [r["timed_out"] for r in raw["programs"]]
    assert timed_out[:2] == [False, True] and timed_out[3:] == [True, False, False]
    assert raw["programs"][-1]["result"]["asserts"] == 1  # a child after the fork bomb still runs and counts


def test_mutants_are_distinct_deterministic_and_lead_with_the_stand_ins():
    sol = "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    return min(x, hi)\n"
    first = mutants(sol, 8, seed="a")
    assert [m.source for m in first] == [m.source for m in mutants(sol, 8, seed="a")]
    assert len({m.source for m in first}) == len(first) and sol.strip() not in {m.source for m in first}
    assert [m.what for m in first[:2]] == ["clamp: return None", "clamp: return the first argument"]
    assert {m.kind for m in first} >= {"stand-in", "comparison", "return"}
    assert mutants("def f(:\n", 8) == []


def test_problem_examples_and_asked_functions():
    from aiev.curate.problem import Example, asked_functions, stated_examples

    text = "Write `f(x)`. For example, `f(2)` returns `5`, and `g(1)` returns `2`; `len(x)` is used.\n>>> f(3)\n7\n"
    assert stated_examples(text, {"f"}) == ([Example("f(3)", "7"), Example("f(2)", "5")], 1)  # g: not defined
    assert asked_functions(text) == ["f"]  # g is only mentioned; builtins left out


def run_step(tmp_path: Path, rows: list[dict], mode: str = "filter", extra: dict | None = None,
             **popen) -> subprocess.Popen:  # fmt: skip
    write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = {"check_tests": {"mode": mode, "workers": 1, **(extra or {})}, "sandbox": {"timeout_s": 20}}
    argv = [str(BIN / "aiev"), "check-tests", "--config", json.dumps(cfg), "--input", str(tmp_path / "in.jsonl"),
            "--output", str(tmp_path / "kept.jsonl"), "--removed", str(tmp_path / "removed.jsonl"),
            "--report", str(tmp_path / "report.json"), "--state-dir", str(tmp_path / "state")]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x]


def test_the_step_filters_reports_and_resumes_after_kill_9(tmp_path, checker):
    rows = [CASES[n][0] for n in CASES] + [{"id": "bad", "passed": True}]
    proc = run_step(tmp_path, rows, start_new_session=True)
    progress = tmp_path / "state" / "check_tests.progress.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not progress.exists() or len(progress.read_text().splitlines()) < 3):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {json.loads(x)["id"] for x in progress.read_text().splitlines() if x.endswith("}")}
    assert 3 <= len(done_before) < len(CASES)
    proc = run_step(tmp_path, rows)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["resumed"] == len(done_before) and rep["entries"] == len(CASES) and len(rep["bad_rows"]) == 1
    ids = [json.loads(x)["id"] for x in progress.read_text().splitlines() if x.endswith("}")]
    assert sorted(ids) == sorted(set(ids)) and set(ids) == set(CASES)  # no entry checked twice
    expected = {n: r for n, (_, r) in CASES.items()}
    removed = {r["id"]: r["reason"] for r in lines(tmp_path / "removed.jsonl")}
    assert removed == {n: r for n, r in expected.items() if r}
    kept = lines(tmp_path / "kept.jsonl")
    assert [k["id"] for k in kept] == [n for n, r in expected.items() if r is None]
    assert all(k["quality"]["mutants"] >= 2 for k in kept)
    assert rep["removed_by_reason"]["weak"] == 1 and sum(rep["removed_by_reason"].values()) == len(removed)

    # mode report: nothing removed, every finding reported and marked on the row (the results are reused: the mode
    # decides what is done with them, not what they are)
    proc = run_step(tmp_path, rows, mode="report")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rep2 = json.loads((tmp_path / "report.json").read_text())
    assert rep2["removed"] == 0 and len(lines(tmp_path / "kept.jsonl")) == len(CASES)
    assert rep2["would_remove_by_reason"] == rep["removed_by_reason"] and rep2["resumed"] == len(CASES)
    marked = {k["id"]: k["quality"].get("would_remove") for k in lines(tmp_path / "kept.jsonl")}
    assert marked == expected

    proc = run_step(tmp_path, rows, mode="off")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert [k["id"] for k in lines(tmp_path / "kept.jsonl")] == list(CASES)

    # a changed threshold judges the stored measurements again, running nothing: the repeated assertion is kept
    proc = run_step(tmp_path, rows, extra={"min_distinct_checks": 1, "min_mutation_score": 0.0})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rep_t = json.loads((tmp_path / "report.json").read_text())
    assert rep_t["resumed"] == len(CASES) and rep_t["removed_by_reason"]["weak"] == 0
    assert "repeated" in {k["id"] for k in lines(tmp_path / "kept.jsonl")}

    # a setting that changes the measurements (fewer mutants) checks every entry again
    proc = run_step(tmp_path, rows, extra={"mutants": 4})
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rep3 = json.loads((tmp_path / "report.json").read_text())
    assert rep3["resumed"] == 0 and rep3["mutants"] < rep["mutants"]


def test_a_second_solution_that_fails_the_tests_is_reported_as_spec_doubt(tmp_path, checker):
    """check_tests.second_solution: the batch's model answers each problem once more (another sampling seed); its
    solution is run against the entry's tests in the same execution; a disagreement is reported, not removed."""
    from tests.scripted_server import ScriptedServer

    def programmer(messages):
        problem = messages[-1]["content"]
        body = "return a - b" if "doubt" in problem else "return b + a"
        return f"```python\ndef add(a, b):\n    {body}\n```\n```python\nassert add(1, 2) == 3\n```"

    tests = "assert add(2, 3) == 5\nassert add(0, 7) == 7\n"
    rows = [
        entry("agree", "Write `add(a, b)`, agree.", ADD, tests),
        entry("doubt", "Write `add(a, b)`, doubt.", ADD, tests),
    ]
    write_jsonl(tmp_path / "in.jsonl", rows)
    with ScriptedServer(programmer) as server:
        cfg = load_config({"check_tests": {"second_solution": True, "workers": 1},
                           "llm": {"teacher": {"base_url": server.url, "model": "scripted"}}})  # fmt: skip
        paths = argparse.Namespace(input=tmp_path / "in.jsonl", output=tmp_path / "kept.jsonl",
                                   removed=tmp_path / "removed.jsonl", state_dir=tmp_path / "state")  # fmt: skip
        rep = checks.run(checks.CheckSettings.from_config(cfg), paths)
        asked = server.received
    kept = {k["id"]: k["quality"] for k in lines(tmp_path / "kept.jsonl")}
    assert kept["agree"]["second_solution_passes"] is True and kept["doubt"]["second_solution_passes"] is False
    assert rep["removed"] == 0 and asked == 2
    second = rep["second_solution"]
    assert (second["requested"], second["agree"], second["disagree"]) == (2, 1, 1)
    assert second["usage"]["requests"] == 2 and second["usage"]["completion_tokens"] > 0
