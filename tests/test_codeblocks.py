"""The one code-block parser, and the promise it carries: the SFT record holds exactly the code that ran."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from aiev.codeblocks import Program, extract_program, fenced_blocks, normalize_code
from aiev.curate.format import DEFAULT_TOKENS, format_entry
from aiev.generate.dialogue import Dialogue, DialogueSettings, make_executor
from aiev.interpreter import NONCE_NAME
from aiev.llm.client import Reply


def codes(text: str) -> list[tuple[str, str]]:
    return [(f.lang, f.code) for f in fenced_blocks(text)]


def test_every_block_is_an_exact_slice():
    text = "a\n```python\nx = 1\n```\nb\n~~~\ny\n~~~\n```sh\npip install z```\n````\n```\n````\n```py\nopen"
    for f in fenced_blocks(text):
        assert text[f.code_start : f.code_end] == f.code
        assert text[f.start : f.end].startswith(("```", "~~~"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("~~~python\nx = 1\n~~~\n", [("python", "x = 1")]),
        ("~~~~\n~~~\nstill inside\n~~~~\n", [("", "~~~\nstill inside")]),
        ("````python\nDOC = '''\n```\nnot the end\n```\n'''\n````\n", [("python", "DOC = '''\n```\nnot the end\n```\n'''")]),
        ('```python\ns = "```"\nprint(s)\n```\n', [("python", 's = "```"\nprint(s)')]),
        ("```\nprint(1)\n```\n", [("", "print(1)")]),
        ("```python\r\nx = 1\r\ny = 2\r\n```\r\n", [("python", "x = 1\r\ny = 2\r")]),
        ("```bash\npip install numpy```\nthen\n```python\nimport numpy\n```", [("bash", "pip install numpy"), ("python", "import numpy")]),
        ("```{.Python}\nx\n```", [("python", "x")]),
        ("```python\nnever closed\n", [("python", "never closed\n")]),
        ("```python", [("python", "")]),
        ("```python\n```", [("python", "")]),
        ("inline ``` is not a fence\n", []),
        ("``` a`b\nnot a fence: a backtick in the info string\n```", [("", "")]),
    ],
)  # fmt: skip
def test_fences(text, expected):
    assert codes(text) == expected


def test_kinds():
    text = "```python\na\n```\n```\nb\n```\n```bash\nc\n```\n```json\n{}\n```\n```py3k\nd\n```"
    assert [f.kind for f in fenced_blocks(text)] == ["python", "python", "bash", None, None]


def test_extraction_uses_the_shared_rules():
    reply = "```bash\npip install x```\n~~~python\ndef f():\n    return 1\n~~~\n```text\nout\n```\n```\nassert f() == 1\n```"
    program = extract_program(reply)
    assert isinstance(program, Program)
    assert program.installs == ["pip install x"]
    assert program.source == "def f():\n    return 1\n\nassert f() == 1\n"  # the text block never runs
    assert (program.solution, program.tests) == ("def f():\n    return 1", "assert f() == 1")


def test_normalize_code():
    assert normalize_code("\r\n  x = 1\r\ny = 2\r  \n") == "x = 1\ny = 2"


# -------------------------------------------------------------------- what ran is what is kept

ROUND_1 = (
    "Solution:\r\n~~~python\r\ndef add(a, b):\r\n    return a - b\r\n~~~\r\nExample output:\r\n```text\r\n5\r\n```\r\n"
    "Tests:\r\n````python\r\nDOC = '''\r\n```\r\nnot a fence end\r\n```\r\n'''\r\nassert add(2, 3) == 5\r\n````\r\n"
)
ROUND_2 = (
    'Fixed:\n```\ndef add(a, b):\n    s = "```"\n    return a + b\n```\n```bash\npip install nothing```\n'
    "```python\nassert add(2, 3) == 5```\nDone."
)


class FakeLLM:
    def __init__(self, replies: dict[str, list[str]]) -> None:
        self.replies = replies
        self.settings = SimpleNamespace(model="fake", identity=None, sampling=lambda: {"temperature": 0})

    async def chat(self, messages):
        role = "questioner" if messages[0]["content"].startswith("You are the questioner") else "programmer"
        return Reply(self.replies[role].pop(0), 1, 1)


class RecordingSandbox:
    """Stands in for the sandbox: records the files of each run; the program passes when it adds (one check
    counted, as the interpreter's harness reports it on stderr)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, files, command, limits, prefix=None):
        source = files["main.py"]
        self.ran.append(source)
        ok = "return a + b" in source
        counts = "\n" + files[NONCE_NAME] + ' {"checks": 1, "failed": 0, "tests_failed": 0, "ran": []}\n'
        return SimpleNamespace(
            to_dict=lambda: {"exit_code": 0 if ok else 1, "stdout": "", "stderr": ("" if ok else "AssertionError")
                             + counts, "timed_out": False}
        )  # fmt: skip

    def install(self, specs, prefix, limits):
        return SimpleNamespace(to_dict=lambda: {"exit_code": 0, "stdout": "ok", "stderr": "", "timed_out": False})


def wrapped_code(content: str) -> list[str]:
    """The code of each block the SFT record wraps in code tokens, parsed back with the shared parser."""
    out = []
    start, end = DEFAULT_TOKENS["code_start"], DEFAULT_TOKENS["code_end"]
    pos = content.find(start)
    while pos >= 0:
        stop = content.index(end, pos)
        (block,) = fenced_blocks(content[pos + len(start) : stop])
        out.append(block.code)
        pos = content.find(start, stop)
    return out


def test_the_sft_record_holds_byte_for_byte_the_code_that_ran(tmp_path):
    llm = FakeLLM({"questioner": ["Write add(a, b).", "It subtracts."], "programmer": [ROUND_1, ROUND_2]})
    sandbox = RecordingSandbox()
    execute = make_executor(sandbox, None, None, tmp_path / "prefixes")
    dialogue = Dialogue(llm, execute, DialogueSettings(max_rounds=3), run_blocking=lambda fn, *a: _now(fn(*a)))
    entry = asyncio.run(dialogue.run({"id": "s:1", "kind": "instruction", "text": "add numbers"}))
    assert entry["passed"] and entry["rounds"] == 2 and len(sandbox.ran) == 2
    record = format_entry(entry, DEFAULT_TOKENS)
    answers = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    assert len(answers) == 2
    for content, ran in zip(answers, sandbox.ran, strict=True):
        assert "\n\n".join(wrapped_code(content)) + "\n" == ran
    assert "```text\r\n5\r\n```" in answers[0] and "<|code_start|>```text" not in answers[0]  # never ran: not code
    assert "<|bash_start|>```bash\npip install nothing```<|bash_end|>" in answers[1]


async def _now(value):
    return value
