"""Resuming a shard without silent mixing: the progress store belongs to one fingerprint of everything that shapes
an entry (:func:`entry_settings`: the model, sampling, prompts, max_rounds, sandbox limits, stage, the dialogue
engine's code, found from the modules it imports). A re-run with another fingerprint moves the old store aside
(``STATE/stale/...``, listed in the report with the settings that changed) and starts a fresh one; the LLM
cache, keyed by request content, still answers every request that did not change.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

from aiev import __version__
from aiev.io import ProgressStore, write_json
from aiev.llm.agents import STAGE_ROLE, prompts_sha256
from aiev.llm.client import LLMSettings
from aiev.sandbox import execution_settings

log = logging.getLogger(__name__)


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
