"""Generate one shard of a batch: run a dialogue per seed, resumable after any crash.

Crash safety: each finished dialogue is appended and fsynced to ``STATE/progress.jsonl`` and every LLM reply is
stored in ``STATE/llm_cache.sqlite`` as soon as it arrives. Both live outside the rule's declared outputs
(Snakemake deletes those when a job fails), one directory per shard (never shared between nodes). A re-run
skips finished dialogues and replays the unfinished ones from the cache, so no request is paid twice.

No silent mixing: the progress store belongs to one fingerprint of everything that shapes an entry
(:func:`entry_settings`: the model, sampling, prompts, max_rounds, sandbox limits, stage, the dialogue engine's
code). A re-run with another fingerprint moves the old store aside (``STATE/stale/...``, listed in the report
with the settings that changed) and starts a fresh one; the cache, keyed by request content, still answers
every request that did not change.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import hashlib
import json
import logging
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiev import __version__
from aiev.generate.dialogue import Dialogue, DialogueSettings, make_executor, prefix_for
from aiev.io import ProgressStore, SkipLog, read_jsonl, read_records, write_json, write_jsonl
from aiev.llm.agents import load_prompts, prompts_sha256
from aiev.llm.client import (
    EndpointDown,
    EndpointUnreachable,
    LLMError,
    LLMSettings,
    client_session,
    cost_usd,
    endpoint_settings,
)
from aiev.records import record_errors
from aiev.sandbox import execution_settings

#: The generating model of each stage (paper section 3.1): the teacher, or the student as both agents.
STAGE_ROLE = {"teaching": "teacher", "self-learning": "student"}

log = logging.getLogger(__name__)


def shard_slice(n: int, shard: int, shards: int) -> range:
    """Contiguous, near-equal ranges: concatenating shards 0..S-1 gives back the batch order."""
    return range(n * shard // shards, n * (shard + 1) // shards)


#: Where the dialogue engine starts: these and every aiev module they import, directly or not, decide what a
#: dialogue does with the model's replies. The harness runs beside each program as a file: read, not imported.
ENGINE_ROOTS = ("aiev.generate.dialogue", "aiev.sandbox.harness")


def _aiev_imports(tree: ast.AST) -> set[str]:
    """The aiev modules a module's source imports (at its top or inside its functions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from aiev.sandbox import bwrap`
    return {n for n in found if n.startswith("aiev.")}


@functools.cache
def engine_modules(roots: tuple[str, ...] = ENGINE_ROOTS) -> tuple[str, ...]:
    """``roots`` and the aiev modules they import, transitively, read from their source: a module the engine
    starts to use joins its fingerprint without anyone keeping a list."""
    import importlib.util

    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, AttributeError, ValueError):  # a name imported from a module, not a module
            spec = None
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue
        seen[name] = spec.origin
        todo.extend(_aiev_imports(ast.parse(Path(spec.origin).read_bytes())))
    return tuple(sorted(seen))


def engine_sha256() -> str:
    import importlib.util

    h = hashlib.sha256()
    for name in engine_modules():
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        h.update(name.encode() + b"\0" + Path(spec.origin).read_bytes() + b"\0")
    return h.hexdigest()


def entry_settings(cfg: dict[str, Any], stage: str, settings: LLMSettings, prompts: dict[str, str]) -> dict[str, Any]:
    """Everything that shapes an entry (``prompts``: the agents' templates); its hash is the store's fingerprint."""
    role = STAGE_ROLE[stage]
    mode = cfg["llm"][role]["mode"]
    served = cfg["llm"][role].get("serve")
    # the model (and, when served from local files, their content hash), not where it is served (hosts, ports)
    endpoint: dict[str, Any] = {"model": settings.model}
    if (settings.identity or {}).get("sha256"):
        endpoint["sha256"] = settings.identity["sha256"]
    if served:
        endpoint["serve"] = {k: served.get(k) for k in ("engine", "model", "command", "args")}
    return {
        "stage": stage,
        "role": role,
        "endpoint": endpoint,
        "mode": mode,
        "sampling": settings.sampling(),
        "prompts_sha256": prompts_sha256(prompts),
        "max_rounds": cfg["generate"]["max_rounds"],
        "sandbox": execution_settings(cfg["sandbox"]),
        "engine": {"aiev_version": __version__, "code_sha256": engine_sha256()},
    }


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def open_store(state: Path, settings: dict[str, Any]) -> tuple[ProgressStore, dict[str, Any] | None]:
    """The progress store of these settings; a store of other settings is moved aside and described."""
    fp = fingerprint(settings)
    meta, progress = state / "fingerprint.json", state / "progress.jsonl"
    stale = None
    state.mkdir(parents=True, exist_ok=True)
    old = json.loads(meta.read_text(encoding="utf-8")) if meta.exists() else {}
    if progress.exists() and old.get("fingerprint") != fp:
        aside = state / "stale" / f"{time.strftime('%Y%m%dT%H%M%S')}-{(old.get('fingerprint') or 'unknown')[:12]}"
        aside.mkdir(parents=True, exist_ok=True)
        entries = sum(1 for line in progress.read_bytes().splitlines() if line.strip())
        progress.rename(aside / "progress.jsonl")
        if meta.exists():
            meta.rename(aside / "fingerprint.json")
        before, now = _flatten(old.get("settings") or {}), _flatten(settings)
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        stale = {"path": str(aside), "fingerprint": old.get("fingerprint"), "entries": entries, "changed": changed}
        log.warning(
            "settings changed since the last run (%s): its %d finished dialogue(s) were moved to %s and are not "
            "reused; unchanged requests still come from the LLM cache",
            ", ".join(changed) or "unknown: no fingerprint recorded", entries, aside,
        )  # fmt: skip
    if old.get("fingerprint") != fp or not meta.exists():
        write_json(meta, {"fingerprint": fp, "settings": settings})
    return ProgressStore(progress, key="seed_id"), stale


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


def summarize_usage(entries: list[dict[str, Any]], prices: dict[str, dict[str, float]]) -> dict[str, Any]:
    total = {
        "entries": len(entries),
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
    }
    by_model: dict[str, dict[str, int]] = {}
    for e in entries:
        m = by_model.setdefault(e["model"], {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for k in ("requests", "prompt_tokens", "completion_tokens"):
            total[k] += e["usage"][k]
            m[k] += e["usage"][k]
    for model, m in by_model.items():
        total["cost_usd"] += cost_usd(prices, model, m["prompt_tokens"], m["completion_tokens"])
    total["cost_usd"] = round(total["cost_usd"], 6)
    total["by_model"] = by_model
    return total


def merge(
    llm: dict[str, Any],
    *,
    shards: list[tuple[str, str, str]],
    dialogues: str | Path,
    rejects: str | Path,
    usage: str | Path,
    report: str | Path,
) -> dict[str, Any]:
    """The ``merge-dialogues`` step: concatenate shard outputs in shard order (= batch order) and sum their
    usage, priced by ``llm.prices``."""
    prices = llm["prices"]
    passed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    reports = []
    for d, r, rep in shards:
        passed.extend(read_records(d))
        failed.extend(read_records(r))
        reports.append(json.loads(Path(rep).read_text(encoding="utf-8")))
    write_jsonl(dialogues, passed)
    write_jsonl(rejects, failed)
    summary = summarize_usage(passed + failed, prices)
    write_json(usage, summary)
    rejected_by_reason: dict[str, int] = {}
    for e in failed:
        rejected_by_reason[e["reason"]] = rejected_by_reason.get(e["reason"], 0) + 1
    rounds: dict[str, int] = {}
    for e in passed:
        rounds[str(e["rounds"])] = rounds.get(str(e["rounds"]), 0) + 1
    info = {
        "passed": len(passed),
        "rejected": len(failed),
        "pass_rate": round(len(passed) / max(1, len(passed) + len(failed)), 4),
        "passed_by_rounds": dict(sorted(rounds.items(), key=lambda kv: int(kv[0]))),
        "rejected_by_reason": rejected_by_reason,
        "bad_seeds": [row for rep in reports for row in rep.get("bad_seeds", [])],
        "stale_stores": [rep["stale_store"] for rep in reports if rep.get("stale_store")],
        "rounds": sum(e["rounds"] for e in passed),
        "rounds_multi_round_entries": sum(e["rounds"] for e in passed if e["rounds"] > 1),
        "stage": reports[0].get("stage") if reports else None,
        "shard_runs": [rep.get("this_run", {}) for rep in reports],
        "usage": summary,
    }
    write_json(report, info)
    return info


__all__ = ["EndpointUnreachable", "merge", "run", "shard_slice"]
