"""Benchmark samples from a model: ``aiev benchmark generate``, greedy, code interpreter off.

Prompts (AutoCoder's evaluation scripts), by how the model is prompted (``llm.ROLE.mode``):

* chat: HumanEval: "Write a solution to the following problem:" and the task's prompt in a python fence; MBPP: the
  task's description, "Your code should satisfy the following assertion:" and all of its test asserts in a python
  fence. The reply's code is the sample.
* completion (base models): the task's prompt (HumanEval) or the description and asserts as a comment block
  followed by an opened fence (MBPP); the model's continuation is the code.

Every sample is sanitised by evalplus's own ``sanitize`` (the target function and what it needs) before scoring;
the raw reply is kept beside it.

MultiPL-E (``multipl-e-LANG``): chat: "Write a solution to the following problem in LANGUAGE:" and the task's prompt
(the doc comment and the function's first line) in a fence; the completion is the reply's code after that first
line (helpers written before it are lost, as in MultiPL-E's completion format). Completion mode: the prompt itself,
cut at the task's stop tokens. The scorer cuts every completion at the stop tokens.

DS-1000: chat: the problem (which ends where the answer goes) and "Write only the code that replaces BEGIN
SOLUTION, in a python fence"; completion mode: the problem, stopped at ``</code>`` or ``END SOLUTION``.

Replies go through the one LLM client: cached in the state directory, so a re-run asks nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.codeblocks import blocks_of_kind, fenced_blocks
from aiev.io import ProgressStore, write_jsonl
from aiev.llm.client import LLMError
from aiev.runtime import ModelSettings, Resume, Session
from aiev.suites import language

log = logging.getLogger("aiev.scoring")

STOP = ["\n```", "\nif __name__", "\n# Test", "\nassert "]


def mbpp_text(task: dict[str, Any]) -> tuple[str, str]:
    """(description, all test asserts) of an MBPP+ task."""
    body = task["prompt"].strip().strip('"').strip()
    description = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("assert "))
    asserts = task.get("assertion") or "\n".join(ln for ln in body.splitlines() if ln.strip().startswith("assert "))
    return description.strip(), asserts.strip()


DS1000_STOP = ["</code>", "# SOLUTION END", "\nEND SOLUTION"]


def chat_prompt(suite: str, task: dict[str, Any]) -> str:
    if suite.startswith("multipl-e-"):
        lang = language(suite)
        fenced = f"```{lang.fence}\n{task['prompt'].rstrip()}\n```"
        return f"Write a solution to the following problem in {lang.name}:\n{fenced}"
    if suite == "ds1000":
        return (f"{task['prompt'].rstrip()}\n\nWrite only the code that replaces BEGIN SOLUTION (it runs where the "
                "problem's code ends and must set what the problem asks for), in a python fence.")  # fmt: skip
    if suite == "humaneval":
        return f"Write a solution to the following problem:\n```python\n{task['prompt'].rstrip()}\n```"
    description, asserts = mbpp_text(task)
    return f"{description}\nYour code should satisfy the following assertion:\n```python\n{asserts}\n```"


def completion_prompt(suite: str, task: dict[str, Any]) -> str:
    if suite == "humaneval" or suite == "ds1000" or suite.startswith("multipl-e-"):
        return task["prompt"]
    description, asserts = mbpp_text(task)
    comment = "\n".join(f"# {ln}" for ln in f"{description}\n{asserts}".splitlines())
    return f"{comment}\n```python\n"


def stops(suite: str, task: dict[str, Any]) -> list[str]:
    if suite.startswith("multipl-e-"):
        return list(task.get("stop_tokens") or [])
    return DS1000_STOP if suite == "ds1000" else STOP


def first_code(reply: str) -> str:
    """The reply's first fenced block of any language (the whole reply when it has none)."""
    blocks = fenced_blocks(reply)
    return blocks[0].code if blocks else reply


def multiple_completion(task: dict[str, Any], code: str) -> str:
    """A MultiPL-E completion from a whole function: what follows the prompt's first line of the function."""
    signature = next((ln.strip() for ln in reversed(task["prompt"].splitlines()) if ln.strip()), "")
    lines = code.splitlines()
    for i, line in enumerate(lines):
        if signature and line.strip() == signature:
            return "\n".join(lines[i + 1 :]) + "\n"
    return code


def sample_of(suite: str, task: dict[str, Any], reply: str, mode: str) -> dict[str, str]:
    """The scored fields a reply stands for: ``solution`` (evalplus, sanitised) or ``completion``."""
    if suite.startswith("multipl-e-"):
        return {"completion": reply if mode == "completion" else multiple_completion(task, first_code(reply))}
    if suite == "ds1000":
        return {"completion": reply if mode == "completion" else first_code(reply)}
    return {"solution": sanitize(code_of(suite, task, reply, mode), task["entry_point"]) if reply else ""}


def code_of(suite: str, task: dict[str, Any], reply: str, mode: str) -> str:
    """The program a reply stands for, before sanitising."""
    if mode == "completion":
        return (task["prompt"] if suite == "humaneval" else "") + reply
    blocks = [f.code for f in blocks_of_kind(reply, "python")]
    return "\n\n".join(blocks) if blocks else reply


def sanitize(code: str, entry_point: str) -> str:
    from evalplus.sanitize import sanitize as evalplus_sanitize

    return evalplus_sanitize(code, entry_point)


#: The code that makes a sample: these modules and every aiev module they import.
CODE_ROOTS = ("aiev.scoring.samples",)


@dataclass(frozen=True)
class SampleSettings:
    """What sampling a suite runs with: the model asked greedily (``evaluate.concurrency``), how it is prompted
    (``mode``: chat or completion; default ``llm.ROLE.mode``) and the ``benchmark`` section (tasks, limit)."""

    model: ModelSettings
    mode: str
    benchmark: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any], role: str, mode: str | None = None) -> SampleSettings:
        model = ModelSettings.from_section(cfg["llm"], role).greedy(concurrency=cfg["evaluate"]["concurrency"])
        return cls(model, mode or model.mode, cfg["benchmark"])


async def _ask(client: Any, suite: str, task: dict[str, Any], mode: str) -> str:
    if mode == "completion":
        return (await client.complete(completion_prompt(suite, task), stops(suite, task))).text
    return (await client.chat([{"role": "user", "content": chat_prompt(suite, task)}])).text


async def _generate(tasks: list[dict[str, Any]], suite: str, settings: SampleSettings, state: Path,
                    store: ProgressStore) -> dict[str, Any]:  # fmt: skip
    """A sample per task ``store`` has not, each stored as it comes; the client's usage."""
    errors: list[str] = []

    async def one(session: Session, task: dict[str, Any]) -> None:
        try:
            reply = await _ask(session.client, suite, task, settings.mode)
        except LLMError as exc:
            if not exc.final:
                errors.append(f"{task['task_id']}: {exc}")
                return  # unsampled: a re-run asks again
            reply = ""
        store.add({"task_id": task["task_id"], **sample_of(suite, task, reply, settings.mode), "raw": reply})

    todo = [t for t in tasks if t["task_id"] not in store.done]
    async with Session(settings.model, state / "llm_cache.sqlite") as session:
        await asyncio.gather(*(one(session, t) for t in todo))
    if errors:
        raise LLMError("unfinished", f"{len(errors)} task(s) got no reply (first: {errors[0]}); re-run to resume")
    return session.usage()


def run(settings: SampleSettings, paths: Any) -> dict[str, Any]:
    """The ``benchmark generate`` step: one greedy sample per task, written in evalplus's samples format
    (``solution`` for HumanEval+/MBPP+, ``completion`` for MultiPL-E and DS-1000) to ``paths.samples``
    (``paths``: ``suite``, ``samples``, ``state_dir``, ``data``). Samples are kept as they come
    (``STATE/samples.jsonl``, :class:`aiev.runtime.Resume`): a re-run after a crash asks only for the rest."""
    from aiev.scoring import scorers

    suite, state = paths.suite, Path(paths.state_dir)
    limit = settings.benchmark["limit"]
    tasks = scorers.tasks({"benchmark": settings.benchmark}, suite, getattr(paths, "data", None), limit)
    shaping = {"suite": suite, **settings.model.identity(), "mode": settings.mode}
    resume = Resume(state, "samples", shaping, CODE_ROOTS, key="task_id")
    store = resume.open()
    try:
        usage = asyncio.run(_generate(tasks, suite, settings, state, store))
    finally:
        store.close()
    rows = [store.done[t["task_id"]] for t in tasks]
    write_jsonl(paths.samples, rows)
    field = "solution" if scorers.family(suite) == "evalplus" else "completion"
    client = settings.model.client
    out = {"suite": suite, "role": settings.model.role, "n": len(rows), "samples": str(paths.samples),
           "limit": limit, "empty": sum(1 for r in rows if not r[field].strip()), "model": client.model,
           "identity": client.identity, "mode": settings.mode, "usage": usage,
           "stale_store": resume.stale}  # fmt: skip
    log.info("%s: %d samples from %s (%d empty)", suite, len(rows), client.model, out["empty"])
    return out
