"""pass@1 of one model on a batch's test split (paper section 3.1: "the student and teacher are scored on the
test part").

Each test entry (a passing dialogue with runnable tests, aiev.curate.split) becomes one task: the entry's
``problem`` is given to the model as the programmer's first turn, prompted the way that role is prompted in
generation (``llm.ROLE.mode``: the chat roles, or the base-model template), with greedy decoding. The code-
interpreter loop is off, as the paper scores: one reply, no feedback. The model's solution is taken from its reply
by the shared code rules (:func:`aiev.codeblocks.extract_program`; a reply whose one block holds no tests is all
solution), and the program that runs in the sandbox is that solution followed by the entry's own ``tests``. A task
passes when the program exits 0 within the sandbox limits. Packages the entry's dialogue installed (its passing
round's ``pip install``) are installed first, the same for every model, so both are scored on the same ground.

Replies go through the one LLM client, so they are cached (``STATE/llm_cache.sqlite``) and a re-run after a crash
asks nothing twice; per-task results are kept in ``STATE/results.jsonl`` as they finish.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from aiev import interpreter
from aiev.codeblocks import CodeProblem, blocks_of_kind, extract_program
from aiev.interpreter import install_prefix, passing_installs, run_install
from aiev.io import ProgressStore, SkipLog, read_jsonl, write_json, write_jsonl
from aiev.llm.agents import agents_for, load_prompts, prompts_sha256
from aiev.llm.client import LLMClient, LLMError, client_session, endpoint_settings

log = logging.getLogger("aiev.evaluate")

ROLES = ("teacher", "student")


def solution_of(reply: str) -> tuple[str | None, str | None]:
    """The model's solution under the code rules, or (None, reason) when the reply holds no Python code."""
    program = extract_program(reply)
    if isinstance(program, CodeProblem):
        if program.reason == "no_code":
            return None, "no_code"
        return "\n\n".join(f.code for f in blocks_of_kind(reply, "python")), None  # one block, no tests: all solution
    return program.solution, None


def read_tasks(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    skips = SkipLog()
    tasks = []
    for line, row in read_jsonl(path, skips):
        missing = [k for k in ("id", "problem", "tests") if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            skips.add(f"bad-task: no {', '.join(missing)}", file=str(path), line=line, id=row.get("id"))
            continue
        tasks.append(row)
    return tasks, skips.rows


async def _evaluate(
    tasks: list[dict[str, Any]], cfg: dict[str, Any], role: str, state: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from aiev.sandbox import from_config

    section, llm = cfg["evaluate"], cfg["llm"]
    settings = endpoint_settings(llm, role)
    settings = replace(
        settings,
        temperature=0.0,
        top_p=1.0,
        concurrency=section["concurrency"],
        max_tokens=section["max_tokens"] or settings.max_tokens,
    )  # fmt: skip  greedy: pass@1 as the paper reports it
    mode = llm[role]["mode"]
    prompts = load_prompts(mode)
    info = {
        "role": role, "model": settings.model, "identity": settings.identity, "mode": mode,
        "prompts_sha256": prompts_sha256(prompts), "sampling": settings.sampling(),
    }  # fmt: skip
    fp = json.dumps({k: info[k] for k in ("model", "identity", "mode", "prompts_sha256", "sampling")}, sort_keys=True)
    # finished tasks of an earlier run with the same settings (fsynced: a crash loses at most the task in progress)
    store = ProgressStore(state / "results.jsonl", key="id", keep=lambda row: row.get("fingerprint") == fp)
    done = store.done
    todo = [t for t in tasks if t["id"] not in done]
    log.info("%d test tasks, %d already scored, %d to run", len(tasks), len(tasks) - len(todo), len(todo))
    sandbox, limits, install_limits = from_config(cfg["sandbox"])
    pool = ThreadPoolExecutor(max_workers=section["sandbox_workers"], thread_name_prefix="sandbox")
    loop = asyncio.get_running_loop()
    prefixes = state / "prefixes"

    def run_program(task: dict[str, Any], solution: str) -> dict[str, Any]:
        prefix = None
        specs = passing_installs(task)
        if specs:  # the packages its passing round installed, as generation installs them
            prefix = install_prefix(prefixes, task["id"])
            inst = run_install(sandbox, specs, prefix, install_limits)
            if inst["exit_code"] != 0:
                return {"exit_code": None, "timed_out": inst["timed_out"], "stderr": inst["stderr"][-2000:],
                        "reason": "install_failed"}  # fmt: skip
        # the task's tests judged as generation judged them: passing means its checks ran and none failed
        res = interpreter.run_checked(sandbox, *interpreter.checked_program(solution, task["tests"]), limits, prefix)
        out = {"exit_code": res["exit_code"], "timed_out": res["timed_out"], "stderr": res["stderr"][-2000:]}
        return out | {"verdict": res["verdict"], "checks": res["checks"]}

    async def one(client: LLMClient, task: dict[str, Any]) -> None:
        usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        agents = agents_for(mode, prompts, client, usage)
        try:
            reply = await agents.answer(task["problem"])
        except LLMError as exc:
            if not exc.final:
                raise  # transient: the task stays unscored, a re-run asks again (from the cache if it got there)
            reply, reason = "", f"llm_{exc.reason}"
            solution = None
        else:
            solution, reason = solution_of(reply)
        row: dict[str, Any] = {"id": task["id"], "reply": reply, "solution": solution, "usage": usage}
        if solution is None:
            row.update(passed=False, reason=reason, execution=None)
        else:
            execution = await loop.run_in_executor(pool, run_program, task, solution)
            passed = execution.get("verdict") == "pass"
            failed = execution.pop("reason", "timeout" if execution["timed_out"] else "failed")
            row.update(passed=passed, reason=None if passed else failed, execution=execution)
        row["fingerprint"] = fp
        store.add(row)

    try:
        async with client_session(settings, state / "llm_cache.sqlite") as client:
            results = await asyncio.gather(*(one(client, t) for t in todo), return_exceptions=True)
    finally:
        store.close()
        pool.shutdown(wait=True)
        shutil.rmtree(prefixes, ignore_errors=True)
    errors = [f"{t['id']}: {r}" for t, r in zip(todo, results, strict=True) if isinstance(r, BaseException)]
    if errors:
        raise LLMError(
            "unfinished",
            f"{len(errors)} test task(s) got no reply (first: {errors[0]}); scored ones are kept in {state}: re-run",
        )
    info["this_run"] = client.usage.to_dict()
    return [done[t["id"]] for t in tasks], info


def run(
    cfg: dict[str, Any],
    *,
    role: str,
    test: str | Path,
    results: str | Path,
    summary: str | Path,
    state_dir: str | Path,
    batch: int | None = None,
) -> dict[str, Any]:
    """The ``evaluate`` step: pass@1 of ``role`` on ``test``; per-task ``results`` and the ``summary`` JSON."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    start = time.monotonic()
    tasks, bad = read_tasks(test)
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"role": role}
    if tasks:
        rows, info = asyncio.run(_evaluate(tasks, cfg, role, state))
    else:
        log.warning("%s holds no test task: pass@1 is undefined (n = 0)", test)
    passed = sum(r["passed"] for r in rows)
    by_reason: dict[str, int] = {}
    for r in rows:
        if not r["passed"]:
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
    report = {
        "batch": batch,
        "test_file": str(test),
        **info,
        "n": len(rows),
        "passed": passed,
        "pass_at_1": round(passed / len(rows), 6) if rows else None,
        "failed_by_reason": dict(sorted(by_reason.items())),
        "tokens": {
            "prompt": sum(r["usage"]["prompt_tokens"] for r in rows),
            "completion": sum(r["usage"]["completion_tokens"] for r in rows),
        },
        "bad_tasks": bad,
        "wall_seconds": round(time.monotonic() - start, 3),
    }
    write_jsonl(results, ({k: v for k, v in r.items() if k != "fingerprint"} for r in rows))
    write_json(summary, report)
    return report
