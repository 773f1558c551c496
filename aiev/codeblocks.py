"""The one fenced-code parser: what the sandbox runs, what decontamination compares and what the SFT record
wraps all come from :func:`fenced_blocks`, so the record holds exactly the code that ran.

The rule (CommonMark's, simplified; docs/dialogue.md): a block opens on a line of optional spaces or tabs,
then three or more backticks or tildes, then an info string whose first word is the language (``{.python}``
and ``python3`` style tags are read as written, lower-cased). A backtick fence's info string may not hold a
backtick. The block closes at the first later line that *ends* with the same fence character, at least as
many of them as opened it, and optional whitespace: either alone on its line (CommonMark) or right after code
(``pip install x```, as models often write; that code belongs to the block). A block that never closes
runs to the end of the text. So a ```` ``` ```` inside a string (``s = "```"``), or a shorter run inside a
longer fence, never ends a block early, and ``~~~`` fences work. CRLF line endings are kept as they are:
``Fence.code`` is always the exact slice ``text[code_start:code_end]``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Literal

#: Info-string languages run as Python (an untagged block is Python too).
PYTHON_LANGS = frozenset({"", "python", "py", "python3"})
#: Info-string languages of install turns (only ``pip install`` lines are accepted there).
BASH_LANGS = frozenset({"bash", "sh", "shell", "console", "zsh"})

Kind = Literal["python", "bash"]

_OPEN = re.compile(r"^([ \t]*)(`{3,}|~{3,})(.*)$")


@dataclass(frozen=True)
class Fence:
    """One fenced block. ``text[start:end]`` runs from the opening fence to the end of the closing one;
    ``text[code_start:code_end] == code``."""

    start: int
    end: int
    code_start: int
    code_end: int
    lang: str
    code: str
    closed: bool

    @property
    def kind(self) -> Kind | None:
        """``python`` (executed), ``bash`` (an install turn), or None (any other language: never run)."""
        if self.lang in PYTHON_LANGS:
            return "python"
        if self.lang in BASH_LANGS:
            return "bash"
        return None


def language(info: str) -> str:
    words = info.split()
    return words[0].strip("{}.").lower() if words else ""


def fenced_blocks(text: str) -> list[Fence]:
    """The fenced code blocks of a Markdown text, in order."""
    parts = text.split("\n")
    offsets = []
    pos = 0
    for part in parts:
        offsets.append(pos)
        pos += len(part) + 1
    out: list[Fence] = []
    i = 0
    while i < len(parts):
        m = _OPEN.match(parts[i])
        if m is None or (m.group(2)[0] == "`" and "`" in m.group(3)):
            i += 1
            continue
        indent, fence, info = m.groups()
        close = re.compile(rf"^(.*?){re.escape(fence[0])}{{{len(fence)},}}\s*$")
        j = i + 1
        m_close = None
        while j < len(parts):
            m_close = close.match(parts[j])
            if m_close is not None and not m_close.group(1).endswith(fence[0]):
                break
            j += 1
        closed = j < len(parts)
        end = offsets[j] + len(parts[j]) if closed else len(text)
        if i + 1 >= len(parts):  # the opening fence is the text's last line
            code_start = code_end = len(text)
        else:
            code_start = offsets[i + 1]
            if not closed:
                code_end = len(text)
            elif m_close is not None and m_close.group(1).strip():  # code```: the line's code belongs to the block
                code_end = offsets[j] + len(m_close.group(1))
            else:
                code_end = max(code_start, offsets[j] - 1)
        out.append(
            Fence(
                offsets[i] + len(indent), end, code_start, code_end, language(info), text[code_start:code_end], closed
            )
        )
        i = j + 1
    return out


def blocks_of_kind(text: str, kind: Kind) -> list[Fence]:
    """The blocks of one kind whose code is not blank."""
    return [f for f in fenced_blocks(text) if f.kind == kind and f.code.strip()]


def normalize_code(text: str) -> str:
    """What decontamination compares: line endings made ``\\n``, surrounding whitespace trimmed."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


# The code rules of a programmer reply (docs/dialogue.md), shared by the dialogue (what runs) and the evaluation
# (which part of a model's answer is its solution).
_TEST_START = re.compile(
    r"^(import unittest|from unittest|import pytest|from pytest|class Test\w*|def test_\w*|assert\b|if __name__\s*==)",
    re.M,
)
_TEST_IMPORT = re.compile(r"^(import|from)\s+(unittest|pytest)\b")
_MAIN_GUARD = re.compile(r"^if\s+__name__\s*==")


@dataclass(frozen=True)
class Program:
    """A programmer reply under the code rules (docs/dialogue.md): what runs, and which part is the tests."""

    solution: str
    tests: str
    installs: list[str]  # the raw bash blocks
    source: str  # main.py as it runs: the Python blocks verbatim, joined by a blank line
    tests_line: int = 1  # the line of ``source`` (1-based) where the tests begin


@dataclass(frozen=True)
class CodeProblem:
    reason: str  # no_code | no_tests | no_solution
    message: str


def _is_test_statement(node: ast.stmt, lines: list[str]) -> bool:
    """A top-level statement that starts the tests: a test class or function, an assertion, the main guard."""
    if isinstance(node, ast.ClassDef):
        bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
        return node.name.startswith("Test") or "TestCase" in bases
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name.startswith("test")
    if isinstance(node, ast.Assert):
        return True
    return isinstance(node, ast.If) and _MAIN_GUARD.match(lines[node.lineno - 1]) is not None


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", None) or []
    return min([node.lineno, *(d.lineno for d in decorators)])


def _tests_start_line(code: str) -> int | None:
    """The 1-based line where the tests of one block begin, or None when it holds none. Imports at the top belong
    to the program (``import unittest`` first is the most common layout of instruct models); a test-framework
    import right before the first test statement, and the comment lines right above it, belong to the tests."""
    lines = code.split("\n")
    try:
        body = ast.parse(code).body
    except SyntaxError:
        return _tests_start_line_by_text(lines)
    first = next((i for i, node in enumerate(body) if _is_test_statement(node, lines)), None)
    if first is None:
        return None
    i = first
    header = all(isinstance(n, ast.Import | ast.ImportFrom) for n in body[:first])
    while not header and i > 0 and isinstance(body[i - 1], ast.Import | ast.ImportFrom):
        if not _TEST_IMPORT.match(lines[body[i - 1].lineno - 1]):
            break
        i -= 1
    line = _first_line(body[i])
    while line > 1 and lines[line - 2].lstrip().startswith("#"):
        line -= 1
    return line


def _tests_start_line_by_text(lines: list[str]) -> int | None:
    """The same rule for code that does not parse (it fails when it runs; the split only shapes the record):
    the first line that starts a test, outside the leading imports."""
    in_header = True
    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if in_header and (not stripped or stripped.startswith("#") or re.match(r"(import|from)\s", line)):
            continue
        in_header = False
        if _TEST_START.match(line):
            return n
    return None


def _found(code: str) -> str:
    """What a block holds, in a few words, for the feedback of a block without tests."""
    try:
        body = ast.parse(code).body
    except SyntaxError as exc:
        return f"code that does not parse (line {exc.lineno}: {exc.msg})"
    names = [f"`{n.name}`" for n in body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]
    other = sum(not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Import | ast.ImportFrom)
                for n in body)  # fmt: skip
    parts = [f"the definitions {', '.join(names[:6])}" + (" ..." if len(names) > 6 else "")] if names else []
    if other:
        parts.append(f"{other} other top-level statement(s)")
    return " and ".join(parts) or "only imports"


def extract_program(reply: str) -> Program | CodeProblem:
    """Apply the documented code rules to a programmer reply."""
    py = [f.code for f in blocks_of_kind(reply, "python")]
    bash = [f.code.strip() for f in blocks_of_kind(reply, "bash")]
    if not py:
        return CodeProblem("no_code", "Your reply holds no ```python code block.")
    source = "\n\n".join(py) + "\n"
    if len(py) >= 2:
        solution = "\n\n".join(py[:-1])
        return Program(solution, py[-1], bash, source, solution.count("\n") + 3)
    line = _tests_start_line(py[0])
    if line is None:
        return CodeProblem(
            "no_tests",
            f"Your code has no unit tests: it holds {_found(py[0])}, but no test class, no test function and no "
            "assert. Give the tests (assertions or a unittest.TestCase that runs) in a second ```python block after "
            "the solution.",
        )
    lines = py[0].split("\n")
    solution, tests = "\n".join(lines[: line - 1]).rstrip("\n"), "\n".join(lines[line - 1 :])
    if not _has_code(solution):
        return CodeProblem(
            "no_solution",
            "Your code holds only tests: give the solution itself, then its tests, in one ```python block or in "
            "two (the solution first).",
        )
    return Program(solution, tests, bash, source, line)


def _has_code(solution: str) -> bool:
    """Whether a solution defines or does anything beyond imports."""
    try:
        body = ast.parse(solution).body
    except SyntaxError:
        return bool(solution.strip())
    return any(not isinstance(n, ast.Import | ast.ImportFrom) for n in body)
