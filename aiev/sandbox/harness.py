"""Runs a program as ``python3 main.py`` would, and counts the checks its tests execute.

This file is copied into the sandbox beside ``main.py`` and run there (standard library only, never imported by
aiev): ``python3 _aiev_run.py main.py TESTS_LINE NONCE``. The program runs as ``__main__`` with its own file name
in tracebacks, its ``sys.argv`` and its exit status, so what it prints is what a plain run prints. Counted:

- ``assert`` statements executed from line ``TESTS_LINE`` on (the tests; a solution's own asserts are not tests),
- calls of ``unittest.TestCase`` check methods (``assertEqual``, ``fail``, ...), and the tests unittest ran
  (for programs whose text names ``unittest``).

When the program ends with status 0 and no unittest test ran, the ``TestCase`` classes it defines are run (a
program that defines tests and never runs them did not pass them); when it then executed no check at all, its
top-level ``test_*`` functions (pytest's layout) are called. A test's failed ``assert A == B`` says what ``A`` was
(``AssertionError: add(2, 3) is -1, not 5``), as pytest's does. The counts go to stderr as one line
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

    if getattr(unittest.TestCase, "__aiev_counted__", False):
        return
    unittest.TestCase.__aiev_counted__ = True

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
        return [ast.copy_location(call, node), _explained(node)]


def _explained(node):
    """``assert A == B`` (no message) as ``assert (l := A) == (r := B), explanation``: the same evaluation in the
    same order, and a failure that says what A was, as pytest does (``add(2, 3) is -1, not 5``)."""
    test = node.test
    if node.msg is not None or not (isinstance(test, ast.Compare) and [type(o) for o in test.ops] == [ast.Eq]):
        return node
    left, right = test.left, test.comparators[0]
    names = ast.Name("__aiev_left", ast.Store()), ast.Name("__aiev_right", ast.Store())
    test = ast.Compare(ast.NamedExpr(names[0], left), [ast.Eq()], [ast.NamedExpr(names[1], right)])
    explain = ast.Call(
        ast.Name("__aiev_explain__", ast.Load()),
        [ast.Name("__aiev_left", ast.Load()), ast.Name("__aiev_right", ast.Load()),
         ast.Constant(ast.unparse(left)), ast.Constant(ast.unparse(right)), ast.Constant(_is_literal(right))],
        [],
    )  # fmt: skip
    return ast.copy_location(ast.Assert(test, explain), node)


def _is_literal(node):
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _short_repr(value):
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ of the program's own: still say which side failed
        return f"<{type(value).__name__}>"
    return text if len(text) <= 200 else text[:200] + "..."


def _explain(left, right, left_src, right_src, right_is_literal):
    """The message of a failed ``assert A == B``: ``A is <value>, not <B>`` (B a literal), else both values."""
    if right_is_literal:
        return f"{left_src} is {_short_repr(left)}, not {_short_repr(right)}"
    return f"{left_src} is {_short_repr(left)}, {right_src} is {_short_repr(right)}"


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


def _execute(source, path, argv0, from_line):
    """Run ``source`` (bytes) as ``__main__`` from ``path``, counting; its exit status (None: does not parse)."""
    try:
        tree = ast.parse(source, path)
    except (SyntaxError, ValueError):
        return None
    if b"unittest" in source:
        _count_unittest()
    tree = ast.fix_missing_locations(_CountAsserts(from_line).visit(tree))
    code = compile(tree, path, "exec")
    builtins.__aiev_count_assert__ = _count_assert
    builtins.__aiev_explain__ = _explain
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [argv0]
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
    return status


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream: the counts still go out on fd 2
            stream.flush()


def main():
    path, from_line, nonce = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(path, "rb") as fh:
        source = fh.read()
    status = _execute(source, os.path.abspath(path), path, from_line)
    if status is None:  # it cannot run; a plain run prints the error exactly as Python words it
        os.execv(sys.executable, [sys.executable, path])
    _flush()
    os.write(2, f"\n{nonce} {json.dumps(dict(counts, ran=ran))}\n".encode())
    sys.exit(status)


# ---------------------------------------------------------------------------------------- batch mode
# ``python3 _aiev_run.py --batch JOB.json NONCE``: JOB holds ``programs`` ([{source, tests_line}]: the entry's
# program first, then its mutants), ``examples`` ([{call, expected}]: the problem's stated examples, checked on
# ``solution``) and ``timeout_s`` (per program). Each runs in its own forked child (own process group, output to
# /dev/null, killed at its time limit), as many at once as the sandbox has cores (at most 4; ``parallel``), after
# the program's imports were made once in the parent; the results go to stderr as one line ``NONCE {json}``.


def _child(run):
    """Fork; the child runs ``run()`` (returning (status, payload)) and reports through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        me = os.getpid()
        try:
            os.setpgid(0, 0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            status, payload = run()
            _flush()
            if os.getpid() == me:  # not a process the program forked, come back here
                os.write(w, json.dumps(payload).encode())
        except BaseException:
            status = 1
        os._exit(status if isinstance(status, int) else 1)
    os.close(w)
    return pid, r


def _finish(pid, r, code, timed_out):
    import signal

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # whatever the program left running
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    try:  # the child's report (a process the program forked that outlived it never writes one)
        payload = json.JSONDecoder().raw_decode(b"".join(chunks).decode())[0] if chunks else None
    except ValueError:
        payload = None
    return {"status": os.waitstatus_to_exitcode(code), "timed_out": timed_out, "result": payload}


def _run_all(runs, timeout_s, parallel):
    """Each of ``runs`` in its own child, ``parallel`` at once, each killed after ``timeout_s``; their results."""
    import signal
    import time

    results = [None] * len(runs)
    running = {}  # pid -> (index, read end, deadline)
    todo = list(enumerate(runs))
    while todo or running:
        while todo and len(running) < parallel:
            i, run = todo.pop(0)
            pid, r = _child(run)
            running[pid] = (i, r, time.monotonic() + timeout_s)
        for pid, (i, r, deadline) in list(running.items()):
            done, code = os.waitpid(pid, os.WNOHANG)
            timed_out = False
            if not done and time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                _, code = os.waitpid(pid, 0)
                done, timed_out = pid, True
            if done:
                del running[pid]
                results[i] = _finish(pid, r, code, timed_out)
        if running:
            time.sleep(0.001)
    return results


def _preimport(source):
    """Make the program's top-level imports once, so that each forked child finds them loaded."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    for node in tree.body:
        if isinstance(node, ast.Import | ast.ImportFrom) and not (isinstance(node, ast.ImportFrom) and node.level):
            with contextlib.suppress(BaseException):
                exec(compile(ast.Module([node], []), "<imports>", "exec"), {})


def _run_one(source, tests_line):
    def run():
        status = _execute(source.encode(), os.path.abspath("main.py"), "main.py", tests_line)
        return (1 if status is None else status), dict(counts, ran=ran)

    return run


def _check_examples(solution, examples):
    def run():
        namespace = {"__name__": "__aiev_examples__", "__builtins__": builtins}
        exec(compile(solution, os.path.abspath("main.py"), "exec"), namespace)
        out = []
        for ex in examples:
            try:
                expected = ast.literal_eval(ex["expected"])
                got = eval(compile(ex["call"], "<example>", "eval"), namespace)
                out.append({"ok": bool(got == expected), "got": repr(got)[:200]})
            except BaseException as exc:
                out.append({"ok": False, "got": f"{type(exc).__name__}: {exc}"[:200]})
        return 0, out

    return run


def batch(job_path, nonce):
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    programs = job["programs"]
    if programs:
        _preimport(programs[0]["source"])
    runs = [_run_one(p["source"], p["tests_line"]) for p in programs]
    if job.get("examples"):
        runs.append(_check_examples(job["solution"], job["examples"]))
    parallel = job.get("parallel") or min(4, len(os.sched_getaffinity(0)))
    results = _run_all(runs, job["timeout_s"], parallel)
    examples = results.pop() if job.get("examples") else None
    os.write(2, f"\n{nonce} {json.dumps({'programs': results, 'examples': examples})}\n".encode())


if __name__ == "__main__":
    if sys.argv[1] == "--batch":
        batch(sys.argv[2], sys.argv[3])
    else:
        main()
