"""The interpreter's check count (:func:`aiev.interpreter.run_checked`, :mod:`aiev.sandbox.harness`) in the real
sandbox: a pass means the tests ran; what the program prints is what a plain run prints."""

from __future__ import annotations

import pytest

from aiev.codeblocks import Program, extract_program
from aiev.interpreter import checks_executed, run_checked, run_program
from aiev.sandbox import Limits
from tests.conftest import bwrap_sandbox

LIMITS = Limits(timeout_s=20)


@pytest.fixture(scope="module")
def sb():
    return bwrap_sandbox()


def program(reply: str) -> Program:
    got = extract_program(reply)
    assert isinstance(got, Program), got
    return got


def both(sb, reply: str) -> tuple[dict, dict]:
    """(the checked run, a plain ``python3 main.py`` run) of one reply."""
    p = program(reply)
    return run_checked(sb, p.source, p.tests_line, LIMITS, None), run_program(sb, p.source, LIMITS, None)


UNITTEST = """```python
import unittest

def double(x):
    return x * 2

class TestDouble(unittest.TestCase):
    def test_two(self):
        self.assertEqual(double(2), 4)
        self.assertTrue(double(1))

    def test_raises(self):
        with self.assertRaises(TypeError):
            double(None)

if __name__ == "__main__":
    unittest.main()
```"""


def test_unittest_checks_are_counted_and_the_output_is_a_plain_runs(sb):
    checked, plain = both(sb, UNITTEST)
    assert checked["exit_code"] == plain["exit_code"] == 0
    assert checked["checks"]["assert_calls"] == 3 and checked["checks"]["tests_run"] == 2
    assert checks_executed(checked) == 3 and checked["checks"]["ran"] == [] and "note" not in checked
    assert checked["stdout"] == plain["stdout"]
    assert checked["stderr"].replace(_time(checked), "") == plain["stderr"].replace(_time(plain), "")
    assert "aiev-checks" not in checked["stderr"]


def _time(execution: dict) -> str:
    """unittest's 'Ran 2 tests in 0.001s' line: its time differs between two runs."""
    return next(line for line in execution["stderr"].splitlines() if line.startswith("Ran "))


def test_a_testcase_nothing_runs_is_run_and_its_failure_fails_the_program(sb):
    reply = UNITTEST.replace('if __name__ == "__main__":\n    unittest.main()\n', "").replace(
        "assertEqual(double(2), 4)", "assertEqual(double(2), 5)"
    )
    checked, plain = both(sb, reply)
    assert plain["exit_code"] == 0 and plain["stderr"] == ""  # the false pass of a plain run
    assert checked["exit_code"] == 1
    assert checked["checks"]["ran"] == ["unittest"] and checked["checks"]["tests_failed"] == 1
    assert "AssertionError: 4 != 5" in checked["stderr"] and "FAILED (failures=1)" in checked["stderr"]
    assert '_aiev_run.py"' not in checked["stderr"]  # the counting wrappers stay out of the traceback
    assert "the interpreter ran them" in checked["note"]


def test_plain_asserts_and_uncalled_test_functions_are_treated_alike(sb):
    reply = (
        "```python\ndef inc(x):\n    assert x is not None  # the solution's own check: not a test\n    return x + 1\n\n"
    )
    checked, _ = both(sb, reply + "assert inc(1) == 2\nassert inc(2) == 3\n```")
    assert (checked["exit_code"], checked["checks"]["asserts"]) == (0, 2)
    checked, plain = both(sb, reply + "def test_inc():\n    assert inc(1) == 3\n```")
    assert plain["exit_code"] == 0  # nothing calls test_inc
    assert checked["exit_code"] == 1 and checked["checks"]["ran"] == ["test_inc"]
    assert 'File "/sandbox/main.py", line 6, in test_inc' in checked["stderr"] and "_aiev_run" not in checked["stderr"]


def test_a_program_that_checks_nothing_counts_zero(sb):
    checked, plain = both(sb, "```python\ndef f(x):\n    return x\n```\n```python\nprint(f(1))\n```")
    assert checked["exit_code"] == 0 and checks_executed(checked) == 0
    assert checked["stdout"] == plain["stdout"] == "1\n"


@pytest.mark.parametrize(
    ("tail", "code"),
    [
        ("raise ValueError('boom')", 1),
        ("import sys\nsys.exit(3)", 3),
        ("import sys\nsys.exit('bye')", 1),
        ("x = (", 1),  # does not parse: Python's own message
    ],
)  # fmt: skip
def test_failures_look_as_in_a_plain_run(sb, tail, code):
    checked, plain = both(sb, f"```python\ndef f():\n    return 1\n\nassert f() == 1\n{tail}\n```")
    assert checked["exit_code"] == plain["exit_code"] == code
    assert (checked["stdout"], checked["stderr"]) == (plain["stdout"], plain["stderr"])


def test_a_program_that_ends_without_the_count_is_not_counted(sb):
    checked, _ = both(sb, "```python\nimport os\n\nX = 1\nassert X == 1\nos._exit(0)\n```")
    assert checked["exit_code"] == 0 and checked["checks"] is None and checks_executed(checked) == 0
    p = program("```python\nimport time\n\nX = 1\nassert X == 1\ntime.sleep(30)\n```")
    slow = run_checked(sb, p.source, p.tests_line, Limits(timeout_s=2), None)
    assert slow["timed_out"] and slow["checks"] is None


EXPLAINED = """```python
def add(a, b):
    assert isinstance(a, int)
    return a - b
```
```python
assert add(1, 1) == 0
assert [add(1, 0)] == [1]
{failing}
```"""


@pytest.mark.parametrize(
    ("failing", "message"),
    [
        ("assert add(2, 3) == 5", "AssertionError: add(2, 3) is -1, not 5"),
        ("assert add(2, 3) == [5, -5]", "AssertionError: add(2, 3) is -1, not [5, -5]"),
        ("assert add(2, 3) == add(3, 2)", "AssertionError: add(2, 3) is -1, add(3, 2) is 1"),
        ("assert add(2, 3) == 5, 'kept'", "AssertionError: kept"),  # the program's own message stays
        ("assert add(2, 3) > 5", "AssertionError"),  # only == is explained
        ("add('x', 1)", "AssertionError"),  # the solution's own assert is not a test: a plain one
    ],
)  # fmt: skip
def test_a_failed_test_assert_says_what_the_left_side_was(sb, failing, message):
    """Like pytest: a test's ``assert A == B`` that fails shows A's value, so the feedback round can tell a wrong
    function from a wrong expected value; the same checks pass and count as before."""
    checked, plain = both(sb, EXPLAINED.format(failing=failing))
    assert checked["exit_code"] == plain["exit_code"] == 1
    assert checked["stderr"].rstrip().splitlines()[-1] == message
    assert plain["stderr"].rstrip().splitlines()[-1].startswith("AssertionError")
    assert checked["checks"]["asserts"] == 2 + failing.startswith("assert")
