"""One set of test cases written in each style instruct models write tests in.

The verdicts of the dialogue (:func:`aiev.interpreter.verdict`) and of ``aiev check-tests`` are meant to depend on
what the tests check, not on how they are written. :func:`render` writes the same cases (a function's arguments
and the value it should return) as plain asserts, ``unittest.main()``, ``unittest.main(exit=False)`` (the
notebook idiom), a ``TextTestRunner`` whose result nobody reads, uncalled pytest-style functions, a table-driven
loop, a ``subTest`` loop, or doctest examples. ``tests/curate/test_styles.py`` asserts the verdicts agree across
them, and ``benchmarks/verdicts_truth.py`` measures them against EvalPlus's plus tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

STYLES = ("plain", "unittest_main", "unittest_exit_false", "text_runner", "pytest_functions", "table", "subtest",
          "doctest")  # fmt: skip

Case = tuple[Sequence[Any], Any]  # (arguments, the value the call should return)


def _call(func: str, args: Sequence[Any]) -> str:
    return f"{func}({', '.join(repr(a) for a in args)})"


def _testcase(func: str, cases: Sequence[Case]) -> list[str]:
    lines = ["import unittest", "", "", f"class Test{func.title().replace('_', '')}(unittest.TestCase):"]
    for i, (args, want) in enumerate(cases):
        lines += [f"    def test_case_{i}(self):", f"        self.assertEqual({_call(func, args)}, {want!r})", ""]
    return lines


def render(style: str, func: str, cases: Sequence[Case]) -> str:
    """The tests of ``func`` on ``cases`` in ``style`` (one of :data:`STYLES`), as a block of Python."""
    if style == "plain":
        lines = [f"assert {_call(func, args)} == {want!r}" for args, want in cases]
    elif style == "unittest_main":
        lines = [*_testcase(func, cases), "", 'if __name__ == "__main__":', "    unittest.main()"]
    elif style == "unittest_exit_false":
        lines = [*_testcase(func, cases), "", "unittest.main(argv=[''], exit=False)"]
    elif style == "text_runner":
        name = f"Test{func.title().replace('_', '')}"
        lines = [*_testcase(func, cases), "", f"suite = unittest.TestLoader().loadTestsFromTestCase({name})",
                 "unittest.TextTestRunner(verbosity=2).run(suite)"]  # fmt: skip
    elif style == "pytest_functions":
        lines = []
        for i, (args, want) in enumerate(cases):
            lines += [f"def test_{func}_{i}():", f"    assert {_call(func, args)} == {want!r}", "", ""]
    elif style == "table":
        rows = [f"    ({tuple(args)!r}, {want!r})," for args, want in cases]
        lines = ["CASES = [", *rows, "]", "", "for args, expected in CASES:", f"    assert {func}(*args) == expected"]
    elif style == "subtest":
        rows = [f"        ({tuple(args)!r}, {want!r})," for args, want in cases]
        lines = ["import unittest", "", "", "class TestAll(unittest.TestCase):", "    CASES = [", *rows, "    ]", "",
                 "    def test_cases(self):", "        for args, expected in self.CASES:",
                 "            with self.subTest(args=args):",
                 f"                self.assertEqual({func}(*args), expected)",
                 "", "", "unittest.main(exit=False)"]  # fmt: skip
    elif style == "doctest":
        examples = []
        for args, want in cases:  # None prints nothing at the prompt: print it
            call = _call(func, args) if want is not None else f"print({_call(func, args)})"
            examples += [f"    >>> {call}", f"    {want!r}"]
        # run_docstring_examples, not testmod: testmod also runs the examples of the solution's own docstrings,
        # which are other checks than these (HumanEval's prompts hold some that are not valid doctests)
        lines = ["def _examples():", '    r"""', *examples, '    """', "", "", "import doctest", "",
                 "doctest.run_docstring_examples(_examples, globals(), name='tests')"]  # fmt: skip
    else:
        raise ValueError(f"unknown test style {style!r}: one of {', '.join(STYLES)}")
    return "\n".join(lines) + "\n"
