"""README and docs speak of the project, not of how it was made: no issue numbers, no "this session" or "this
machine", no work periods, no earlier runs a figure beat, no commit ids in prose, no "we measured", no names of
who built it, no TODOs. Measurements live in benchmarks/results/ with their machine and commit
(docs/measurements.md, whose commit column is data)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]

#: (what it is, the words), case-insensitive; each is about the making of the project, not its use.
FLAGGED = [
    ("an issue number", r"\bissues?\s+#?\d+|(?<![\w/#])#\d+\b"),
    ("the writer's machine or session", r"\bthis (?:session|machine|work period|task)\b|\bdevelopment machine\b"),
    ("a work period", r"\bwork periods?\b"),
    ("a run the text compares itself with", r"\b(?:earlier|previous|former|prior) (?:runs?|sessions?|measurements?)\b"
     r"(?! (?:with|of) the same)"),
    ("who measured", r"\b(?:we|I) (?:measured|ran|tried|found|saw|fixed|changed)\b|\bmeasured (?:here|by us)\b"),
    ("a commit id in prose", r"\bcommits?\s+`?[0-9a-f]{7,40}\b"),
    ("a lent machine", r"\b(?:was|were|is|are|be|been|the) lent\b|\blent (?:to|H\d+)\b"),
    ("the workplace's paths", r"\.library/|/work/"),
    ("a builder's name", r"\b(?:claude|integrator|sub-?agents?|helper sessions?)\b"),
    ("a note for later", r"\b(?:TODO|FIXME|XXX)\b|\blater (?:session|period)\b"),
]  # fmt: skip
#: References to other projects' trackers and a resume's "earlier run with the same settings" are the project's.
ALLOWED = re.compile(r"[\w.-]+/[\w.-]+#\d+|\w+#\d+|\b(?:its|their|upstream|the plugin's) issues?\s+#?\d+", re.I)
COMMIT_IS_DATA = {"measurements.md"}


def flagged(text: str, page: str = "") -> list[tuple[int, str, str]]:
    """(line number, what, the line) for each line with words about how the project was made."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        rest = ALLOWED.sub(" ", line)
        for what, words in FLAGGED:
            if what == "a commit id in prose" and page in COMMIT_IS_DATA:
                continue
            if re.search(words, rest, re.I):
                out.append((n, what, line.strip()))
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_the_page_speaks_of_the_project_only(page):
    found = flagged(page.read_text(encoding="utf-8"), page.name)
    assert not found, "\n".join(f"{page.relative_to(REPO)}:{n}: {what}: {line[:160]}" for n, what, line in found)


@pytest.mark.parametrize(
    "line",
    ["Goal (issue 24): at most 15 min.", "as fixed in #31", "on this machine it took 5 s", "this session's runs",
     "in the second work period", "12 passed, 3 more than the earlier run", "we measured 33 s",
     "since commit 2a18884", "no GPU machine was lent", "see /work/.library/device/KINDS.md", "TODO: later"],
)  # fmt: skip
def test_words_about_the_making_are_found(line):
    assert flagged(line)


@pytest.mark.parametrize(
    "line",
    ["huggingface/datasets#7101", "can hang (evalplus#294)", "Known issue in the plugin (2.8.0, its issue #485)",
     "finished tasks of an earlier run with the same settings", "a tmux session", "an LLM session, a `ChatSession`",
     "the machine's cores", "the pytest sessions at once", "a 4 GiB machine"],
)  # fmt: skip
def test_the_project_s_own_words_pass(line):
    assert not flagged(line)
