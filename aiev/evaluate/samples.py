"""Benchmark samples from a model: ``aiev benchmark generate`` (HumanEval+, MBPP+), greedy, code interpreter off.

Prompts (AutoCoder's evaluation scripts), by how the model is prompted (``llm.ROLE.mode``):

* chat: HumanEval: "Write a solution to the following problem:" and the task's prompt in a python fence; MBPP: the
  task's description, "Your code should satisfy the following assertion:" and all of its test asserts in a python
  fence. The reply's code is the sample.
* completion (base models): the task's prompt (HumanEval) or the description and asserts as a comment block
  followed by an opened fence (MBPP); the model's continuation is the code.

Every sample is sanitised by evalplus's own ``sanitize`` (the target function and what it needs) before scoring;
the raw reply is kept beside it. Replies go through the one LLM client: cached in the state directory, so a re-run
asks nothing twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiev.codeblocks import blocks_of_kind
from aiev.io import write_json, write_jsonl
from aiev.llm.client import LLMClient, LLMError, ResponseCache, endpoint_settings

log = logging.getLogger("aiev.benchmark")

STOP = ["\n```", "\nif __name__", "\n# Test", "\nassert "]


def mbpp_text(task: dict[str, Any]) -> tuple[str, str]:
    """(description, all test asserts) of an MBPP+ task."""
    body = task["prompt"].strip().strip('"').strip()
    description = "\n".join(ln for ln in body.splitlines() if not ln.strip().startswith("assert "))
    asserts = task.get("assertion") or "\n".join(ln for ln in body.splitlines() if ln.strip().startswith("assert "))
    return description.strip(), asserts.strip()


def chat_prompt(suite: str, task: dict[str, Any]) -> str:
    if suite == "humaneval":
        return f"Write a solution to the following problem:\n```python\n{task['prompt'].rstrip()}\n```"
    description, asserts = mbpp_text(task)
    return f"{description}\nYour code should satisfy the following assertion:\n```python\n{asserts}\n```"


def completion_prompt(suite: str, task: dict[str, Any]) -> str:
    if suite == "humaneval":
        return task["prompt"]
    description, asserts = mbpp_text(task)
    comment = "\n".join(f"# {ln}" for ln in f"{description}\n{asserts}".splitlines())
    return f"{comment}\n```python\n"


def code_of(suite: str, task: dict[str, Any], reply: str, mode: str) -> str:
    """The program a reply stands for, before sanitising."""
    if mode == "completion":
        return (task["prompt"] if suite == "humaneval" else "") + reply
    blocks = [f.code for f in blocks_of_kind(reply, "python")]
    return "\n\n".join(blocks) if blocks else reply


def sanitize(code: str, entry_point: str) -> str:
    from evalplus.sanitize import sanitize as evalplus_sanitize

    return evalplus_sanitize(code, entry_point)


async def _generate(tasks, suite, cfg, role, state) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    llm = cfg["llm"]
    settings = endpoint_settings(llm, role)
    settings = replace(settings, temperature=0.0, top_p=1.0, concurrency=cfg["evaluate"]["concurrency"])
    mode = llm[role]["mode"]
    cache = ResponseCache(Path(state) / "llm_cache.sqlite")
    client = LLMClient(settings, cache)
    errors: list[str] = []

    async def one(task: dict[str, Any]) -> dict[str, Any]:
        try:
            if mode == "completion":
                reply = (await client.complete(completion_prompt(suite, task), STOP)).text
            else:
                reply = (await client.chat([{"role": "user", "content": chat_prompt(suite, task)}])).text
        except LLMError as exc:
            if not exc.final:
                errors.append(f"{task['task_id']}: {exc}")
            reply = ""
        solution = sanitize(code_of(suite, task, reply, mode), task["entry_point"]) if reply else ""
        return {"task_id": task["task_id"], "solution": solution, "raw": reply}

    try:
        rows = await asyncio.gather(*(one(t) for t in tasks))
    finally:
        await client.close()
        cache.close()
    if errors:
        raise LLMError("unfinished", f"{len(errors)} task(s) got no reply (first: {errors[0]}); re-run to resume")
    info = {"model": settings.model, "identity": settings.identity, "mode": mode, "usage": client.usage.to_dict()}
    return list(rows), info


def generate(
    cfg: dict[str, Any],
    *,
    suite: str,
    role: str,
    samples: str | Path,
    state_dir: str | Path,
    report: str | Path | None = None,
    limit: int | None = None,
    data: str | None = None,
) -> dict[str, Any]:
    """The ``benchmark generate`` step: one greedy sample per task, written in evalplus's samples format."""
    from aiev.evaluate.plus import SUITES, data_file
    from aiev.evaluate.samplefile import BenchmarkError, read_tasks

    if suite not in SUITES:
        raise BenchmarkError(f"benchmark generate covers {', '.join(SUITES)}; samples for {suite} are not built yet")

    tasks = read_tasks(data_file(suite, data or cfg["benchmark"]["data"][suite]))
    limit = limit if limit is not None else cfg["benchmark"]["limit"]
    tasks = tasks[:limit] if limit is not None else tasks
    rows, info = asyncio.run(_generate(tasks, suite, cfg, role, state_dir))
    write_jsonl(samples, rows)
    out = {"suite": suite, "role": role, "n": len(rows), "samples": str(samples), "limit": limit,
           "empty": sum(1 for r in rows if not r["solution"].strip()), **info}  # fmt: skip
    if report is not None:
        write_json(report, out)
    log.info("%s: %d samples from %s (%d empty)", suite, len(rows), info["model"], out["empty"])
    return out
