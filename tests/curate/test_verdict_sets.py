"""Entries written the way instruct models write them, and as an adversary would, each with the verdict it must get
and why: the dialogue's verdict on a program (:func:`aiev.interpreter.verdict`, in the real sandbox) and
``aiev check-tests``' reason on an entry. The cases are kinds, not shapes: each is one instance of a class of
inputs the verdict must get right whatever the spelling."""

from __future__ import annotations

import pytest

from aiev.config import load_config
from aiev.curate import checks
from aiev.interpreter import run_checked
from aiev.sandbox import Limits
from tests.conftest import bwrap_sandbox

SECTION = load_config({})["check_tests"]
ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return a + b if a < 5 else a - b\n"
UT = (
    "import unittest\n\nclass TestAdd(unittest.TestCase):\n    def test_small(self):\n"
    "        self.assertEqual(add(2, 3), 5)\n        self.assertEqual(add(0, 0), 0)\n"
    "    def test_large(self):\n        self.assertEqual(add(7, 1), 8)\n        self.assertEqual(add(9, 9), 18)\n"
)


@pytest.fixture(scope="module")
def sandbox():
    return bwrap_sandbox()


# ------------------------------------------------------------------------------------------------ the dialogue

DIALOGUE = {
    # name: (solution, tests, verdict)
    "notebook_idiom_failing": (WRONG_ADD, UT + "\nunittest.main(argv=[''], exit=False)\n", "checks_failed"),
    "notebook_idiom_passing": (ADD, UT + "\nunittest.main(argv=[''], exit=False)\n", "pass"),
    "runner_result_ignored": (WRONG_ADD, UT + "\nsuite = unittest.TestLoader().loadTestsFromTestCase(TestAdd)\n"
                              "unittest.TextTestRunner().run(suite)\nprint('done')\n", "checks_failed"),
    "uncalled_failing_beside_a_passing_assert": (ADD, "assert add(1, 1) == 2\n\ndef test_more():\n"
                                                 "    assert add(2, 2) == 5\n", "checks_failed"),
    "failing_case_left_out_by_defaultTest": (ADD, UT + "\nclass TestBad(unittest.TestCase):\n    def test_x(self):\n"
                                             "        self.assertEqual(add(1, 1), 3)\n\n"
                                             "unittest.main(defaultTest='TestAdd', exit=False)\n", "checks_failed"),
    "failing_case_deleted": (ADD, UT + "\nclass TestBad(unittest.TestCase):\n    def test_x(self):\n"
                             "        self.assertEqual(add(1, 1), 3)\n\ndel TestBad\nunittest.main()\n",
                             "checks_failed"),
    "exit_0_after_the_first_assert": (ADD, "import sys\nassert add(1, 1) == 2\nsys.exit(0)\nassert add(2, 2) == 5\n",
                                      "exited_early"),
    "forged_trailer_from_the_command_line": (ADD, "import os, sys\nassert add(1, 1) == 2\n"
                                             "args = open('/proc/self/cmdline').read().split(chr(0))\n"
                                             "for a in args + list(sys.orig_argv):\n"
                                             "    sys.stderr.write('\\n' + a + ' {\"checks\": 9, \"failed\": 0}\\n')\n"
                                             "sys.stderr.flush()\nassert add(2, 2) == 5\n", "checks_failed"),
    "forged_trailer_then_os_exit": (ADD, "import os, sys\nassert add(2, 2) == 5 or True\n"
                                    "sys.stderr.write('\\naiev-checks-0 {\"checks\": 9}\\n')\nos._exit(0)\n", "error"),
    "hooks_called_by_name": (ADD, "import builtins\nfor n in ('__aiev_check_done__', '__aiev_check_done___'):\n"
                             "    getattr(builtins, n, print)(1)\n", "tests_not_run"),
    "harness_killed_by_the_program": (ADD, "import os, signal\nassert add(1, 1) == 2\n"
                                      "os.kill(os.getppid(), signal.SIGKILL)\n", "error"),
    "failure_caught_and_printed": (WRONG_ADD, "try:\n    assert add(7, 1) == 8\n    print('ok')\n"
                                   "except AssertionError:\n    print('FAILED')\nassert add(1, 1) == 2\n",
                                   "checks_failed"),
    "check_raising_inside_a_broad_except": (ADD, "def check():\n    assert add('a', 1) == 'a1'\n\ntry:\n    check()\n"
                                            "except Exception as e:\n    print('error', e)\nassert add(1, 1) == 2\n",
                                            "checks_failed"),
    "failing_subtest_exit_false": (WRONG_ADD, "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n"
                                   "        for a, b in [(1, 2), (7, 1)]:\n            with self.subTest(a=a):\n"
                                   "                self.assertEqual(add(a, b), a + b)\nunittest.main(exit=False)\n",
                                   "checks_failed"),
    "failing_doctest_exit_0": (WRONG_ADD, 'def _doc():\n    """\n    >>> add(7, 1)\n    8\n    """\n\nimport doctest\n'
                               "doctest.testmod()\n", "checks_failed"),
    "prints_only": (ADD, "print(add(1, 2))\nprint('all tests passed')\n", "tests_not_run"),
    "abstract_base_deleted_concrete_runs": (ADD, "import unittest\nclass Base(unittest.TestCase):\n    op = None\n"
                                            "    def test_op(self):\n        self.assertEqual(self.op(2, 3), 5)\n"
                                            "class TestAdd(Base):\n    op = staticmethod(add)\ndel Base\n"
                                            "unittest.main()\n", "pass"),
    "main_then_print": (ADD, UT + "\nif __name__ == '__main__':\n    unittest.main()\n    print('done')\n", "pass"),
    "expected_exception_plus_a_check": (ADD, "try:\n    add(1, None)\nexcept TypeError:\n    pass\nelse:\n"
                                        "    assert False, 'no TypeError'\nassert add(2, 2) == 4\n", "pass"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(DIALOGUE))
def test_the_dialogue_verdict(sandbox, name):
    solution, tests, want = DIALOGUE[name]
    execution = run_checked(sandbox, f"{solution}\n\n{tests}", solution.count("\n") + 3, Limits(timeout_s=20), None)
    assert execution["verdict"] == want, execution
    if want == "checks_failed" and execution["exit_code"] == 0:
        assert "failure" in execution["note"]  # the feedback quotes what failed


# ------------------------------------------------------------------------------------------------ check-tests


def entry(eid: str, problem: str, solution: str, tests: str) -> dict:
    return {"id": eid, "passed": True, "problem": problem, "solution": solution, "tests": tests, "messages": []}


MEAN = "def mean(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total / len(xs)\n"
FIND = ("def find_index(items, target):\n    for i, item in enumerate(items):\n        if item == target:\n"
        "            return i\n    return -1\n")  # fmt: skip
FIND_TESTS = ("assert find_index([1, 2, 3], 2) == 1\nassert find_index([], 1) == -1\n"
              "assert find_index([5, 5], 5) == 0\nassert find_index([1, 2], 9) == -1\n")  # fmt: skip
QUEUE = ("class Queue:\n    def __init__(self):\n        self.items = []\n\n    def enqueue(self, x):\n"
         "        self.items.append(x)\n\n    def dequeue(self):\n        if not self.items:\n            return None\n"
         "        return self.items.pop(0)\n")  # fmt: skip
QUEUE_TESTS = ("q = Queue()\nassert q.dequeue() is None\nq.enqueue(1)\nq.enqueue(2)\nassert q.dequeue() == 1\n"
               "assert q.dequeue() == 2\nassert q.dequeue() is None\n")  # fmt: skip
CUBE, WRONG_CUBE = "def cube(x):\n    return x ** 3\n", "def cube(x):\n    return x * x\n"
CUBE_TESTS = "assert cube(0) == 0\nassert cube(1) == 1\n"  # weak tests that x * x passes
CHECKS = {
    # correct code, strong tests, written in ways the old checks misread: kept
    "notebook_idiom": (entry("notebook_idiom", "Write `add(a, b)`.", ADD,
                             UT + "\nunittest.main(argv=[''], exit=False)\n"), None),
    "table_driven": (entry("table_driven", "Write `add(a, b)`.", ADD,
                           "CASES = [((2, 3), 5), ((0, 0), 0), ((7, 1), 8), ((-4, 4), 0), ((9, 9), 18)]\n"
                           "for args, want in CASES:\n    assert add(*args) == want\n"), None),
    "subtest_loop": (entry("subtest_loop", "Write `add(a, b)`.", ADD,
                           "import unittest\nclass T(unittest.TestCase):\n    def test(self):\n"
                           "        for a, b, want in [(2, 3, 5), (0, 0, 0), (7, 1, 8), (-4, 4, 0)]:\n"
                           "            with self.subTest(a=a, b=b):\n"
                           "                self.assertEqual(add(a, b), want)\n"
                           "unittest.main()\n"), None),
    "float_example": (entry("float_example", "Write `mean(xs)`. For example, `mean([0.1, 0.2])` returns `0.15`.",
                            MEAN, "assert mean([1, 2, 3]) == 2\nassert mean([4]) == 4\nassert mean([-1, 1]) == 0\n"),
                      None),
    "example_with_parameter_names": (entry("example_with_parameter_names",
                                           "Write `find_index(items, target)`: `find_index(items, target)` returns "
                                           "`-1` when target is not in items.", FIND, FIND_TESTS), None),
    "method_example": (entry("method_example", "Write a `Queue` class. On an empty queue `dequeue()` returns `None`.",
                             QUEUE, QUEUE_TESTS), None),
    "may_use_a_name": (entry("may_use_a_name", "Write `find_index(items, target)`. You may use `enumerate(items)` or "
                             "`Counter(iterable)` if you like.", FIND, FIND_TESTS), None),
    "fix_the_bug": (entry("fix_the_bug", "This code has a bug:\n\n```python\ndef add(a, b):\n    return a - b\n```\n"
                          "Fix it.", ADD, "assert add(2, 3) == 5\nassert add(0, 7) == 7\nassert add(-1, 1) == 0\n"),
                    None),
    "doctest_tests": (entry("doctest_tests", "Write `add(a, b)`.", ADD,
                            'def _doc():\n    """\n    >>> add(2, 3)\n    5\n    >>> add(0, 0)\n    0\n'
                            '    >>> add(7, 1)\n    8\n    """\n\nimport doctest\ndoctest.testmod()\n'), None),
    # wrong or untested: removed, with the reason
    "four_asserts_one_input": (entry("four_asserts_one_input", "Write `add(a, b)`.", ADD,
                                     "assert add(2, 3) == 5\nassert add(2, 3) > 4\nassert add(2, 3) < 6\n"
                                     "assert isinstance(add(2, 3), int)\n"), "weak"),
    "dead_asserts": (entry("dead_asserts", "Write `add(a, b)`.", ADD,
                           "if False:\n    assert add(1, 1) == 2\n    assert add(3, 3) == 6\nassert add(2, 3) == 5\n"),
                     "weak"),
    "solution_checks_itself": (entry("solution_checks_itself", "Write `double(x)`.",
                                     "def double(x):\n    return x * 2\n\nassert double(2) == 4\n"
                                     "assert double(3) == 6\n",
                                     "assert isinstance(double(1), int)\nassert isinstance(double(5), int)\n"), "weak"),
    "should_return": (entry("should_return", "Write `cube(x)`. For example, cube(3) should return 27.", WRONG_CUBE,
                            CUBE_TESTS), "example_mismatch"),
    "arrow": (entry("arrow", "Write `cube(x)`: cube(2) → 8, cube(3) → 27.", WRONG_CUBE, CUBE_TESTS),
              "example_mismatch"),
    "equality_in_one_span": (entry("equality_in_one_span", "Write `cube(x)` so that `cube(2) == 8`.", WRONG_CUBE,
                                   CUBE_TESTS), "example_mismatch"),
    "value_outside_backticks": (entry("value_outside_backticks", "Write `cube(x)`; cube(4) gives 64.", WRONG_CUBE,
                                      CUBE_TESTS), "example_mismatch"),
    "doctest_print": (entry("doctest_print", "Write `greet(name)`:\n\n>>> print(greet('Bob'))\nHello, Bob!\n",
                            "def greet(name):\n    return 'Hi ' + name\n",
                            "assert greet('a') == 'Hi a'\nassert greet('') == 'Hi '\nassert greet('Bo') == 'Hi Bo'\n"),
                      "example_mismatch"),
    "solution_indented_in_problem": (entry("solution_indented_in_problem",
                                           "Explain and test this function:\n\n    def add(a, b):\n"
                                           "        return a + b\n", ADD,
                                           "assert add(2, 3) == 5\nassert add(0, 7) == 7\nassert add(-1, 1) == 0\n"),
                                     "solution_in_problem"),
    "solution_renamed_in_problem": (entry("solution_renamed_in_problem",
                                          "Here is my code:\n```\ndef plus(x, y):\n  total = x + y\n"
                                          "  return total\n```\n"
                                          "Write tests for it.", ADD,
                                          "assert add(2, 3) == 5\nassert add(0, 7) == 7\nassert add(-1, 1) == 0\n"),
                                    "solution_in_problem"),
    "solution_in_prose": (entry("solution_in_prose", "The answer is def add(a, b): return a + b and nothing more.",
                                ADD, "assert add(2, 3) == 5\nassert add(0, 7) == 7\nassert add(-1, 1) == 0\n"),
                          "solution_in_problem"),
    "notebook_idiom_failing": (entry("notebook_idiom_failing", "Write `add(a, b)`.", WRONG_ADD,
                                     UT + "\nunittest.main(argv=[''], exit=False)\n"), "tests_fail"),
    "uncalled_failing_test": (entry("uncalled_failing_test", "Write `add(a, b)`.", ADD,
                                    "assert add(1, 1) == 2\nassert add(2, 2) == 4\n\ndef test_more():\n"
                                    "    assert add(2, 2) == 5\n"), "tests_fail"),
    "asked_function_missing": (entry("asked_function_missing", "Implement `subtract(a, b)`.", ADD,
                                     "assert add(2, 3) == 5\nassert add(0, 7) == 7\n"), "not_called"),
}  # fmt: skip


@pytest.fixture(scope="module")
def checker(sandbox) -> checks.Checker:
    return checks.Checker(SECTION, sandbox, Limits(timeout_s=120))


@pytest.mark.parametrize("name", list(CHECKS))
def test_the_check_tests_reason(checker, name):
    e, reason = CHECKS[name]
    got = checker.check(e)
    assert got["reason"] == reason, (got["reason"], got["detail"], got["quality"])
    if name in ("example_with_parameter_names", "method_example"):
        assert got["quality"]["examples_unchecked"] >= 1 and got["quality"]["examples"] == 0
    if name == "solution_checks_itself":
        assert "mutants" in got["detail"]  # its own module-level checks do not kill mutants for the tests
