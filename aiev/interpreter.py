"""The code-interpreter format: the one text shape in which a programmer answer, its executable blocks and their
results are written, shared by the SFT records (:mod:`aiev.curate.format`), the trainer (:mod:`aiev.train.data`),
the dialogue (:mod:`aiev.generate.dialogue`) and the interactive interpreter (:mod:`aiev.chat`).

- The four special tokens (config ``format.tokens``): bash blocks (``pip install``) are wrapped in
  ``<|bash_start|>...<|bash_end|>``, Python blocks in ``<|code_start|>...<|code_end|>``, the fence kept inside
  (:func:`wrap_answer`). Which blocks are executable is the shared parser's rule (:mod:`aiev.codeblocks`).
- A result is inserted right after a block as ``"\\n" + text`` (context, never trained): an install's text is
  :func:`install_text`, a failed or refused install's and a program's is :func:`describe_result`.
- :class:`Template`: the text around turns (config ``train.template``), also written as the trained tokenizer's
  chat template, and :meth:`Template.render` for a completion prompt that continues an assistant turn.
- :func:`install_refusal` (may an install turn run, and if not why, in one wording), :func:`refused_install`,
  :func:`run_install`, :func:`run_program`: an install turn and a program, as the dialogue and the chat run them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.codeblocks import Fence, fenced_blocks

TOKEN_KEYS = ("bash_start", "bash_end", "code_start", "code_end")
DEFAULT_TOKENS = {
    "bash_start": "<|bash_start|>",
    "bash_end": "<|bash_end|>",
    "code_start": "<|code_start|>",
    "code_end": "<|code_end|>",
}
_PIP_TAIL_LINES = 3


# ------------------------------------------------------------------------------------------------ results


def tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def describe_result(execution: dict[str, Any]) -> str:
    """The text of an execution message: what the programmer and questioner are shown."""
    parts = []
    inst = execution.get("install")
    if inst is not None and inst.get("exit_code") != 0:
        parts.append(f"pip install failed (exit code {inst.get('exit_code')}):\n{tail(inst.get('stderr', ''))}")
    if execution.get("timed_out"):
        parts.append("The program was stopped: it ran past the time limit.")
    if execution.get("oom_killed"):
        parts.append("The program was killed: it used more memory than the sandbox allows.")
    if execution.get("exit_code") is not None:
        parts.append(f"exit code {execution['exit_code']}")
    if execution.get("stdout"):
        parts.append(f"stdout:\n{tail(execution['stdout'])}")
    if execution.get("stderr"):
        parts.append(f"stderr:\n{tail(execution['stderr'])}")
    if execution.get("note"):
        parts.append(execution["note"])
    return "\n".join(parts) if parts else "exit code 0 (no output)"


def install_text(install: dict[str, Any]) -> str:
    """A successful install's result as the record shows it: the command, its exit code, pip's last lines."""
    specs = " ".join(install.get("specs") or [])
    head = f"pip install {specs}".rstrip() + f": exit code {install.get('exit_code')}"
    if install.get("exit_code") == 0:
        lines = (install.get("stdout") or "").strip().splitlines()[-_PIP_TAIL_LINES:]
    else:
        lines = (install.get("stderr") or "").strip().splitlines()[-20:]
    return "\n".join([head, *lines])


def install_result_text(install: dict[str, Any]) -> str:
    """What follows an install turn's (last) bash block: :func:`install_text` when it succeeded, else the
    execution message of a dialogue whose install failed or was refused (the program did not run)."""
    if install.get("exit_code") == 0:
        return install_text(install)
    return describe_result({"exit_code": None, "stdout": "", "stderr": "", "timed_out": False, "install": install})


# ------------------------------------------------------------------------------------------------ wrapping


def executable_blocks(answer: str) -> list[Fence]:
    """The blocks that run (bash install turns and Python), nothing else."""
    return [b for b in fenced_blocks(answer) if b.kind is not None and b.code.strip()]


def token_kind(block: Fence) -> str:
    """``bash`` or ``code``: which pair of special tokens wraps the block."""
    return "bash" if block.kind == "bash" else "code"


def wrap_answer(answer: str, tokens: dict[str, str], outputs: dict[int | None, list[str]]) -> list[tuple[str, bool]]:
    """An answer with its executable blocks wrapped in the special tokens, as (text, trained) pieces, with the
    results ``outputs[i]`` inserted (``"\\n" + text``, not trained) right after block ``i``; ``outputs[None]``
    closes the answer."""
    pieces: list[tuple[str, bool]] = []
    pos = 0
    for i, block in enumerate(executable_blocks(answer)):
        kind = token_kind(block)
        pieces.append((answer[pos : block.start], True))
        pieces.append((tokens[f"{kind}_start"] + answer[block.start : block.end] + tokens[f"{kind}_end"], True))
        pieces.extend(("\n" + text, False) for text in outputs.get(i, []))
        pos = block.end
    pieces.append((answer[pos:], True))
    pieces.extend(("\n" + text, False) for text in outputs.get(None, []))
    return pieces


def strip_tokens(text: str, tokens: dict[str, str]) -> str:
    """A reply without the special tokens (engines that do not skip special tokens return them)."""
    for key in TOKEN_KEYS:
        text = text.replace(tokens[key], "")
    return text


# ------------------------------------------------------------------------------------------------ template


@dataclass(frozen=True)
class Template:
    user_prefix: str = "### Instruction:\n"
    assistant_prefix: str = "### Response:\n"
    turn_end: str = "\n\n"

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> Template:
        t = section.get("template") or {}
        return cls(**{k: t[k] for k in ("user_prefix", "assistant_prefix", "turn_end") if k in t})

    def chat_template(self) -> str:
        """The same layout as a Jinja chat template (for ``tokenizer.chat_template``: serving engines use it)."""

        def lit(s: str) -> str:
            return "'" + s.replace("\\", "\\\\").replace("\n", "\\n").replace("'", "\\'") + "'"

        return (
            "{% if bos_token %}{{ bos_token }}{% endif %}"  # training starts every example with it
            "{% for message in messages %}"
            "{% if message['role'] == 'user' %}"
            f"{{{{ {lit(self.user_prefix)} + message['content'] + {lit(self.turn_end)} }}}}"
            "{% elif message['role'] == 'assistant' %}"
            f"{{{{ {lit(self.assistant_prefix)} + message['content'] + eos_token + {lit(self.turn_end)} }}}}"
            "{% endif %}{% endfor %}"
            f"{{% if add_generation_prompt %}}{{{{ {lit(self.assistant_prefix)} }}}}{{% endif %}}"
        )

    def render(self, messages: list[dict[str, str]], partial: str, *, bos: str = "", eos: str = "") -> str:
        """A completion prompt: finished turns as the trainer lays them out (``bos``, each user turn, each
        assistant turn closed by ``eos``), then the assistant turn in progress, ``partial``, left open."""
        out = [bos]
        for msg in messages:
            if msg["role"] == "user":
                out.append(self.user_prefix + msg["content"] + self.turn_end)
            else:
                out.append(self.assistant_prefix + msg["content"] + eos + self.turn_end)
        return "".join([*out, self.assistant_prefix, partial])


# ------------------------------------------------------------------------------------------------ sandbox calls


def install_specs(blocks: list[str]) -> tuple[list[str], list[tuple[str, Exception]]]:
    """The requirement specifiers of install-turn bash blocks, and each refused line with its reason (blank and
    comment lines are skipped; every other line must be a plain ``pip install``, :mod:`aiev.sandbox.install`)."""
    from aiev.sandbox import PipInstallError, parse_pip_install

    specs: list[str] = []
    refused: list[tuple[str, Exception]] = []
    for block in blocks:
        for line in (ln for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")):
            try:
                specs.extend(parse_pip_install(line))
            except PipInstallError as exc:
                refused.append((line, exc))
    return specs, refused


def install_refusal(blocks: list[str], enabled: bool) -> tuple[list[str], str | None]:
    """The specifiers of an install turn's bash blocks and, when the turn may not run, why: the text the records
    keep and the chat feeds back (one wording for generation and chat alike)."""
    specs, refused = install_specs(blocks)
    if refused:
        line, exc = refused[0]
        why = str(exc).removeprefix("refused: ")
        return specs, f"refused: only `pip install` runs in bash: found `{line.strip()}` ({why})"
    if not specs:
        return specs, "refused: the bash block holds no `pip install` line"
    if not enabled:
        return specs, "refused: package installs are disabled (sandbox.install.enabled: false)"
    return specs, None


def refused_install(specs: list[str], why: str) -> dict[str, Any]:
    """The install dict of a turn that did not run (the shape :func:`run_install` returns)."""
    return {"exit_code": None, "stdout": "", "stderr": why, "timed_out": False, "specs": specs}


def install_prefix(root: Path, key: str) -> Path:
    """The install prefix of one dialogue or task under ``root``: packages it installed are seen by its later
    runs only (generation's dialogues and pass@1's tasks alike)."""
    return root / hashlib.sha256(key.encode()).hexdigest()[:16]


def run_install(sandbox: Any, specs: list[str], prefix: Path, limits: Any) -> dict[str, Any]:
    """Install ``specs`` into ``prefix`` in the sandbox: the install dict the records keep."""
    prefix.mkdir(parents=True, exist_ok=True)
    res = sandbox.install(specs, prefix, limits).to_dict()
    return {k: res[k] for k in ("exit_code", "stdout", "stderr", "timed_out")} | {"specs": specs}


def passing_installs(entry: dict[str, Any]) -> list[str]:
    """The packages an entry's passing round installed (its last execution message's ``install.specs``): what a
    later run of its code needs beside it (pass@1 installs them; the test check cannot run without them)."""
    for msg in reversed(entry.get("messages") or []):
        if msg.get("role") == "execution":
            inst = msg.get("install") or {}
            return [str(s) for s in inst.get("specs") or []] if inst.get("exit_code") == 0 else []
    return []


def run_program(sandbox: Any, source: str, limits: Any, prefix: Path | None) -> dict[str, Any]:
    """Run ``source`` as ``main.py`` in the sandbox, with the packages of ``prefix`` (where it exists)."""
    use = prefix if prefix is not None and prefix.exists() else None
    res = sandbox.run({"main.py": source}, ["python3", "main.py"], limits, prefix=use).to_dict()
    return _execution(res)


def _execution(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: res[k] for k in ("exit_code", "stdout", "stderr", "timed_out")}
    if res.get("oom_killed"):
        out["oom_killed"] = True
    return out


#: The file that runs a program and counts its checks inside the sandbox (:mod:`aiev.sandbox.harness`).
HARNESS_NAME = "_aiev_run.py"
#: The file the harness reads its nonce from (and unlinks before the program starts).
NONCE_NAME = ".aiev_nonce"
NO_CHECKS_NOTE = (
    "The program exited 0 but no test ran: no assert of the tests and no unittest check was executed. Make the "
    "tests run when the file runs (call the test functions, or end with unittest.main())."
)


@functools.cache
def harness_source() -> str:
    """The harness's text, read once per process (it goes into every execution of a dialogue)."""
    return (Path(__file__).parent / "sandbox" / "harness.py").read_text(encoding="utf-8")


def run_checked(sandbox: Any, source: str, tests_line: int, limits: Any, prefix: Path | None) -> dict[str, Any]:
    """Run ``source`` as ``main.py`` like :func:`run_program`, counting what its tests check (from line
    ``tests_line`` on): the execution dict gains ``checks`` (the harness's counts: checks executed and failed,
    tests run and failed, distinct cases, the first failures, what the harness ran itself; None when the program
    ended without the count: killed, timed out, ``os._exit``) and ``verdict`` (:func:`verdict`). Tests the program
    defined and did not run are run (``checks.ran``); a ``note`` says so, and quotes failures a plain run hides."""
    use = prefix if prefix is not None and prefix.exists() else None
    nonce = "aiev-checks-" + secrets.token_hex(16)
    res = sandbox.run(
        {"main.py": source, HARNESS_NAME: harness_source(), NONCE_NAME: nonce},
        ["python3", HARNESS_NAME, "main.py", str(tests_line)],
        limits,
        prefix=use,
    ).to_dict()
    out = _execution(res)
    out["stderr"], out["checks"] = _take_counts(out["stderr"], nonce)
    notes = []
    ran = (out["checks"] or {}).get("ran") or []
    if "unittest" in ran:
        notes.append("Nothing ran some of the program's unittest.TestCase tests: the interpreter ran them.")
    names = [n for n in ran if n != "unittest"]
    if names:
        notes.append(f"Nothing called the test functions {', '.join(names)}: the interpreter called them.")
    passed, why = verdict(out)
    if why and why != "tests_not_run" and out.get("exit_code") == 0 and not out.get("timed_out"):
        notes.append(_failure_note(out["checks"] or {}, why))
    if notes:
        out["note"] = "\n".join(notes)
    out["verdict"] = "pass" if passed else why
    return out


def verdict(execution: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether a checked execution passed, and if not why: ``error`` (the program failed, timed out or ended
    without its count), ``tests_not_run`` (no check executed), ``checks_failed`` (a check failed or raised, even
    one the program caught, or a test failed, whatever the exit code), ``exited_early`` (it left by ``sys.exit``
    before top-level checks that follow). A pass needs exit 0, one check executed and none failed."""
    checks = execution.get("checks")
    if execution.get("timed_out") or execution.get("exit_code") != 0 or checks is None:
        if checks and (checks.get("failed") or checks.get("tests_failed")):
            return False, "checks_failed"
        return False, "error"
    if checks.get("failed") or checks.get("tests_failed"):
        return False, "checks_failed"
    if checks.get("skipped"):
        return False, "exited_early"
    if checks_executed(execution) == 0:
        return False, "tests_not_run"
    return True, None


def _failure_note(checks: dict[str, Any], why: str) -> str:
    if why == "exited_early":
        return (
            f"The program exited before the checks from line {checks.get('skipped')} on ran: they did not pass. "
            "Let every test run (no sys.exit before them)."
        )
    failed = int(checks.get("failed") or 0) + int(checks.get("tests_failed") or 0)
    quoted = "\n".join(f"- {f}" for f in checks.get("failures") or [])
    return f"The program exited 0, but its tests reported {failed} failure(s):\n{quoted}".rstrip()


def run_batch(sandbox: Any, job: dict[str, Any], limits: Any) -> dict[str, Any] | None:
    """One sandbox execution of the harness's batch mode (:mod:`aiev.sandbox.harness`): ``job['programs']`` each
    in a forked child, in its own folder as ``main.py``, under ``job['timeout_s']``, then ``job['examples']`` on
    ``job['solution']``. The raw results ({programs: [{status, timed_out, result}], examples}), or None when the
    run ended without them."""
    nonce = "aiev-batch-" + secrets.token_hex(16)
    res = sandbox.run(
        {HARNESS_NAME: harness_source(), "job.json": json.dumps(job), NONCE_NAME: nonce},
        ["python3", HARNESS_NAME, "--batch", "job.json"],
        limits,
    ).to_dict()
    return _take_counts(res["stderr"], nonce)[1]


def program_verdict(result: dict[str, Any]) -> tuple[bool, str | None]:
    """The dialogue's verdict (:func:`verdict`) on one program of a batch (``{status, timed_out, result}``)."""
    return verdict({"exit_code": result["status"], "timed_out": result["timed_out"], "checks": result["result"]})


def program_passed(result: dict[str, Any]) -> bool:
    return program_verdict(result)[0]


def checked_program(solution: str, tests: str) -> tuple[str, int]:
    """``solution`` and ``tests`` as one ``main.py`` (a blank line between), and the line its tests start on: what
    :func:`run_checked` and the harness's batch mode take."""
    return f"{solution}\n\n{tests}", solution.count("\n") + 3


def _take_counts(stderr: str, nonce: str) -> tuple[str, dict[str, Any] | None]:
    at = stderr.rfind(f"\n{nonce} ")
    if at < 0:
        return stderr, None
    end = stderr.find("\n", at + 1)
    end = len(stderr) if end < 0 else end
    try:
        counts = json.loads(stderr[at + len(nonce) + 2 : end])
    except ValueError:
        return stderr, None
    return stderr[:at] + stderr[end + 1 :], counts


def checks_executed(execution: dict[str, Any]) -> int:
    """How many checks of the tests ran: asserts, unittest check calls and doctest examples (0 when not counted)."""
    return int((execution.get("checks") or {}).get("checks", 0))
