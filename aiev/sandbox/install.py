"""The strict parser for an agent's ``pip install`` turn.

The agent writes a bash line; we never hand it to a shell. :func:`parse_pip_install` accepts exactly
``pip install``, ``pip3 install``, ``python -m pip install`` (``python3``, ``python3.X``), a few harmless
flags and requirement specifiers, with bash quoting, and returns the specifiers. Everything else (another
command, ``;``, ``&&``, pipes, redirects, ``$()``, backticks, ``-r`` files, index options, URLs, paths) raises
:class:`PipInstallError` with a message that says what was refused.

The flags are accepted so a realistic turn parses, but they do not reach pip: the install phase always runs
``pip install --upgrade --target PREFIX`` with the configured index (see ``docs/sandbox.md``).
"""

from __future__ import annotations

import re

#: Flags a turn may carry (ignored: the install phase fixes pip's options).
ALLOWED_FLAGS = frozenset({"-q", "-qq", "--quiet", "-U", "--upgrade", "--no-deps", "--pre"})
MAX_SPECS = 64
MAX_SPEC_CHARS = 200

_PROGRAMS = re.compile(r"^(pip|pip3|pip3\.\d{1,2})$")
_PYTHONS = re.compile(r"^(python|python3|python3\.\d{1,2})$")
#: Characters a bare (unquoted) word may hold: nothing the shell would expand, split or redirect.
_BARE = re.compile(r"[A-Za-z0-9._\-=,\[\]~+*!]")
_ARCHIVE = re.compile(r"\.(whl|zip|tar|tgz|tar\.gz|tar\.bz2|tar\.xz|egg)$", re.IGNORECASE)
_SHELL_WHY = {
    ";": "command separator ';'",
    "&": "'&' (background / '&&')",
    "|": "pipe '|'",
    "<": "redirect '<' (quote the requirement: pip install 'pkg<2')",
    ">": "redirect '>' (quote the requirement: pip install 'pkg>=1.0')",
    "$": "expansion '$'",
    "`": "command substitution '`'",
    "(": "subshell '('",
    ")": "subshell ')'",
    "{": "brace '{'",
    "}": "brace '}'",
    "\\": "backslash escape",
    "\n": "a second line",
    "\r": "a carriage return",
    "?": "glob '?'",
    "/": "a path '/'",
    ":": "':' (URLs are not allowed)",
    "@": "'@' (direct URL references are not allowed)",
    "%": "'%'",
    "^": "'^'",
}


class PipInstallError(ValueError):
    """A turn that is not a plain, safe ``pip install <requirements>``."""


def _words(command: str) -> list[str]:
    """Split like bash, but refuse every construct other than words, quotes and a trailing comment."""
    words: list[str] = []
    word: list[str] | None = None
    i, n = 0, len(command)
    while i < n:
        c = command[i]
        if c in " \t":
            if word is not None:
                words.append("".join(word))
                word = None
            i += 1
        elif c == "#" and word is None:
            break  # a comment to the end of the line
        elif c == "'":
            end = command.find("'", i + 1)
            if end < 0:
                raise PipInstallError("refused: unbalanced single quote")
            word = (word or []) + [command[i + 1 : end]]
            i = end + 1
        elif c == '"':
            end = command.find('"', i + 1)
            if end < 0:
                raise PipInstallError("refused: unbalanced double quote")
            inner = command[i + 1 : end]
            bad = next((ch for ch in inner if ch in "$`\\\n"), None)
            if bad is not None:
                raise PipInstallError(f"refused: {_SHELL_WHY[bad]} inside double quotes")
            word = (word or []) + [inner]
            i = end + 1
        elif _BARE.fullmatch(c):
            word = (word or []) + [c]
            i += 1
        else:
            why = _SHELL_WHY.get(c, f"character {c!r}")
            raise PipInstallError(f"refused: only 'pip install <requirements>' may run, found {why}")
    if word is not None:
        words.append("".join(word))
    return words


def check_spec(spec: str) -> str:
    """One requirement specifier: a PEP 508 name with extras/versions/markers, no URL, path or archive."""
    if not spec or len(spec) > MAX_SPEC_CHARS:
        raise PipInstallError(f"refused: requirement {spec[:40]!r} is empty or longer than {MAX_SPEC_CHARS}")
    if spec.startswith("-"):
        allowed = ", ".join(sorted(ALLOWED_FLAGS))
        raise PipInstallError(f"refused: pip option {spec!r} is not allowed (allowed: {allowed})")
    for ch in "@/\\\n\r\0":
        if ch in spec:
            raise PipInstallError(f"refused: {spec!r}: only package names from the index, no URLs or paths")
    from packaging.requirements import InvalidRequirement, Requirement  # lazily: the CLI must not need it

    try:
        req = Requirement(spec)
    except InvalidRequirement as exc:
        raise PipInstallError(f"refused: {spec!r} is not a requirement specifier: {exc}") from exc
    if req.url or _ARCHIVE.search(req.name):
        raise PipInstallError(f"refused: {spec!r}: only package names from the index, no URLs or files")
    return str(req)


def parse_pip_install(command: str) -> list[str]:
    """The requirement specifiers of a ``pip install ...`` bash line; :class:`PipInstallError` otherwise."""
    if not isinstance(command, str):
        raise PipInstallError("refused: the command must be a string")
    words = _words(command.strip())
    if not words:
        raise PipInstallError("refused: empty command")
    if _PROGRAMS.match(words[0]):
        rest = words[1:]
    elif _PYTHONS.match(words[0]) and words[1:3] == ["-m", "pip"]:
        rest = words[3:]
    else:
        raise PipInstallError(f"refused: only 'pip install <requirements>' may run in a bash block, not {words[0]!r}")
    if not rest or rest[0] != "install":
        sub = rest[0] if rest else "(nothing)"
        raise PipInstallError(f"refused: only the 'install' pip command is allowed, not {sub!r}")
    specs: list[str] = []
    for word in rest[1:]:
        if word in ALLOWED_FLAGS:
            continue
        specs.append(check_spec(word))
    if not specs:
        raise PipInstallError("refused: 'pip install' names no package")
    if len(specs) > MAX_SPECS:
        raise PipInstallError(f"refused: more than {MAX_SPECS} packages in one install")
    return specs
