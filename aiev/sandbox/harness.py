"""Runs a program as ``python3 main.py`` would, and counts the checks its tests execute.

This file is copied into the sandbox beside ``main.py`` and run there (standard library only, never imported by
aiev): ``python3 _aiev_run.py main.py TESTS_LINE NONCE``. The program runs as ``__main__`` with its own file name
in tracebacks, its ``sys.argv`` and its exit status, so what it prints is what a plain run prints. Counted:

- ``assert`` statements executed from line ``TESTS_LINE`` on (the tests; a solution's own asserts are not tests),
- calls of ``unittest.TestCase`` check methods (``assertEqual``, ``fail``, ...), and the tests unittest ran
  (for programs whose text names ``unittest``).

When the program ends with status 0 and no unittest test ran, the ``TestCase`` classes it defines are run (a
program that defines tests and never runs them did not pass them); when it then executed no check at all, its
top-level ``test_*`` functions (pytest's layout) are called. The counts go to stderr as one line
``NONCE {json}``, which :func:`aiev.interpreter.run_checked` removes.
"""

import ast
import builtins
import contextlib
import json
import os
import sys
import types

__unittest = True  # unittest leaves this file's frames (the counting wrappers) out of its tracebacks
counts = {"asserts": 0, "assert_calls": 0, "tests_run": 0, "tests_failed": 0}
ran = []
_depth = [0]


def _count_assert():
    counts["asserts"] += 1


def _counted(method):
    def check(*args, **kwargs):
        if _depth[0] == 0:
            counts["assert_calls"] += 1
        _depth[0] += 1
        try:
            return method(*args, **kwargs)
        finally:
            _depth[0] -= 1

    check.__name__ = method.__name__
    check.__doc__ = method.__doc__
    return check


def _count_unittest():
    """Count unittest's checks and tests (imported only for programs that name it: ~25 ms saved otherwise)."""
    import unittest

    for name, method in list(vars(unittest.TestCase).items()):
        if isinstance(method, types.FunctionType) and (name.startswith("assert") or name == "fail"):
            setattr(unittest.TestCase, name, _counted(method))
    start_test = unittest.TestResult.startTest

    def started(self, test):
        counts["tests_run"] += 1
        return start_test(self, test)

    unittest.TestResult.startTest = started


class _CountAsserts(ast.NodeTransformer):
    def __init__(self, from_line):
        self.from_line = from_line

    def visit_Assert(self, node):
        if node.lineno < self.from_line:
            return node
        call = ast.Expr(ast.Call(ast.Name("__aiev_count_assert__", ast.Load()), [], []))
        return [ast.copy_location(call, node), node]


def _status(code):
    """The exit status ``sys.exit(code)`` gives (a non-int code is printed to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _report_exception(exc):
    """The traceback a plain run prints, without this file's frame."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == main.__code__.co_filename:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _run_unrun_testcases(module):
    unittest = sys.modules.get("unittest")
    if unittest is None:
        return 0
    cases = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, unittest.TestCase) and obj.__module__ == "__main__"
    ]
    if not cases:
        return 0
    ran.append("unittest")
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c) for c in cases)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(suite)
    counts["tests_failed"] += len(result.failures) + len(result.errors)
    return 0 if result.wasSuccessful() else 1


def _run_test_functions(module):
    import inspect

    status = 0
    for name, obj in list(vars(module).items()):
        if not (name.startswith("test") and isinstance(obj, types.FunctionType) and obj.__module__ == "__main__"):
            continue
        try:
            if any(
                p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                for p in inspect.signature(obj).parameters.values()
            ):
                continue  # pytest fixtures or parameters: not callable bare
        except (TypeError, ValueError):
            continue
        ran.append(name)
        counts["tests_run"] += 1
        try:
            obj()
        except SystemExit as exc:
            status = status or _status(exc.code)
        except BaseException as exc:  # the program's own failure, printed as a plain run prints it
            counts["tests_failed"] += 1
            _report_exception(exc)
            status = 1
    return status


def main():
    path, from_line, nonce = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    path = os.path.abspath(path)
    with open(path, "rb") as fh:
        source = fh.read()
    try:
        tree = ast.parse(source, path)
    except (SyntaxError, ValueError):
        # it cannot run; a plain run prints the error exactly as Python words it
        os.execv(sys.executable, [sys.executable, sys.argv[1]])
    if b"unittest" in source:
        _count_unittest()
    tree = ast.fix_missing_locations(_CountAsserts(from_line).visit(tree))
    code = compile(tree, path, "exec")
    builtins.__aiev_count_assert__ = _count_assert
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [sys.argv[1]]
    sys.path[0] = os.path.dirname(path)
    try:
        exec(code, module.__dict__)
        status = 0
    except SystemExit as exc:
        status = _status(exc.code)
    except BaseException as exc:  # the program's own failure, printed as a plain run prints it
        _report_exception(exc)
        status = 1
    if status == 0 and counts["tests_run"] == 0:
        status = _run_unrun_testcases(module)
    if status == 0 and counts["asserts"] + counts["assert_calls"] == 0 and counts["tests_run"] == 0:
        status = _run_test_functions(module)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream: the counts still go out on fd 2
            stream.flush()
    os.write(2, f"\n{nonce} {json.dumps(dict(counts, ran=ran))}\n".encode())
    sys.exit(status)


if __name__ == "__main__":
    main()
