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
asks nothing twice; per-task results are kept in ``STATE/results.jsonl`` as they finish, owned by one fingerprint
of the model, its prompting and sampling, the sandbox and this code (:class:`aiev.runtime.Resume`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev import interpreter
from aiev.codeblocks import CodeProblem, blocks_of_kind, extract_program
from aiev.interpreter import install_prefix, passing_installs, run_install
from aiev.io import ProgressStore, SkipLog, read_jsonl, write_jsonl
from aiev.llm.client import LLMError
from aiev.runtime import ModelSettings, Resume, Session, Tally
from aiev.sandbox import execution_settings

log = logging.getLogger("aiev.evaluate")

ROLES = ("teacher", "student")
#: The code that scores a task: these modules and every aiev module they import.
CODE_ROOTS = ("aiev.evaluate.passk", "aiev.sandbox.harness")


@dataclass(frozen=True)
class EvaluateSettings:
    """What pass@1 of one model runs with: the model asked greedily (``evaluate.max_tokens`` and
    ``evaluate.concurrency`` over the role's client settings), the sandbox section and its workers."""

    model: ModelSettings
    sandbox: dict[str, Any]
    sandbox_workers: int

    @classmethod
    def from_config(cls, cfg: dict[str, Any], role: str) -> EvaluateSettings:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        section = cfg["evaluate"]
        model = ModelSettings.from_section(cfg["llm"], role)
        model = model.greedy(concurrency=section["concurrency"],
                             max_tokens=section["max_tokens"] or model.client.max_tokens)  # fmt: skip
        return cls(model, cfg["sandbox"], section["sandbox_workers"])


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


def _model_info(model: ModelSettings) -> dict[str, Any]:
    identity = model.identity()
    return {"role": model.role, "model": model.client.model, "identity": model.client.identity, "mode": model.mode,
            "prompts_sha256": identity["prompts_sha256"], "sampling": identity["sampling"]}  # fmt: skip


def _program_runner(session: Session, prefixes: Path):
    """How a task's solution runs: the packages its passing round installed first, as generation installs them,
    then the solution and the task's tests, judged as generation judged them (its checks ran, none failed)."""

    def run_program(task: dict[str, Any], solution: str) -> dict[str, Any]:
        prefix = None
        specs = passing_installs(task)
        if specs:
            prefix = install_prefix(prefixes, task["id"])
            inst = run_install(session.sandbox, specs, prefix, session.install_limits)
            if inst["exit_code"] != 0:
                return {"exit_code": None, "timed_out": inst["timed_out"], "stderr": inst["stderr"][-2000:],
                        "reason": "install_failed"}  # fmt: skip
        program = interpreter.checked_program(solution, task["tests"])
        res = interpreter.run_checked(session.sandbox, *program, session.limits, prefix)
        out = {"exit_code": res["exit_code"], "timed_out": res["timed_out"], "stderr": res["stderr"][-2000:]}
        return out | {"verdict": res["verdict"], "checks": res["checks"]}

    return run_program


async def _score(session: Session, task: dict[str, Any], run_program: Any) -> dict[str, Any]:
    """One task: the model's reply, its solution and how that ran."""
    usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    try:
        reply = await session.agents(usage).answer(task["problem"])
    except LLMError as exc:
        if not exc.final:
            raise  # transient: the task stays unscored, a re-run asks again (from the cache if it got there)
        reply, solution, reason = "", None, f"llm_{exc.reason}"
    else:
        solution, reason = solution_of(reply)
    row: dict[str, Any] = {"id": task["id"], "reply": reply, "solution": solution, "usage": usage}
    if solution is None:
        return row | {"passed": False, "reason": reason, "execution": None}
    execution = await session.blocking(run_program, task, solution)
    passed = execution.get("verdict") == "pass"
    failed = execution.pop("reason", "timeout" if execution["timed_out"] else "failed")
    return row | {"passed": passed, "reason": None if passed else failed, "execution": execution}


async def _evaluate(
    tasks: list[dict[str, Any]], settings: EvaluateSettings, state: Path, store: ProgressStore
) -> dict[str, Any]:
    """Score the tasks ``store`` has not; the client's usage of this run."""
    todo = [t for t in tasks if t["id"] not in store.done]
    log.info("%d test tasks, %d already scored, %d to run", len(tasks), len(tasks) - len(todo), len(todo))
    prefixes = state / "prefixes"
    session = Session(settings.model, state / "llm_cache.sqlite", settings.sandbox, settings.sandbox_workers)
    try:
        async with session:
            run_program = _program_runner(session, prefixes)

            async def one(task: dict[str, Any]) -> None:
                store.add(await _score(session, task, run_program))  # fsynced: a crash loses the task in progress

            results = await asyncio.gather(*(one(t) for t in todo), return_exceptions=True)
    finally:
        shutil.rmtree(prefixes, ignore_errors=True)
    errors = [f"{t['id']}: {r}" for t, r in zip(todo, results, strict=True) if isinstance(r, BaseException)]
    if errors:
        raise LLMError(
            "unfinished",
            f"{len(errors)} test task(s) got no reply (first: {errors[0]}); scored ones are kept in {state}: re-run",
        )
    return session.usage()


def run(settings: EvaluateSettings, paths: Any) -> dict[str, Any]:
    """The ``evaluate`` step: pass@1 of the settings' model on ``paths.test``; per-task ``paths.results`` (the
    report is the summary, ``paths.summary``)."""
    start = time.monotonic()
    tasks, bad = read_tasks(paths.test)
    state = Path(paths.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"role": settings.model.role}
    if tasks:
        info = _model_info(settings.model)
        shaping = {k: v for k, v in info.items() if k != "role"} | {"sandbox": execution_settings(settings.sandbox)}
        resume = Resume(state, "results", shaping, CODE_ROOTS)
        store = resume.open()
        try:
            info["this_run"] = asyncio.run(_evaluate(tasks, settings, state, store))
        finally:
            store.close()
        info["stale_store"] = resume.stale
        rows = [store.done[t["id"]] for t in tasks]
    else:
        log.warning("%s holds no test task: pass@1 is undefined (n = 0)", paths.test)
    passed = sum(r["passed"] for r in rows)
    failed = Tally().count(r["reason"] for r in rows if not r["passed"])
    report = {
        "batch": paths.batch_index,
        "test_file": str(paths.test),
        **info,
        "n": len(rows),
        "passed": passed,
        "pass_at_1": round(passed / len(rows), 6) if rows else None,
        "failed_by_reason": failed.sorted(),
        "tokens": {
            "prompt": sum(r["usage"]["prompt_tokens"] for r in rows),
            "completion": sum(r["usage"]["completion_tokens"] for r in rows),
        },
        "bad_tasks": bad,
        "wall_seconds": round(time.monotonic() - start, 3),
    }
    write_jsonl(paths.results, rows)
    return report


__all__ = ["EvaluateSettings", "run"]
