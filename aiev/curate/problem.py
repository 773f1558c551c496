"""What a problem statement says about its solution, read for ``aiev check-tests`` (docs/check-tests.md):

- :func:`stated_examples`: the examples it states, in the phrasings models and people write them
  (`` `f(2)` returns `5` ``, "f(2) should return 5", "f(2) → 5", `` `f(2) == 5` ``, ``>>> f(2)`` / ``5``,
  ``>>> print(f(2))``; values in or out of backticks), each to be run on the solution. An example that calls with
  names (the function's parameters), or calls something the solution does not define at top level (a method, an
  undefined name), cannot be run: it is counted as unchecked, never as a mismatch.
- :func:`asked_functions`: the functions it asks to write (a signature ``def name(``; "write / implement / define
  / create / complete `name`"), not every name it mentions.
- :func:`code_fragments`: the code it holds (fenced, indented, inline, or lines of code in the prose), to be run
  against the entry's tests: one that passes them gives the answer away, one that fails them is a fix-the-bug task.
"""

from __future__ import annotations

import ast
import builtins
import re
import textwrap
from dataclasses import dataclass

from aiev.codeblocks import fenced_blocks, normalize_code

_BUILTINS = frozenset(dir(builtins))
_CALL_START = re.compile(r"(?<![\w.])([A-Za-z_]\w*)\(")
_CONNECTIVE = re.compile(
    r"\s*`?\s*(?:,\s*)?(?:(?:should|must|will|would|shall)\s+(?:also\s+)?)?"
    r"(?:returns?|give[sn]?|outputs?|prints?|yields?|produces?|evaluates?\s+to|results?\s+in|equals?|is|be"
    r"|==>|==|=>|->|→|⟶|=)\s*:?\s*",
    re.I,
)
_DOCTEST = re.compile(r"^[ \t]*>>> (?P<call>.+)\n[ \t]*(?P<expected>(?!>>>)\S.*)$", re.M)
_ASK = re.compile(
    r"\b(?:write|implement|define|create|complete|code|build|fix)\s+(?:(?:a|an|the)\s+)?(?:python\s+|recursive\s+)?"
    r"(?:(?:function|method|class|routine|procedure)\s+)?(?:(?:called|named)\s+)?`?(?P<name>[A-Za-z_]\w*)`?\s*\(?",
    re.I,
)
_SIGNATURE = re.compile(r"\b(?:def|class)\s+([A-Za-z_]\w*)")
_NOT_NAMES = frozenset({"a", "an", "the", "function", "method", "class", "python", "program", "code", "that",
                        "which", "to", "it", "this", "and", "for", "in"})  # fmt: skip
_MAX_SPAN = 400


@dataclass(frozen=True)
class Example:
    call: str
    expected: str
    printed: bool = False  # compare the printed text (``>>> print(f(x))``), not a value

    def to_dict(self) -> dict[str, object]:
        return {"call": self.call, "expected": self.expected, "printed": self.printed}


def _call_at(text: str, start: int) -> tuple[ast.Call, int] | None:
    """The call expression that starts at ``text[start]`` (``name(...)``, balanced) and where it ends."""
    depth = 0
    limit = min(len(text), start + _MAX_SPAN)
    for j in range(text.index("(", start), limit):
        ch = text[j]
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                try:
                    node = ast.parse(text[start : j + 1], mode="eval").body
                except SyntaxError:
                    return None
                return (node, j + 1) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
        elif ch == "\n" and depth == 0:
            return None
    return None


def _literal_prefix(text: str) -> str | None:
    """The longest prefix of ``text`` (one line, up to a closing backtick; or what a backtick span that starts it
    holds) that is a Python literal."""
    text = text.lstrip(" \t")
    if text.startswith("`"):
        inside = text[1:].split("`", 1)[0].strip()
        try:
            ast.literal_eval(inside)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None
        return inside
    line = text.split("\n", 1)[0].split("`", 1)[0][:_MAX_SPAN]
    for end in range(len(line), 0, -1):
        candidate = line[:end].strip().rstrip(".,;:!?")
        if not candidate or (end < len(line) and line[end - 1].isalnum() and line[end].isalnum()):
            continue  # never cut a word or a number in two
        try:
            ast.literal_eval(candidate)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
        return candidate
    return None


def _literal_args(call: ast.Call) -> bool:
    try:
        for node in [*call.args, *(k.value for k in call.keywords)]:
            ast.literal_eval(node.value if isinstance(node, ast.Starred) else node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def stated_examples(problem: str, defined: set[str]) -> tuple[list[Example], int]:
    """The examples ``problem`` states for the solution's top-level functions ``defined`` that can be run, and
    how many more it states that cannot (arguments that are names, a method, an undefined function)."""
    text = problem or ""
    found: dict[Example, None] = {}
    unchecked: set[str] = set()

    def consider(call: ast.Call, call_text: str, expected: str, printed: bool) -> None:
        name = call.func.id  # type: ignore[attr-defined]
        if name in _BUILTINS and name not in defined:
            return
        if name not in defined or not _literal_args(call):
            unchecked.add(call_text)
            return
        found[Example(call_text, expected, printed)] = None

    for m in _DOCTEST.finditer(text):
        line, expected = m.group("call").strip(), m.group("expected").strip()
        try:
            node = ast.parse(line, mode="eval").body
        except SyntaxError:
            continue
        printed = isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print" and len(node.args) == 1
        if printed:
            node = node.args[0]  # type: ignore[union-attr]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if not printed and _literal_prefix(expected) != expected.rstrip(".,;:!?").strip():
            continue
        consider(node, ast.unparse(node), expected if printed else expected.rstrip(".,;:!?").strip(), printed)
    for m in _CALL_START.finditer(text):
        if text[max(0, m.start() - 4) : m.start()].endswith(">>> ") or text[: m.start()].rstrip().endswith("def"):
            continue
        got = _call_at(text, m.start())
        if got is None:
            continue
        call, end = got
        connective = _CONNECTIVE.match(text, end)
        if connective is None or (connective.end() == end):
            continue
        rest = text[connective.end() :]
        if "print" in connective.group(0).lower() or "output" in connective.group(0).lower():
            continue  # what it prints is not its value
        value = _literal_prefix(rest)
        if value is None:
            continue
        consider(call, text[m.start() : end], value, False)
    return list(found), len(unchecked - {e.call for e in found})


def asked_functions(problem: str) -> list[str]:
    """The functions (or classes) ``problem`` asks to write: names in a signature (``def name(``) or named right
    after "write / implement / define / create / complete ..."; builtins left out."""
    names: dict[str, None] = {}
    for m in _SIGNATURE.finditer(problem or ""):
        names[m.group(1)] = None
    for m in _ASK.finditer(problem or ""):
        name = m.group("name")
        quoted = m.group(0).rstrip("(").rstrip().endswith("`") or "`" in m.group(0)
        if name.lower() in _NOT_NAMES or not (quoted or m.group(0).endswith("(") or "_" in name):
            continue  # "write a function that ..." names nothing
        names[name] = None
    return [n for n in names if n not in _BUILTINS and not n.startswith("test")]


# ------------------------------------------------------------------------------------------------ code in it


def _parses(code: str) -> ast.Module | None:
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):
        return None


def _defines(tree: ast.Module) -> list[str]:
    return [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)]


def _indented_runs(text: str) -> list[str]:
    """Runs of lines indented by 4 spaces or a tab (Markdown's code blocks), dedented."""
    out, run = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith(("    ", "\t")) or (run and not line.strip()):
            run.append(line)
        else:
            if run:
                out.append(textwrap.dedent("\n".join(run)).strip("\n"))
            run = []
    return out


def _code_in_prose(text: str) -> list[str]:
    """From each line that starts a definition (``def``/``class``, anywhere in the line), the definition: the
    lines indented below it, as far as they parse once dedented."""
    lines = text.splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.search(r"(?:^|\s)((?:async\s+)?(?:def|class)\s+\w)", line)
        if m is None:
            continue
        head = line[m.start(1) :]
        indent = len(line) - len(line.lstrip())
        end = i + 1
        while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent):
            end += 1
        out += _parsing_cuts(head, lines[i + 1 : end], indent)
    return out


def _parsing_cuts(head: str, body: list[str], indent: int) -> list[str]:
    """The definition starting with ``head``: with as many of the ``body`` lines as parse; or, for a one-line
    definition inside a sentence, ``head`` cut after each of its last words where it still parses (the longest
    three: the sentence's words after the code may parse as names too)."""
    for j in range(len(body), 0, -1):
        code = textwrap.dedent("\n".join([" " * indent + head, *body[:j]])).strip("\n")
        if _parses(code) is not None:
            return [code]
    words = head.split(" ")
    cuts = []
    for k in range(len(words), 1, -1):
        code = " ".join(words[:k]).rstrip(".,;")
        if code.rstrip().endswith(":") or len(cuts) == 3:
            break
        if _parses(code) is not None:
            cuts.append(code)
    return cuts


def code_fragments(problem: str, limit: int = 6) -> list[str]:
    """The pieces of code ``problem`` holds that define a function or class (fenced, indented, inline, or lines of
    code in its prose), distinct, at most ``limit``."""
    text = problem or ""
    candidates = [f.code for f in fenced_blocks(text)]
    candidates += _indented_runs(text)
    candidates += [m.group(1) for m in re.finditer(r"`([^`\n]*\b(?:def|class|lambda)\b[^`\n]*)`", text)]
    candidates += _code_in_prose(text)
    out: dict[str, str] = {}
    for code in candidates:
        tree = _parses(code)
        if tree is None or not _defines(tree):
            continue
        out.setdefault(normalize_code(code), code)
    return list(out.values())[:limit]


def fragment_program(fragment: str, solution: str) -> str:
    """``fragment`` with the solution's top-level names it lacks bound to its own, in order (a renamed copy of the
    solution still answers to the tests)."""
    frag_tree, sol_tree = _parses(fragment), _parses(solution)
    if frag_tree is None or sol_tree is None:
        return fragment
    theirs, ours = _defines(frag_tree), _defines(sol_tree)
    if set(theirs) & set(ours):
        return fragment
    aliases = [f"{mine} = {their}" for mine, their in zip(ours, theirs, strict=False)]
    return fragment.rstrip("\n") + ("\n\n" + "\n".join(aliases) if aliases else "") + "\n"
