"""Runs a program as ``python3 main.py`` would, and judges what its tests checked.

This file is copied into the sandbox beside ``main.py`` and run there (standard library only, never imported by
aiev): ``python3 _aiev_run.py main.py TESTS_LINE``. The program runs in a forked child as ``__main__``, with its
own file name in tracebacks, its ``sys.argv`` and its exit status, so what it prints is what a plain run prints.
The child counts, whatever style the tests are written in:

- ``checks``: ``assert`` statements executed from line ``TESTS_LINE`` on (the tests; a solution's own asserts are
  not tests), ``unittest.TestCase`` check calls (``assertEqual``, ``fail``, ...), doctest examples;
- ``failed``: checks that failed or raised, even where the program caught the failure itself (a ``try`` around
  an assert, a runner whose result nobody reads, ``unittest.main(exit=False)``), with the first messages;
- ``tests_run``/``tests_failed``: every ``unittest`` result whatever ran it (``main()``, ``main(exit=False)``, a
  runner of the program's own), subtests, top-level ``test_*`` functions;
- ``cases``: distinct cases checked, counted as they execute: the inputs the tests gave the solution's functions
  (recorded at each call from the tests) before each check. A loop over 5 inputs is 5 cases, three checks of one
  input are 1, code that never runs is 0;
- ``calls``: how many times the tests called the solution's functions.

After the program, every ``TestCase`` and top-level ``test_*`` function it defined (even one it deleted) and did
not run is run. A program that leaves by ``sys.exit`` before top-level checks that follow is marked
(``skipped``), and where it died outside the tests (``died_in``: the solution's own module code, or the tests).

The counts reach the parent through a pipe; the parent, once the child has ended, writes them to stderr as one
line ``NONCE {json}``. The nonce is read from the file ``.aiev_nonce``, unlinked before the program starts and
never in the child's memory, so the program's own output cannot imitate that line (:func:`aiev.interpreter
.run_checked` removes it). The counting itself runs inside the program's process: a program written to tamper
with the interpreter's memory could still lie about its counts, which no model writing tests does by accident.
"""

import ast
import builtins
import contextlib
import json
import os
import sys
import types

__unittest = True  # unittest leaves this file's frames (the counting wrappers) out of its tracebacks
NONCE_FILE = ".aiev_nonce"
_MAX_FAILURES = 5

counts = {"checks": 0, "failed": 0, "asserts": 0, "assert_calls": 0, "examples": 0, "tests_run": 0,
          "tests_failed": 0, "cases": 0, "calls": 0}  # fmt: skip
failures = []
ran = []
state = {"depth": 0, "pending": {}, "last": None, "skipped": None, "died_in": None}
_cases = set()
_solution_codes = set()
_module_code = [None]
_tests_line = [1]
_defined_tests = {}  # top-level test functions by name, recorded at definition
_ran_tests = set()  # names of top-level test functions that ran, and (class, method) of TestCase tests
_testcases = []  # every TestCase subclass the program defined, in order
_repr = []  # a reprlib.Repr, made at the first recorded call (reprlib is imported only for programs that need it)
_libc = []  # the C library, opened once (children inherit it)


# ------------------------------------------------------------------------------------------------ counting


def _note_failure(text):
    if len(failures) < _MAX_FAILURES:
        failures.append(text[:300])


def _case(line):
    """One check executed: its case is the inputs the tests gave the solution since the last check."""
    pending = state["pending"]
    if pending:
        key = ("inputs", frozenset(pending))
        state["pending"] = {}
    elif state["last"] is not None and state["last"][0] != "line":
        key = state["last"]  # another check of the inputs the last one checked
    else:
        key = ("line", line)  # a check that gave the solution nothing: its own case
    state["last"] = key
    if key not in _cases:
        _cases.add(key)
        counts["cases"] += 1


def _check_done(line):
    """An assert of the tests passed (its case: the inputs given to the solution while it was evaluated)."""
    counts["checks"] += 1
    counts["asserts"] += 1
    _case(line)


def _check_failed(line, exc):
    """An assert of the tests failed or raised, whether or not the program catches it."""
    _check_done(line)
    counts["failed"] += 1
    _note_failure(f"line {line}: {type(exc).__name__}: {exc}".rstrip(": "))


def _key_repr(value):
    if not _repr:
        import reprlib

        r = reprlib.Repr()
        r.maxlevel, r.maxstring, r.maxother, r.maxlist = 4, 80, 80, 12
        _repr.append(r)
    try:
        text = _repr[0].repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    at = text.find(" at 0x")  # the default repr of an object: its address says nothing about the case
    return text if at < 0 else text[:at] + ">"


def _called(name, params, local):
    """A solution function started: when the tests (not the solution itself) called it, record its inputs."""
    try:
        caller = sys._getframe(2)
        code = caller.f_code
        if id(code) in _solution_codes or (code is _module_code[0] and caller.f_lineno < _tests_line[0]):
            return
        counts["calls"] += 1
        key = (name, tuple(_key_repr(local.get(p)) for p in params))
        state["pending"][key] = None
    except Exception:  # never let the count break the program
        pass


def _test_defined(func):
    _defined_tests.setdefault(func.__name__, func)
    return func


def _test_started(name):
    _ran_tests.add(name)


def _counted(method):
    def check(*args, **kwargs):
        if state["depth"]:
            return method(*args, **kwargs)
        counts["checks"] += 1
        counts["assert_calls"] += 1
        line = sys._getframe(1).f_lineno
        _case(line)  # its arguments were evaluated before the call
        state["depth"] += 1
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            counts["failed"] += 1
            _note_failure(f"line {line}: {type(exc).__name__}: {exc}")
            raise
        finally:
            state["depth"] -= 1

    check.__name__ = method.__name__
    check.__doc__ = method.__doc__
    return check


def _count_unittest():
    """Count unittest's checks, tests and results, whatever runs them (imported only for programs that name it)."""
    import unittest

    if getattr(unittest.TestCase, "__aiev_counted__", False):
        return
    unittest.TestCase.__aiev_counted__ = True
    for name, method in list(vars(unittest.TestCase).items()):
        if isinstance(method, types.FunctionType) and (name.startswith("assert") or name == "fail"):
            setattr(unittest.TestCase, name, _counted(method))

    original = vars(unittest.TestCase).get("__init_subclass__")

    def init_subclass(cls, **kwargs):
        if cls.__module__ == "__main__":
            _testcases.append(cls)
        if original is not None:
            return original.__func__(cls, **kwargs)
        return super(unittest.TestCase, cls).__init_subclass__(**kwargs)

    unittest.TestCase.__init_subclass__ = classmethod(init_subclass)
    result = unittest.TestResult
    start, fail, error, unexpected, sub = (result.startTest, result.addFailure, result.addError,
                                           result.addUnexpectedSuccess, result.addSubTest)  # fmt: skip

    def started(self, test):
        counts["tests_run"] += 1
        _ran_tests.add((type(test), getattr(test, "_testMethodName", "")))
        return start(self, test)

    def failed(self, test, err):
        counts["tests_failed"] += 1
        _note_failure(f"{test}: {err[0].__name__}: {err[1]}")
        return fail(self, test, err)

    def errored(self, test, err):
        counts["tests_failed"] += 1
        _note_failure(f"{test}: {err[0].__name__}: {err[1]}")
        return error(self, test, err)

    def unexpected_success(self, test):
        counts["tests_failed"] += 1
        _note_failure(f"{test}: unexpected success")
        return unexpected(self, test)

    def subtest(self, test, subtest, err):
        if err is not None:
            counts["tests_failed"] += 1
            _note_failure(f"{subtest}: {err[0].__name__}: {err[1]}")
        return sub(self, test, subtest, err)

    result.startTest, result.addFailure, result.addError = started, failed, errored
    result.addUnexpectedSuccess, result.addSubTest = unexpected_success, subtest


def _count_doctest():
    """Each doctest example is a check (imported only for programs that name doctest)."""
    import doctest

    runner = doctest.DocTestRunner
    if getattr(runner, "__aiev_counted__", False):
        return
    runner.__aiev_counted__ = True
    success, failure, unexpected = runner.report_success, runner.report_failure, runner.report_unexpected_exception

    def example(test, ex, failed_with=None):
        counts["checks"] += 1
        counts["examples"] += 1
        _case(test.lineno or 0)
        if failed_with is not None:
            counts["failed"] += 1
            _note_failure(f"doctest {test.name}: {ex.source.strip()} -> {failed_with}")

    def ok(self, out, test, ex, got):
        example(test, ex)
        return success(self, out, test, ex, got)

    def wrong(self, out, test, ex, got):
        example(test, ex, f"got {got.strip()!r}, expected {ex.want.strip()!r}")
        return failure(self, out, test, ex, got)

    def raised(self, out, test, ex, exc_info):
        example(test, ex, f"{exc_info[0].__name__}: {exc_info[1]}")
        return unexpected(self, out, test, ex, exc_info)

    runner.report_success, runner.report_failure, runner.report_unexpected_exception = ok, wrong, raised


# ------------------------------------------------------------------------------------------------ instrumenting


class _Instrument(ast.NodeTransformer):
    """Asserts of the tests are counted (a failure too, even one the program catches); the solution's functions
    record the inputs the tests give them; top-level test functions record their definition and their run."""

    def __init__(self, from_line, top_level):
        self.from_line = from_line
        self.top_level = top_level  # the ids of the module-level function definitions

    def visit_Assert(self, node):
        if node.lineno < self.from_line:
            return node
        line = ast.Constant(node.lineno)
        handler = ast.ExceptHandler(
            ast.Name("Exception", ast.Load()),
            "__aiev_exc",
            [ast.Expr(_call("__aiev_check_failed__", line, ast.Name("__aiev_exc", ast.Load()))),
             ast.Raise(exc=None, cause=None)],
        )  # fmt: skip
        done = ast.Expr(_call("__aiev_check_done__", line))
        return ast.copy_location(ast.Try([_explained(node)], [handler], [done], []), node)

    def visit_FunctionDef(self, node):
        self.generic_visit(node)
        if node.lineno < self.from_line:
            return node
        if id(node) in self.top_level and node.name.startswith("test"):
            node.decorator_list.append(ast.Name(_hook("test_defined"), ast.Load()))
            mark = ast.Expr(_call("__aiev_test_started__", ast.Constant(node.name)))
            at = _after_docstring(node.body)
            node.body.insert(at, ast.copy_location(mark, node.body[at]))
        return node

    visit_AsyncFunctionDef = visit_FunctionDef


#: The hooks' names in the program's builtins, with a suffix drawn per run (a program cannot name them in advance).
_HOOKS = ("check_done", "check_failed", "explain", "called", "test_defined", "test_started", "locals")
_suffix = [""]


def _hook(name):
    return f"__aiev_{name}_{_suffix[0]}__"


def _call(name, *args):
    if name.startswith("__aiev_") and name.endswith("__"):
        name = _hook(name[len("__aiev_") : -2])
    return ast.Call(ast.Name(name, ast.Load()), list(args), [])


def _top_level_defs(tree):
    """The ids of function definitions at module level (also inside top-level if/try/with blocks)."""
    out = set()
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            out.add(id(node))
        elif isinstance(node, ast.If | ast.Try | ast.With):
            for field in ("body", "orelse", "finalbody", "handlers"):
                todo.extend(getattr(node, field, []) or [])
        elif isinstance(node, ast.ExceptHandler):
            todo.extend(node.body)
    return out


def _record_calls(tree, from_line):
    """Make each function and method the solution defines at top level record its inputs when it starts."""
    for node in tree.body:
        if node.lineno >= from_line:
            continue
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            _record_in(node, node.name, method=False)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    static = any(getattr(d, "id", "") == "staticmethod" for d in item.decorator_list)
                    _record_in(item, f"{node.name}.{item.name}", method=not static)


def _record_in(func, name, method):
    args = func.args
    params = [a.arg for a in [*args.posonlyargs, *args.args]]
    if method:
        params = params[1:]
    params += [a.arg for a in args.kwonlyargs]
    params += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    body = func.body
    at = _after_docstring(body)
    record = ast.Expr(_call("__aiev_called__", ast.Constant(name), ast.Constant(tuple(params)),
                            _call("__aiev_locals__")))  # fmt: skip
    body.insert(at, ast.copy_location(record, body[at]))


def _after_docstring(body):
    """Where code may be inserted at the start of ``body`` without taking its docstring's place (a body that is
    only a docstring gains a ``pass`` to insert before)."""
    if (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        if len(body) == 1:
            body.append(ast.copy_location(ast.Pass(), body[0]))
        return 1
    return 0


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
        ast.Name(_hook("explain"), ast.Load()),
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


def _has_checks(node):
    """Whether a top-level statement holds checks of the tests: asserts, test functions or classes, check calls."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef) and sub.name.startswith("test"):
            return True
        if isinstance(sub, ast.ClassDef) and any("Test" in ast.unparse(b) for b in sub.bases):
            return True
        if isinstance(sub, ast.Call):
            func = sub.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.startswith("assert") or name in ("main", "testmod", "run_docstring_examples"):
                return True
            if name == "run" and "Runner" in ast.unparse(func):  # unittest.TextTestRunner().run(suite)
                return True
    return False


def _solution_code_ids(code, from_line):
    """The ids of every code object compiled from the solution's part (functions, methods, comprehensions)."""
    out = set()
    todo = [c for c in code.co_consts if isinstance(c, types.CodeType)]
    while todo:
        c = todo.pop()
        if c.co_firstlineno < from_line:
            out.add(id(c))
        todo.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    return out


# ------------------------------------------------------------------------------------------------ running


def _status(code):
    """The exit status ``sys.exit(code)`` gives (a non-int code is printed to stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _report_exception(exc):
    """The traceback a plain run prints, without this file's frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == _report_exception.__code__.co_filename:
        tb = tb.tb_next
    sys.excepthook(type(exc), exc.with_traceback(tb), tb)


def _module_line(exc, code):
    """The line of the top-level statement that was running when ``exc`` left the module's code."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return tb.tb_lineno
        tb = tb.tb_next
    return None


def _where_it_stopped(tree, line, from_line):
    """After an exit or error at module line ``line``: whether it was in the solution's part, and the line of a
    later top-level statement with checks that never ran (None: nothing skipped)."""
    if line is None:
        return None, None
    part = "solution" if line < from_line else "tests"
    for node in tree.body:
        if node.lineno > line and node.lineno >= from_line and _has_checks(node):
            return part, node.lineno
    return part, None


def _run_unrun_testcases():
    unittest = sys.modules.get("unittest")
    if unittest is None or not _testcases:
        return 0
    bases = {b for c in _testcases for b in c.__mro__[1:]}
    loader = unittest.defaultTestLoader
    todo = []
    for case in _testcases:
        names = [n for n in loader.getTestCaseNames(case) if (case, n) not in _ran_tests]
        ran_any = any((case, n) in _ran_tests for n in loader.getTestCaseNames(case))
        if not names or (case in bases and not ran_any and _subclasses_ran(case)):
            continue  # an abstract base whose concrete tests ran: its own tests are theirs
        todo.extend(case(n) for n in names)
    if not todo:
        return 0
    ran.append("unittest")
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=1).run(unittest.TestSuite(todo))
    return 0 if result.wasSuccessful() else 1


def _subclasses_ran(case):
    return any(issubclass(c, case) and c is not case for c, _ in [t for t in _ran_tests if isinstance(t, tuple)])


def _run_test_functions():
    todo = [(name, obj) for name, obj in _defined_tests.items() if name not in _ran_tests]
    if not todo:
        return 0
    import inspect  # ~10 ms: only for programs with test functions left to call

    status = 0
    for name, obj in todo:
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
            result = obj()
            if inspect.iscoroutine(result):  # an async test: run it to its end
                import asyncio

                asyncio.run(result)
        except SystemExit as exc:
            status = status or _status(exc.code)
        except BaseException as exc:  # the program's own failure, printed as a plain run prints it
            counts["tests_failed"] += 1
            _note_failure(f"{name}: {type(exc).__name__}: {exc}")
            _report_exception(exc)
            status = 1
    return status


def _execute(source, path, argv0, from_line, cases=True):
    """Run ``source`` (bytes) as ``__main__`` from ``path``, counting; its exit status (None: does not parse).
    ``cases=False``: only the verdict is wanted (a mutant): the solution's calls are not recorded."""
    try:
        tree = ast.parse(source, path)
    except (SyntaxError, ValueError):
        return None
    if b"unittest" in source:
        _count_unittest()
    if b"doctest" in source:
        _count_doctest()
    _suffix[0] = os.urandom(6).hex()
    _tests_line[0] = from_line
    if cases:
        _record_calls(tree, from_line)
    instrument = _Instrument(from_line, _top_level_defs(tree))
    instrumented = ast.fix_missing_locations(instrument.visit(tree))
    try:
        code = compile(instrumented, path, "exec")
    except (SyntaxError, ValueError):
        return None
    _module_code[0] = code
    _solution_codes.update(_solution_code_ids(code, from_line))
    hooks = (_check_done, _check_failed, _explain, _called, _test_defined, _test_started, locals)
    for name, value in zip(_HOOKS, hooks, strict=True):
        setattr(builtins, _hook(name), value)
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [argv0]
    sys.path[0] = os.path.dirname(path)
    stopped = None
    try:
        exec(code, module.__dict__)
        status = 0
    except SystemExit as exc:
        status = _status(exc.code)
        stopped = exc
    except BaseException as exc:  # the program's own failure, printed as a plain run prints it
        _report_exception(exc)
        status = 1
        stopped = exc
    if stopped is not None:
        part, skipped = _where_it_stopped(ast.parse(source, path), _module_line(stopped, code), from_line)
        state["died_in"] = part if status != 0 else None
        state["skipped"] = skipped if status == 0 else None
    if status == 0:
        status = _run_unrun_testcases() or _run_test_functions()
    return status


def _payload():
    return dict(counts, failures=failures, ran=ran, skipped=state["skipped"], died_in=state["died_in"])


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream: the counts still go out
            stream.flush()


def _dumpable(on):
    """Whether other processes of the sandbox's user may read this one's memory and descriptors (/proc/PID)."""
    with contextlib.suppress(Exception):
        if not _libc:
            import ctypes

            _libc.append(ctypes.CDLL(None, use_errno=True))
        _libc[0].prctl(4, 1 if on else 0, 0, 0, 0)  # PR_SET_DUMPABLE


def _open_nonce():
    """The nonce file, opened and unlinked: only this process can read it from now on."""
    fd = os.open(NONCE_FILE, os.O_RDONLY)
    os.unlink(NONCE_FILE)
    _dumpable(False)
    return fd


def _read_nonce(fd):
    data = b""
    while chunk := os.read(fd, 256):
        data += chunk
    os.close(fd)
    return data.decode().strip()


def _wait_reading(pid, r):
    """Wait for child ``pid`` while reading pipe ``r``; (wait status, what it sent)."""
    import select

    chunks = []
    status = None
    while status is None:
        ready, _, _ = select.select([r], [], [], 0.05)
        if ready:
            chunk = os.read(r, 65536)
            if chunk:
                chunks.append(chunk)
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
    os.set_blocking(r, False)
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    os.close(r)
    return status, b"".join(chunks)


def _decode(data):
    try:
        return json.JSONDecoder().raw_decode(data.decode())[0] if data else None
    except ValueError:
        return None


def main():
    path, from_line = sys.argv[1], int(sys.argv[2])
    nonce_fd = _open_nonce()
    with open(path, "rb") as fh:
        source = fh.read()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the program's process
        os.close(r)
        os.close(nonce_fd)
        _dumpable(True)
        status = _execute(source, os.path.abspath(path), path, from_line)
        if status is None:  # it cannot run; a plain run prints the error exactly as Python words it
            os.close(w)
            os.execv(sys.executable, [sys.executable, path])
        _flush()
        with contextlib.suppress(OSError):
            os.write(w, json.dumps(_payload()).encode())
        os._exit(status)
    os.close(w)
    wait_status, data = _wait_reading(pid, r)
    nonce = _read_nonce(nonce_fd)
    os.write(2, f"\n{nonce} {json.dumps(_decode(data))}\n".encode())
    if os.WIFSIGNALED(wait_status):  # die as the program died
        import signal

        sig = os.WTERMSIG(wait_status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    sys.exit(os.waitstatus_to_exitcode(wait_status))


# ---------------------------------------------------------------------------------------- batch mode
# ``python3 _aiev_run.py --batch JOB.json``: JOB holds ``programs`` ([{source, tests_line, cases}]: the entry's
# program first, then its mutants and any other; ``cases: false`` where only the verdict is wanted),
# ``examples`` ([{call, expected, printed}]: the problem's stated examples, checked on ``solution``) and
# ``timeout_s`` (per program). Each runs in its own forked child (own process group and folder ``p<i>`` holding
# its ``main.py``, output to /dev/null, killed at its time limit), as many at once as the sandbox has cores (at
# most 4; ``parallel``), after the program's imports were made once in the parent; the results go to stderr as
# one line ``NONCE {json}``.


def _child(run, folder=None):
    """Fork; the child runs ``run()`` (returning (status, payload)) and reports through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        me = os.getpid()
        try:
            os.setpgid(0, 0)
            _dumpable(True)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            if folder is not None:
                os.chdir(folder)
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
    os.set_blocking(r, False)
    chunks = []
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    os.close(r)
    # the child's report (a process the program forked that outlived it never writes one)
    return {"status": os.waitstatus_to_exitcode(code), "timed_out": timed_out, "result": _decode(b"".join(chunks))}


def _run_all(runs, timeout_s, parallel):
    """Each of ``runs`` ((run, folder) pairs, or (run, folder, its own time limit)) in its own child, ``parallel``
    at once, each killed after ``timeout_s`` (or its own); their results."""
    import select
    import signal
    import time

    results = [None] * len(runs)
    running = {}  # pid -> (index, read end, deadline)
    todo = list(enumerate(runs))
    while todo or running:
        while todo and len(running) < parallel:
            i, (run, folder, *own) = todo.pop(0)
            pid, r = _child(run, folder)
            running[pid] = (i, r, time.monotonic() + (own[0] if own else timeout_s))
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
            select.select([], [], [], 0.001)
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


def _run_one(source, tests_line, cases):
    def run():
        with open("main.py", "w", encoding="utf-8") as fh:
            fh.write(source)
        status = _execute(source.encode(), os.path.abspath("main.py"), "main.py", tests_line, cases)
        return (1 if status is None else status), _payload()

    return run


def _close(got, want):
    """Equal, floats within a relative 1e-6 (lists, tuples, sets and dicts compared item by item)."""
    import math

    if isinstance(got, bool) or isinstance(want, bool):
        return got == want
    if isinstance(got, int | float) and isinstance(want, int | float):
        return got == want or math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return type(got) is type(want) and len(got) == len(want) and all(map(_close, got, want))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(_close(got[k], want[k]) for k in got)
    return got == want


def _check_examples(solution, examples):
    def run():
        namespace = {"__name__": "__aiev_examples__", "__builtins__": builtins}
        exec(compile(solution, os.path.abspath("main.py"), "exec"), namespace)
        out = []
        for ex in examples:
            try:
                got = eval(compile(ex["call"], "<example>", "eval"), namespace)
                if ex.get("printed"):
                    ok = str(got).strip() == ex["expected"].strip()
                else:
                    ok = _close(got, ast.literal_eval(ex["expected"]))
                out.append({"ok": bool(ok), "got": _short_repr(got)})
            except BaseException as exc:
                out.append({"ok": False, "got": f"{type(exc).__name__}: {exc}"[:200]})
        return 0, out

    return run


def _then_examples(run_program, check_examples):
    """``run_program``, then the examples on a fresh copy of the solution, in the same child."""

    def run():
        status, payload = run_program()
        try:
            payload["examples_checked"] = check_examples()[1]
        except BaseException:  # the solution does not load on its own: no example checked
            payload["examples_checked"] = None
        return status, payload

    return run


def batch(job_path):
    nonce_fd = _open_nonce()
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    programs = job["programs"]
    if programs:
        _preimport(programs[0]["source"])
    runs = []
    for i, p in enumerate(programs):
        folder = f"p{i}"
        os.mkdir(folder)
        runs.append((_run_one(p["source"], p["tests_line"], p.get("cases", True)), folder))
    examples = job.get("examples")
    if examples and runs:  # in the entry's own child, after its program (one fork fewer), with time for both
        both = _then_examples(runs[0][0], _check_examples(job["solution"], examples))
        runs[0] = (both, runs[0][1], 2 * job["timeout_s"])
    elif examples:
        runs.append((_check_examples(job["solution"], examples), None))
    parallel = job.get("parallel") or min(4, len(os.sched_getaffinity(0)))
    import gc

    gc.freeze()  # the children share the parent's objects without copying them on their first collection
    results = _run_all(runs, job["timeout_s"], parallel)
    if examples and programs:
        first = results[0]
        got = (first.get("result") or {}).pop("examples_checked", None)
        examples = {"status": 0 if got is not None else first["status"], "timed_out": first["timed_out"], "result": got}
    elif examples:
        examples = results.pop()
    nonce = _read_nonce(nonce_fd)
    os.write(2, f"\n{nonce} {json.dumps({'programs': results, 'examples': examples})}\n".encode())


if __name__ == "__main__":
    if sys.argv[1] == "--batch":
        batch(sys.argv[2])
    else:
        main()
