"""Same tests, same verdict, whatever the style (:mod:`aiev.curate.styles`): the dialogue's verdict, check-tests'
reason, the distinct cases counted and the mutation score agree across the eight styles instruct models write
tests in, for a right and a wrong solution, in the real sandbox."""

from __future__ import annotations

import pytest

from aiev.config import load_config
from aiev.curate import checks
from aiev.curate.styles import STYLES, render
from aiev.interpreter import run_checked
from aiev.sandbox import Limits
from tests.conftest import bwrap_sandbox

SECTION = load_config({})["check_tests"]

FUNCTIONS = {
    # name: (problem, right solution, wrong solution, cases)
    "clamp": (
        "Write `clamp(x, lo, hi)` that limits x to the range [lo, hi].",
        "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x > hi:\n        return hi\n    return x\n",
        "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x >= hi:\n        return x\n    return x\n",
        [((5, 0, 3), 3), ((-1, 0, 3), 0), ((2, 0, 3), 2), ((0, 0, 3), 0), ((3, 0, 3), 3)],
    ),
    "initials": (
        "Write `initials(name)` returning the upper-case first letters of the words of name, or None when empty.",
        "def initials(name):\n    words = name.split()\n    if not words:\n        return None\n"
        "    return ''.join(w[0].upper() for w in words)\n",
        "def initials(name):\n    words = name.split()\n    if not words:\n        return ''\n"
        "    return ''.join(w[0] for w in words)\n",
        [(("ada lovelace",), "AL"), (("Grace",), "G"), (("",), None), (("a b c",), "ABC")],
    ),
}


@pytest.fixture(scope="module")
def sandbox():
    return bwrap_sandbox()


def judged(sandbox, name: str, which: str, style: str) -> dict:
    problem, right, wrong, cases = FUNCTIONS[name]
    solution = right if which == "right" else wrong
    tests = render(style, name, cases)
    execution = run_checked(sandbox, f"{solution}\n\n{tests}", solution.count("\n") + 3, Limits(timeout_s=30), None)
    entry = {"id": f"{name}-{which}-{style}", "problem": problem, "solution": solution, "tests": tests,
             "passed": True, "messages": []}  # fmt: skip
    got = checks.Checker(SECTION, sandbox, Limits(timeout_s=120)).check(entry)
    q = got["quality"]
    return {"dialogue": execution["verdict"], "cases": execution["checks"]["cases"], "reason": got["reason"],
            "check_cases": q.get("cases"), "score": q.get("mutation_score"), "killed": q.get("killed"),
            "mutants": q.get("mutants")}  # fmt: skip


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_the_same_tests_get_the_same_verdicts_in_every_style(sandbox, name):
    cases = len(FUNCTIONS[name][3])
    right = {style: judged(sandbox, name, "right", style) for style in STYLES}
    for style, got in right.items():
        assert got["dialogue"] == "pass", (style, got)
        assert got["cases"] == got["check_cases"] == cases, (style, got)
        assert got["reason"] is None, (style, got)
    kills = {style: got["killed"] for style, got in right.items()}
    assert max(kills.values()) - min(kills.values()) <= 1, kills  # the same mutation score, within one mutant
    assert len({got["mutants"] for got in right.values()}) == 1, right
    wrong = {style: judged(sandbox, name, "wrong", style) for style in STYLES}
    for style, got in wrong.items():
        assert got["dialogue"] == "checks_failed", (style, got)
        assert got["reason"] == "tests_fail", (style, got)


def test_every_style_renders_tests_that_parse():
    import ast

    for style in STYLES:
        ast.parse(render(style, "f", [((1, "a"), [1]), ((2, None), None)]))
    with pytest.raises(ValueError, match="unknown test style"):
        render("nose", "f", [])
