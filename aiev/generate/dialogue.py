"""The AIEV dialogue (paper section 3.1): questioner and programmer agents with execution feedback.

I.   Roles are initialised and the message list is empty.
II.  The questioner turns the seed into a problem (message 1); the programmer answers with a solution and unit
     tests (2).
III. The code, and any ``pip install`` turn before it, runs in the sandbox. On failure the result (stderr) is
     appended (3), the questioner diagnoses it in plain language (4), the programmer answers with fixed code
     (5); repeat.
IV.  On success the result (stdout) is appended (6) and the entry is complete. After ``max_rounds`` executions
     without a pass the dialogue is rejected, with its reason.

Code rules (documented in docs/dialogue.md), on the blocks of the shared parser (:mod:`aiev.codeblocks`):
blocks tagged python/py/python3 or untagged are Python; bash/sh/shell blocks are install turns (only ``pip
install``); other languages are never run. The program is the Python blocks, verbatim, joined by a blank line
(``main.py``), so the SFT record, which wraps the same blocks, holds exactly what ran. Two or more Python
blocks: the last is the tests, the others are the solution. One block: split where its tests begin (the first
top-level test class or function, assertion or ``if __name__ == ...``; imports at the top stay with the
solution); without tests the round fails with "no unit tests", quoting what the block holds. No Python block:
the round fails with "no code". Pass = the harness's verdict (:func:`aiev.interpreter.verdict`): install (if
any) and program exit 0, no timeout, at least one check of the tests executed and none failed, whatever style
the tests are written in (counted in the sandbox by :func:`aiev.interpreter.run_checked`, which also runs the
tests nothing ran); exit 0 with no check executed is ``tests_not_run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiev import __version__
from aiev.codeblocks import CodeProblem, Program, extract_program
from aiev.interpreter import (
    NO_CHECKS_NOTE,
    describe_result,
    install_prefix,
    install_refusal,
    refused_install,
    run_checked,
    run_install,
    verdict,
)
from aiev.llm.agents import agents_for, load_prompts, prompts_sha256
from aiev.llm.client import LLMClient, LLMError


@dataclass
class DialogueSettings:
    max_rounds: int = 7
    stage: str = "teaching"
    batch: int | None = None
    fingerprint: str | None = None  # of everything that shapes an entry (aiev.generate.shards.entry_settings)
    mode: str = "chat"  # how the agents are prompted: chat | completion (aiev.llm.agents)


class Dialogue:
    """One seed's dialogue. ``execute`` runs a Program in the sandbox (blocking; run in a thread)."""

    def __init__(
        self,
        llm: LLMClient,
        execute: Callable[[Program, str], dict[str, Any]],
        settings: DialogueSettings,
        prompts: dict[str, str] | None = None,
        run_blocking: Callable[..., Any] | None = None,
        on_round: Callable[[str, int], None] | None = None,
    ) -> None:
        self.llm = llm
        self.execute = execute
        self.settings = settings
        self.prompts = prompts or load_prompts(settings.mode)
        self.prompt_hash = prompts_sha256(self.prompts)
        self.run_blocking = run_blocking or asyncio.to_thread
        self.on_round = on_round or (lambda seed_id, rounds: None)

    async def run(self, seed: dict[str, Any]) -> dict[str, Any]:
        usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        agents = agents_for(self.settings.mode, self.prompts, self.llm, usage)
        talk = _Talk()
        try:
            await self._converse(seed, agents, talk)
        except LLMError as exc:
            if not exc.final:
                raise  # transient (rate limits, 5xx, timeouts): the dialogue stays unfinished, a re-run resumes it
            talk.reason = f"llm_{exc.reason}"  # the model's own answer: retrying the same request cannot help
        return self._entry(seed, talk, usage)

    async def _converse(self, seed: dict[str, Any], agents: Any, talk: _Talk) -> None:
        """II to IV: the problem, then answer, run and diagnosis until a pass or ``max_rounds`` runs."""
        talk.problem = await agents.problem(seed)
        talk.messages.append({"role": "user", "agent": "questioner", "content": talk.problem})
        next_answer = agents.answer(talk.problem)
        while True:
            answer = await next_answer
            talk.messages.append({"role": "assistant", "agent": "programmer", "content": answer})
            talk.rounds += 1
            self.on_round(seed["id"], talk.rounds)
            code_shown, result_text = await self._execute(answer, seed["id"], talk)
            if talk.program is not None or talk.rounds >= self.settings.max_rounds:
                return
            # the questioner diagnoses (4), the programmer fixes (5)
            diagnosis = await agents.diagnose(code_shown, result_text)
            talk.messages.append({"role": "user", "agent": "questioner", "content": diagnosis})
            next_answer = agents.fix(code_shown, result_text, diagnosis)

    async def _execute(self, answer: str, seed_id: str, talk: _Talk) -> tuple[str, str]:
        """III: the answer's program run in the sandbox (or why there is none); its result joins the messages.
        Returns (the code shown to the questioner, the result's text)."""
        extracted = extract_program(answer)
        if isinstance(extracted, CodeProblem):
            execution: dict[str, Any] = {"exit_code": None, "stdout": "", "stderr": "", "timed_out": False,
                                         "note": extracted.message}  # fmt: skip
            talk.reason = extracted.reason
            code_shown = ""
        else:
            execution = await self.run_blocking(self.execute, extracted, seed_id)
            talk.reason = "max_rounds"
            passed, why = verdict(execution)
            if passed:
                talk.program = extracted
            elif why == "tests_not_run":  # exit 0 with no check executed is no pass: the tests never ran
                execution["note"] = "\n".join(filter(None, [execution.get("note"), NO_CHECKS_NOTE]))
                talk.reason = "tests_not_run"
            code_shown = extracted.solution + "\n\n" + extracted.tests
        result_text = describe_result(execution)
        exec_msg = {"role": "execution", "agent": "interpreter", "content": result_text}
        exec_msg.update({k: execution.get(k) for k in ("exit_code", "stdout", "stderr", "timed_out")})
        for key in ("checks", "install"):
            if execution.get(key) is not None:
                exec_msg[key] = execution[key]
        talk.messages.append(exec_msg)
        return code_shown, result_text

    def _entry(self, seed: dict[str, Any], talk: _Talk, usage: dict[str, int]) -> dict[str, Any]:
        program = talk.program
        passed = program is not None
        return {
            "id": seed["id"],
            "seed_id": seed["id"],
            "batch": self.settings.batch,
            "stage": self.settings.stage,
            "model": self.llm.settings.model,
            "rounds": talk.rounds,
            "passed": passed,
            "reason": None if passed else talk.reason,
            "language": "python",
            "problem": talk.problem if passed else None,
            "solution": program.solution if program else None,
            "tests": program.tests if program else None,
            "messages": talk.messages,
            "usage": usage,
            "provenance": {
                "mode": self.settings.mode,
                "model_identity": self.llm.settings.identity,
                "prompts_sha256": self.prompt_hash,
                "sampling": self.llm.settings.sampling(),
                "max_rounds": self.settings.max_rounds,
                "seed": {
                    "id": seed["id"],
                    "source": seed.get("source"),
                    "provenance": seed.get("provenance"),
                },
                "aiev_version": __version__,
                "fingerprint": self.settings.fingerprint,
            },
        }


@dataclass
class _Talk:
    """A dialogue as it goes: its messages, the problem, the rounds run, why it has not passed, the passing
    program."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    problem: str = ""
    rounds: int = 0
    reason: str = "max_rounds"
    program: Program | None = None


def prefix_for(root: Path, dialogue_id: str) -> Path:
    """The per-dialogue install prefix: packages one dialogue installed are seen by its later runs only."""
    return install_prefix(root, dialogue_id)


def make_executor(sandbox: Any, limits: Any, install_limits: Any, prefix_root: Path, install_enabled: bool = True):
    """An Executor over the sandbox interface: install turns into a per-dialogue prefix, then the program."""

    def execute(program: Program, dialogue_id: str) -> dict[str, Any]:
        prefix = prefix_for(prefix_root, dialogue_id)
        install: dict[str, Any] | None = None
        if program.installs:
            specs, why = install_refusal(program.installs, install_enabled)
            if why is not None:
                install = refused_install(specs, why)
            else:
                install = run_install(sandbox, specs, prefix, install_limits)
            if install["exit_code"] != 0:
                return {"exit_code": None, "stdout": "", "stderr": "", "timed_out": False, "install": install}
        out = run_checked(sandbox, program.source, program.tests_line, limits, prefix)
        out["install"] = install
        return out

    return execute
