"""The two agents (questioner and programmer), prompted the way the model understands: by model kind.

* ``chat`` (chat and instruct models, the paper): the chat endpoint with the paper's roles. Each agent keeps its
  own conversation: its system prompt, and the other agent's messages as user turns.
* ``completion`` (base models, such as the embedded default's Gemma-3-270M): the completions endpoint with
  few-shot templates (``prompts/completion_*.txt``): the problem from the seed (``completion_problem``), then one
  growing text per dialogue (the programmer's notebook): the solve template (whose examples show both a solved
  problem and a failed program with its result, explanation and fix) with the problem, the solution and tests
  as the model wrote them, then per failed round the result and the explanation (``completion_diagnose``), and
  the fix (``completion_fix``). Every request of a dialogue after its problem begins with the one before it and
  its reply, so the engine's prompt cache (or its saved state of this dialogue, aiev.llm.llama_server) serves
  all but the new end. Each template ends where the model must go on (for code: inside an opened
  ```` ```python ```` fence, so the model writes code, not chatter) and stop sequences end the reply at the
  template's next section. The programmer's recorded answer is the opened fence plus what the model wrote, so
  the entry's messages have the same shape in both modes and the same code-block rules apply.

Templates are package files; their SHA-256 goes into every entry's provenance (``prompts_sha256``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol

from aiev.llm.client import Message, Reply

CHAT_FILES = (
    "questioner_system.md",
    "questioner_problem.md",
    "questioner_diagnose.md",
    "programmer_system.md",
    "programmer_fix.md",
)
COMPLETION_FILES = (
    "completion_problem.txt",
    "completion_solve.txt",
    "completion_diagnose.txt",
    "completion_fix.txt",
)
MODES = ("chat", "completion")

#: The generating model of each stage (paper section 3.1): the teacher, or the student as both agents.
STAGE_ROLE = {"teaching": "teacher", "self-learning": "student"}

#: Completion mode: where a text reply ends (the template's next section), and where a code reply ends.
TEXT_STOP = ["\n###", "\n\n\n", "```"]
CODE_STOP = ["### End", "\n### Problem", "\n### Code", "\n### Result"]
#: Completion mode: how much of an execution result a template shows (a small model's context is short).
RESULT_CHARS = 1200
#: Completion mode: past this length a dialogue's notebook starts again from the solve prompt (about 2,500
#: tokens: room for the next round within the demo's 4,096-token context).
NOTEBOOK_CHARS = 9000
CODE_OPEN = "```python\n"

Ask = Callable[..., Awaitable[str]]


def load_prompts(mode: str = "chat") -> dict[str, str]:
    files = CHAT_FILES if mode == "chat" else COMPLETION_FILES
    base = resources.files("aiev.llm").joinpath("prompts")
    return {name.rsplit(".", 1)[0]: base.joinpath(name).read_text(encoding="utf-8") for name in files}


def prompts_sha256(prompts: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name in sorted(prompts):
        h.update(name.encode() + b"\0" + prompts[name].encode() + b"\0")
    return h.hexdigest()


def fill(template: str, **values: str) -> str:
    """Substitute ``{name}`` placeholders in one pass (values may themselves hold braces)."""
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), template)


class Agents(Protocol):
    """One dialogue's two agents. ``ask_chat(history)`` / ``ask_complete(prompt, stop)`` reach the model."""

    async def problem(self, seed: dict[str, Any]) -> str: ...
    async def answer(self, problem: str) -> str: ...
    async def diagnose(self, code: str, result: str) -> str: ...
    async def fix(self, code: str, result: str, diagnosis: str) -> str: ...


class ChatAgents:
    """The paper's roles on a chat model."""

    def __init__(self, prompts: dict[str, str], ask_chat: Callable[[list[Message]], Awaitable[str]]) -> None:
        self.p = prompts
        self.ask = ask_chat
        self.questioner: list[Message] = [{"role": "system", "content": prompts["questioner_system"]}]
        self.programmer: list[Message] = [{"role": "system", "content": prompts["programmer_system"]}]

    async def _turn(self, history: list[Message], content: str) -> str:
        history.append({"role": "user", "content": content})
        reply = await self.ask(list(history))
        history.append({"role": "assistant", "content": reply})
        return reply

    async def problem(self, seed: dict[str, Any]) -> str:
        return await self._turn(
            self.questioner, fill(self.p["questioner_problem"], kind=seed["kind"], seed=seed["text"])
        )

    async def answer(self, problem: str) -> str:
        return await self._turn(self.programmer, problem)

    async def diagnose(self, code: str, result: str) -> str:
        return await self._turn(self.questioner, fill(self.p["questioner_diagnose"], code=code, result=result))

    async def fix(self, code: str, result: str, diagnosis: str) -> str:
        return await self._turn(self.programmer, fill(self.p["programmer_fix"], result=result, diagnosis=diagnosis))


def _tail(text: str, limit: int) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _code_reply(generated: str) -> str:
    """The programmer's answer: the fence the template opened, what the model wrote, cut at a stop marker."""
    for marker in CODE_STOP:
        cut = generated.find(marker)
        if cut >= 0:
            generated = generated[:cut]
    return CODE_OPEN + generated.rstrip() + "\n"


class CompletionAgents:
    """Few-shot templates on a base model (see the module docstring)."""

    def __init__(self, prompts: dict[str, str], ask_complete: Callable[[str, list[str]], Awaitable[str]]) -> None:
        self.p = prompts
        self.ask = ask_complete
        self._problem = ""
        self._notebook = ""  # the programmer's text so far: the last code prompt and the model's reply to it

    async def problem(self, seed: dict[str, Any]) -> str:
        text = await self.ask(fill(self.p["completion_problem"], seed=seed["text"].strip("\n")), TEXT_STOP)
        self._problem = text.strip()
        return self._problem

    async def _code(self, prompt: str) -> str:
        generated = await self.ask(prompt, CODE_STOP)
        self._notebook = prompt + generated
        return _code_reply(generated)

    async def answer(self, problem: str) -> str:
        return await self._code(fill(self.p["completion_solve"], problem=problem.strip()))

    def _failed(self, code: str, result: str) -> str:
        """The diagnosis prompt: the notebook (the solve prompt, the failed code and its tests as the model wrote
        them), then the result, up to the explanation. Where the notebook grew past :data:`NOTEBOOK_CHARS` (many
        rounds), it starts again from the solve prompt with the failed code as it ran."""
        notebook = self._notebook
        if not notebook or len(notebook) > NOTEBOOK_CHARS:
            notebook = fill(self.p["completion_solve"], problem=self._problem) + code.strip("\n") + "\n```\n"
        if not notebook.endswith("\n"):
            notebook += "\n"
        if notebook.count("```") % 2:  # the reply ran out of tokens inside its code block: close it
            notebook += "```\n"
        return notebook + fill(self.p["completion_diagnose"], result=_tail(result, RESULT_CHARS))

    async def diagnose(self, code: str, result: str) -> str:
        prompt = self._failed(code, result)
        diagnosis = (await self.ask(prompt, TEXT_STOP)).strip()
        self._notebook = prompt  # the fix goes on from here
        return diagnosis

    async def fix(self, code: str, result: str, diagnosis: str) -> str:
        """The fix prompt is the diagnosis prompt, the explanation and the fix template."""
        prompt = (self._notebook or self._failed(code, result)) + fill(self.p["completion_fix"],
                                                                       diagnosis=diagnosis.strip())  # fmt: skip
        return await self._code(prompt)


def agents_for(mode: str, prompts: dict[str, str], llm: Any, usage: dict[str, int]) -> Agents:
    """One dialogue's (or one scored task's) agents on ``llm`` (an :class:`aiev.llm.client.LLMClient`), prompted
    by model kind; every reply's tokens are added to ``usage`` (``requests``, ``prompt_tokens``,
    ``completion_tokens``)."""

    def count(reply: Reply) -> str:
        usage["requests"] = usage.get("requests", 0) + 1
        usage["prompt_tokens"] = usage.get("prompt_tokens", 0) + reply.prompt_tokens
        usage["completion_tokens"] = usage.get("completion_tokens", 0) + reply.completion_tokens
        return reply.text

    async def ask_chat(history: list[Message]) -> str:
        return count(await llm.chat(history))

    async def ask_complete(prompt: str, stop: list[str]) -> str:
        return count(await llm.complete(prompt, stop))

    if mode == "completion":
        return CompletionAgents(prompts, ask_complete)
    return ChatAgents(prompts, ask_chat)
