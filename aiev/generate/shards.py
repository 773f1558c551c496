"""Generate one shard of a batch: run a dialogue per seed, resumable after any crash.

Crash safety: each finished dialogue is appended and fsynced to ``STATE/progress.jsonl`` and every LLM reply is
stored in ``STATE/llm_cache.sqlite`` as soon as it arrives. Both live outside the rule's declared outputs
(Snakemake deletes those when a job fails), one directory per shard (never shared between nodes). A re-run
skips finished dialogues and replays the unfinished ones from the cache, so no request is paid twice.

No silent mixing: the progress store belongs to one fingerprint of everything that shapes an entry
(:func:`entry_settings`, kept by :class:`aiev.runtime.Resume`). The shards are put together by
:mod:`aiev.generate.merge`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.generate.dialogue import Dialogue, DialogueSettings, make_executor, prefix_for
from aiev.io import ProgressStore, SkipLog, read_jsonl, write_jsonl
from aiev.llm.client import EndpointDown, EndpointUnreachable, LLMError
from aiev.records import record_errors
from aiev.runtime import ModelSettings, Resume, Session, Tally
from aiev.sandbox import execution_settings
from aiev.steps import StepFailed

log = logging.getLogger(__name__)

#: Where the dialogue engine starts: these and every aiev module they import, directly or not, decide what a
#: dialogue does with the model's replies. The harness runs beside each program as a file: read, not imported.
ENGINE_ROOTS = ("aiev.generate.dialogue", "aiev.sandbox.harness")


@dataclass(frozen=True)
class GenerateSettings:
    """What one shard's generation runs with, built once from the config by the step
    (:mod:`aiev.generate.steps`)."""

    stage: str
    model: ModelSettings
    sandbox: dict[str, Any]
    max_rounds: int
    shards: int
    concurrent_dialogues: int
    sandbox_workers: int
    #: the LLM client's own concurrency (``llm.concurrency``), reported beside ``concurrent_dialogues``
    llm_concurrency: int


def entry_settings(settings: GenerateSettings) -> dict[str, Any]:
    """Everything that shapes an entry; its hash (with the engine's code) is the store's fingerprint."""
    return {"stage": settings.stage, **settings.model.identity(), "max_rounds": settings.max_rounds,
            "sandbox": execution_settings(settings.sandbox)}  # fmt: skip


def shard_slice(n: int, shard: int, shards: int) -> range:
    """Contiguous, near-equal ranges: concatenating shards 0..S-1 gives back the batch order."""
    return range(n * shard // shards, n * (shard + 1) // shards)


def read_batch(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seeds of a batch file, and a list of the bad rows (reported, not fatal)."""
    skips = SkipLog()
    seeds = []
    for line, row in read_jsonl(path, skips):
        errors = record_errors(row, "seed")
        if errors:
            skips.add("invalid-seed: " + "; ".join(errors)[:300], file=str(path), line=line, id=row.get("id"))
        else:
            seeds.append(row)
    return seeds, skips.rows


class _Progress:
    def __init__(self, total: int, initial: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, unit="dialogue", mininterval=1.0, dynamic_ncols=True)
        self.passed = self.failed = self.errors = 0
        self.rounds: dict[str, int] = {}  # dialogues in progress -> their current round

    def round(self, seed_id: str, rounds: int) -> None:
        self.rounds[seed_id] = rounds
        self._postfix()

    def _postfix(self) -> None:
        current = max(self.rounds.values(), default=0)
        self.bar.set_postfix(
            passed=self.passed, failed=self.failed, llm_errors=self.errors, max_round=current, refresh=False
        )

    def update(self, seed_id: str, entry: dict[str, Any] | None) -> None:
        self.rounds.pop(seed_id, None)
        if entry is None:
            self.errors += 1
        elif entry["passed"]:
            self.passed += 1
        else:
            self.failed += 1
        self._postfix()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


async def _run_shard(
    seeds: list[dict[str, Any]], settings: GenerateSettings, state: Path, batch: int | None
) -> tuple[ProgressStore, list[str], dict[str, Any], dict[str, Any]]:
    resume = Resume(state, "progress", entry_settings(settings), ENGINE_ROOTS, key="seed_id")
    store = resume.open()
    run_info = resume.report()
    todo = [s for s in seeds if s["id"] not in store.done]
    run_info["dialogues_to_run"] = len(todo)
    log.info("%d seeds in shard, %d already done, %d to run", len(seeds), len(seeds) - len(todo), len(todo))
    errors: list[str] = []
    engine: dict[str, Any] = {}
    session = Session(settings.model, state / "llm_cache.sqlite", settings.sandbox, settings.sandbox_workers)
    try:
        async with session:
            if todo and len(session.client.cache) == 0:
                await session.client.preflight()  # fail before spending anything
            engine["before"] = await session.client.engine_counters() if todo else None
            down = await _dialogues(session, settings, todo, len(seeds), state, batch, store, errors,
                                    resume.fingerprint)  # fmt: skip
            if down:
                run_info["endpoint_down"] = down
            engine["after"] = await session.client.engine_counters() if engine["before"] is not None else None
    finally:
        store.close()
    usage = session.usage() | {"order": session.client.gate.stats.to_dict()}
    if engine.get("before") is not None and engine.get("after") is not None:  # the engine's own figures
        usage["engine_cache"] = {k: n - engine["before"].get(k, 0) for k, n in engine["after"].items()}
    return store, errors, usage, run_info


async def _dialogues(session: Session, settings: GenerateSettings, todo: list[dict[str, Any]], total: int,
                     state: Path, batch: int | None, store: ProgressStore, errors: list[str],
                     fingerprint: str) -> str | None:  # fmt: skip
    """Run the dialogues of ``todo``, each finished one into ``store``; the reason the endpoint went down, if it
    did (every dialogue is stopped then; the finished ones are kept)."""
    prefixes = state / "prefixes"
    install = settings.sandbox["install"]["enabled"]
    execute = make_executor(session.sandbox, session.limits, session.install_limits, prefixes, install)
    bar = _Progress(total, total - len(todo))
    dialogue = Dialogue(
        session.client, execute,
        DialogueSettings(settings.max_rounds, settings.stage, batch, fingerprint=fingerprint,
                         mode=settings.model.mode),
        prompts=settings.model.prompts,  # the same templates the fingerprint hashed
        run_blocking=session.blocking, on_round=bar.round,
    )  # fmt: skip
    sem = asyncio.Semaphore(settings.concurrent_dialogues)

    async def one(seed: dict[str, Any]) -> None:
        async with sem:
            try:
                entry = await dialogue.run(seed)
            except LLMError as exc:
                errors.append(f"{seed['id']}: {exc}")
                bar.update(seed["id"], None)
                return
            finally:
                shutil.rmtree(prefix_for(prefixes, seed["id"]), ignore_errors=True)
        store.add(entry)
        bar.update(seed["id"], entry)

    tasks = [asyncio.ensure_future(one(s)) for s in todo]
    try:
        await asyncio.gather(*tasks)
    except EndpointDown as exc:  # stop every dialogue now; the finished ones are in the store
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return str(exc)
    finally:
        bar.close()
        shutil.rmtree(prefixes, ignore_errors=True)
    return None


def run(settings: GenerateSettings, paths: Any) -> dict[str, Any]:
    """The ``generate`` step for one shard (``paths``: ``batch``, ``batch_index``, ``shard``, ``state_dir``,
    ``dialogues``, ``rejects``)."""
    started = time.monotonic()
    seeds, bad = read_batch(paths.batch)
    part = [seeds[i] for i in shard_slice(len(seeds), paths.shard, settings.shards)]
    state = Path(paths.state_dir)
    store, errors, client_usage, run_info = asyncio.run(_run_shard(part, settings, state, paths.batch_index))
    entries = [store.done[s["id"]] for s in part if s["id"] in store.done]
    outcome = Tally().count("passed" if e["passed"] else "rejected" for e in entries)
    down = run_info.get("endpoint_down")
    info = {
        "batch": paths.batch_index,
        "shard": paths.shard,
        "shards": settings.shards,
        "stage": settings.stage,
        "seeds": len(part),
        "bad_seeds": bad if paths.shard == 0 else [],  # every shard reads the batch: report its bad rows once
        **outcome.of(("passed", "rejected")),
        "llm_errors": errors,
        "this_run": client_usage
        | {
            "dialogues": run_info.pop("dialogues_to_run"),
            "wall_seconds": round(time.monotonic() - started, 3),
            "concurrency": min(settings.llm_concurrency, settings.concurrent_dialogues),
        },
        **run_info,
    }
    if down:  # the report is written, but not as a declared success: Snakemake removes it, the state stays
        raise StepFailed(info, EndpointDown(
            f"{down}. {len(entries)} of {len(part)} dialogue(s) of this shard are finished and kept in {state}: "
            "re-run to resume once the endpoint is back"
        ))  # fmt: skip
    if errors:
        raise StepFailed(info, LLMError(
            "unfinished",
            f"{len(errors)} dialogue(s) could not get an LLM reply (first: {errors[0]}); finished ones are kept "
            f"in {state}: re-run to resume",
        ))  # fmt: skip
    write_jsonl(paths.dialogues, (e for e in entries if e["passed"]))
    write_jsonl(paths.rejects, (e for e in entries if not e["passed"]))
    return info


__all__ = ["EndpointUnreachable", "GenerateSettings", "run", "shard_slice"]
