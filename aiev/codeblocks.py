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
    r"^(import unittest|from unittest|import pytest|class Test\w*|def test_\w*|assert\b|if __name__\s*==)",
    re.M,
)


@dataclass(frozen=True)
class Program:
    """A programmer reply under the code rules (docs/dialogue.md): what runs, and which part is the tests."""

    solution: str
    tests: str
    installs: list[str]  # the raw bash blocks
    source: str  # main.py as it runs: the Python blocks verbatim, joined by a blank line


@dataclass(frozen=True)
class CodeProblem:
    reason: str  # no_code | no_tests
    message: str


def extract_program(reply: str) -> Program | CodeProblem:
    """Apply the documented code rules to a programmer reply."""
    py = [f.code for f in blocks_of_kind(reply, "python")]
    bash = [f.code.strip() for f in blocks_of_kind(reply, "bash")]
    if not py:
        return CodeProblem("no_code", "Your reply holds no ```python code block.")
    source = "\n\n".join(py) + "\n"
    if len(py) >= 2:
        return Program("\n\n".join(py[:-1]), py[-1], bash, source)
    m = _TEST_START.search(py[0])
    if m is None or m.start() == 0:
        return CodeProblem(
            "no_tests",
            "Your code has no unit tests: give the tests in a second ```python block after the solution.",
        )
    return Program(py[0][: m.start()].rstrip("\n"), py[0][m.start() :], bash, source)


def has_assertion(tests: str) -> bool:
    return re.search(r"\bassert\w*\b|\bself\.assert|\bunittest\.main\b|pytest\.raises", tests) is not None
