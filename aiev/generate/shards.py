"""Generate one shard of a batch: run a dialogue per seed, resumable after any crash.

Crash safety: each finished dialogue is appended and fsynced to ``STATE/progress.jsonl`` and every LLM reply is
stored in ``STATE/llm_cache.sqlite`` as soon as it arrives. Both live outside the rule's declared outputs
(Snakemake deletes those when a job fails), one directory per shard (never shared between nodes). A re-run
skips finished dialogues and replays the unfinished ones from the cache, so no request is paid twice.

No silent mixing: the progress store belongs to one fingerprint of everything that shapes an entry
(:mod:`aiev.generate.resume`). The shards are put together by :mod:`aiev.generate.merge`.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiev.generate.dialogue import Dialogue, DialogueSettings, make_executor, prefix_for
from aiev.generate.resume import entry_settings, fingerprint, open_store
from aiev.io import ProgressStore, SkipLog, read_jsonl, write_json, write_jsonl
from aiev.llm.agents import STAGE_ROLE, load_prompts
from aiev.llm.client import (
    EndpointDown,
    EndpointUnreachable,
    LLMError,
    client_session,
    endpoint_settings,
)
from aiev.records import record_errors

log = logging.getLogger(__name__)


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
    seeds: list[dict[str, Any]], cfg: dict[str, Any], state: Path, stage: str, batch: int | None
) -> tuple[ProgressStore, list[str], dict[str, Any], dict[str, Any]]:
    from aiev.sandbox import from_config

    gen, sb = cfg["generate"], cfg["sandbox"]
    settings = endpoint_settings(cfg["llm"], STAGE_ROLE[stage])
    prompts = load_prompts(cfg["llm"][STAGE_ROLE[stage]]["mode"])
    shaping = entry_settings(cfg, stage, settings, prompts)
    store, stale = open_store(state, shaping)
    run_info = {"fingerprint": fingerprint(shaping), "settings": shaping, "stale_store": stale}
    todo = [s for s in seeds if s["id"] not in store.done]
    run_info["dialogues_to_run"] = len(todo)
    log.info("%d seeds in shard, %d already done, %d to run", len(seeds), len(seeds) - len(todo), len(todo))
    errors: list[str] = []
    engine_before = engine_after = None
    try:
        async with client_session(settings, state / "llm_cache.sqlite") as client:
            if todo and len(client.cache) == 0:
                await client.preflight()  # fail before spending anything
            engine_before = await client.engine_counters() if todo else None
            sandbox, limits, install_limits = from_config(sb)
            prefixes = state / "prefixes"
            execute = make_executor(sandbox, limits, install_limits, prefixes, sb["install"]["enabled"])
            pool = ThreadPoolExecutor(max_workers=gen["sandbox_workers"], thread_name_prefix="sandbox")
            loop = asyncio.get_running_loop()

            def run_blocking(fn, *args):
                return loop.run_in_executor(pool, fn, *args)

            bar = _Progress(len(seeds), len(seeds) - len(todo))
            dialogue = Dialogue(
                client,
                execute,
                DialogueSettings(
                    gen["max_rounds"], stage, batch, fingerprint=run_info["fingerprint"], mode=shaping["mode"]
                ),
                prompts=prompts,  # the same templates the fingerprint hashed
                run_blocking=run_blocking,
                on_round=bar.round,
            )
            sem = asyncio.Semaphore(gen["concurrent_dialogues"])

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
                run_info["endpoint_down"] = str(exc)
            finally:
                bar.close()
                pool.shutdown(wait=True)
                shutil.rmtree(prefixes, ignore_errors=True)
            engine_after = await client.engine_counters() if engine_before is not None else None
    finally:
        store.close()
    usage = client.usage.to_dict() | {"order": client.gate.stats.to_dict()}
    if engine_before is not None and engine_after is not None:  # the engine's own figures, for this run
        usage["engine_cache"] = {k: n - engine_before.get(k, 0) for k, n in engine_after.items()}
    return store, errors, usage, run_info


def run(
    cfg: dict[str, Any],
    *,
    batch: str | Path,
    shard: int,
    shards: int,
    state_dir: str | Path,
    dialogues: str | Path,
    rejects: str | Path,
    report: str | Path,
    stage: str = "teaching",
    batch_index: int | None = None,
) -> dict[str, Any]:
    """The ``generate`` step for one shard. Reads the ``llm``, ``generate`` and ``sandbox`` sections of ``cfg``."""
    started = time.monotonic()
    seeds, bad = read_batch(batch)
    part = [seeds[i] for i in shard_slice(len(seeds), shard, shards)]
    state = Path(state_dir)
    store, errors, client_usage, run_info = asyncio.run(_run_shard(part, cfg, state, stage, batch_index))
    order = [s["id"] for s in part if s["id"] in store.done]
    entries = [store.done[i] for i in order]
    down = run_info.get("endpoint_down")
    info = {
        "batch": batch_index,
        "shard": shard,
        "shards": shards,
        "stage": stage,
        "seeds": len(part),
        "bad_seeds": bad if shard == 0 else [],  # every shard reads the batch: report its bad rows once
        "passed": sum(e["passed"] for e in entries),
        "rejected": sum(not e["passed"] for e in entries),
        "llm_errors": errors,
        "this_run": client_usage
        | {
            "dialogues": run_info.pop("dialogues_to_run"),
            "wall_seconds": round(time.monotonic() - started, 3),
            "concurrency": min(cfg["llm"]["concurrency"], cfg["generate"]["concurrent_dialogues"]),
        },
        **run_info,
    }
    if down:
        write_json(report, info)  # not a declared success: Snakemake removes it, the state stays for the re-run
        raise EndpointDown(
            f"{down}. {len(entries)} of {len(part)} dialogue(s) of this shard are finished and kept in {state}: "
            "re-run to resume once the endpoint is back"
        )
    if errors:
        write_json(report, info)  # not a declared success: Snakemake removes it, the state stays for the re-run
        raise LLMError(
            "unfinished",
            f"{len(errors)} dialogue(s) could not get an LLM reply (first: {errors[0]}); finished ones are kept "
            f"in {state}: re-run to resume",
        )
    write_jsonl(dialogues, (e for e in entries if e["passed"]))
    write_jsonl(rejects, (e for e in entries if not e["passed"]))
    write_json(report, info)
    return info


__all__ = ["EndpointUnreachable", "run", "shard_slice"]
