"""The step runtime: the machinery every step that resumes or talks to a model shares, written once.

- :class:`Resume`: a step's progress store, owned by one fingerprint of the settings that shape its rows and of
  the code that makes them (the aiev modules reached from the step's roots, found from their imports, never a
  hand-kept list). A store of another fingerprint is set aside (``STATE/stale/TIME-FP/``) and reported with the
  settings that changed; nothing is dropped silently and nothing of an old run is mixed into a new one.
- :class:`ModelSettings`: the typed settings of the model that plays one role (its client settings, how it is
  prompted, the prompt templates), built once per step from the ``llm`` section; the agents and the client take
  them, not the config.
- :class:`Session`: the LLM client with its response cache, the sandbox with its limits and the pool of workers
  that run programs, opened once and closed once whatever happens.
- :class:`Tally`: the counters a step increments; its report is built from them.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import hashlib
import importlib.util
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiev import __version__
from aiev.io import ProgressStore, write_json

log = logging.getLogger("aiev.runtime")


# ------------------------------------------------------------------------------------------------ code fingerprint


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


def _origin(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, AttributeError, ValueError):  # a name imported from a module, not a module
        return None
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        return None
    return spec.origin


@functools.cache
def code_modules(roots: tuple[str, ...]) -> tuple[str, ...]:
    """``roots`` and the aiev modules they import, transitively, read from their source: a module a step starts
    to use joins its fingerprint without anyone keeping a list."""
    seen: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        origin = _origin(name)
        if origin is None:
            continue
        seen[name] = origin
        todo.extend(_aiev_imports(ast.parse(Path(origin).read_bytes())))
    return tuple(sorted(seen))


def code_sha256(roots: tuple[str, ...]) -> str:
    """The hash of the source of :func:`code_modules` of ``roots``."""
    h = hashlib.sha256()
    for name in code_modules(roots):
        origin = _origin(name)
        assert origin is not None
        h.update(name.encode() + b"\0" + Path(origin).read_bytes() + b"\0")
    return h.hexdigest()


def fingerprint(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


# ------------------------------------------------------------------------------------------------ resume


class Resume:
    """A step's progress store under ``state``, owned by one fingerprint.

    ``settings``: what shapes a stored row (the code of ``code`` and aiev's version join it); ``name``: the store's
    file stem (``NAME.jsonl``, its fingerprint in ``NAME.fingerprint.json``); ``key``: the row field that names a
    finished piece of work. :meth:`open` returns the store; a store of another fingerprint is moved to
    ``state/stale/TIME-FP/`` first and described in :attr:`stale`."""

    def __init__(self, state: str | Path, name: str, settings: dict[str, Any], code: tuple[str, ...],
                 key: str = "id") -> None:  # fmt: skip
        self.state = Path(state)
        self.name = name
        self.key = key
        self.settings = {**settings, "code": {"aiev_version": __version__, "sha256": code_sha256(code)}}
        self.fingerprint = fingerprint(self.settings)
        self.stale: dict[str, Any] | None = None
        self.progress = self.state / f"{name}.jsonl"
        self.meta = self.state / f"{name}.fingerprint.json"

    def open(self) -> ProgressStore:
        self.state.mkdir(parents=True, exist_ok=True)
        old = json.loads(self.meta.read_text(encoding="utf-8")) if self.meta.exists() else {}
        if self.progress.exists() and old.get("fingerprint") != self.fingerprint:
            self.stale = self._set_aside(old)
        if old.get("fingerprint") != self.fingerprint or not self.meta.exists():
            write_json(self.meta, {"fingerprint": self.fingerprint, "settings": self.settings})
        return ProgressStore(self.progress, key=self.key)

    def _set_aside(self, old: dict[str, Any]) -> dict[str, Any]:
        aside = self.state / "stale" / f"{time.strftime('%Y%m%dT%H%M%S')}-{(old.get('fingerprint') or 'unknown')[:12]}"
        aside.mkdir(parents=True, exist_ok=True)
        rows = sum(1 for line in self.progress.read_bytes().splitlines() if line.strip())
        self.progress.rename(aside / self.progress.name)
        if self.meta.exists():
            self.meta.rename(aside / self.meta.name)
        before, now = _flatten(old.get("settings") or {}), _flatten(self.settings)
        changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        log.warning(
            "%s: settings changed since the last run (%s): its %d finished row(s) were moved to %s and are not "
            "reused", self.name, ", ".join(changed) or "unknown: no fingerprint recorded", rows, aside,
        )  # fmt: skip
        return {"path": str(aside), "fingerprint": old.get("fingerprint"), "entries": rows, "changed": changed}

    def report(self) -> dict[str, Any]:
        """The fingerprint, the settings it hashes and the store set aside (None when none was)."""
        return {"fingerprint": self.fingerprint, "settings": self.settings, "stale_store": self.stale}


# ------------------------------------------------------------------------------------------------ model settings


@dataclass(frozen=True)
class ModelSettings:
    """The model that plays ``role``: its client settings, its prompting ``mode`` and the prompt templates."""

    role: str
    mode: str
    client: Any  # aiev.llm.client.LLMSettings
    prompts: dict[str, str]
    #: how the model is served inside the job (``llm.ROLE.serve``), or None
    serve: dict[str, Any] | None = None

    @classmethod
    def from_section(cls, llm: dict[str, Any], role: str) -> ModelSettings:
        from aiev.llm.agents import load_prompts
        from aiev.llm.client import endpoint_settings

        mode = llm[role]["mode"]
        return cls(role, mode, endpoint_settings(llm, role), load_prompts(mode), llm[role].get("serve"))

    def greedy(self, **client: Any) -> ModelSettings:
        """The same model asked greedily (pass@1, benchmark samples), with other client settings ``client``."""
        return replace(self, client=replace(self.client, temperature=0.0, top_p=1.0, **client))

    def with_client(self, **client: Any) -> ModelSettings:
        return replace(self, client=replace(self.client, **client))

    def identity(self) -> dict[str, Any]:
        """What the model is, for a fingerprint: its name, its files' hash where served from local files, how it
        is served and prompted and sampled; never where it is served (hosts, ports)."""
        from aiev.llm.agents import prompts_sha256

        endpoint: dict[str, Any] = {"model": self.client.model}
        if (self.client.identity or {}).get("sha256"):
            endpoint["sha256"] = self.client.identity["sha256"]
        if self.serve:
            endpoint["serve"] = {k: self.serve.get(k) for k in ("engine", "model", "command", "args")}
        return {"role": self.role, "endpoint": endpoint, "mode": self.mode, "sampling": self.client.sampling(),
                "prompts_sha256": prompts_sha256(self.prompts)}  # fmt: skip

    def agents(self, client: Any, usage: dict[str, int]) -> Any:
        from aiev.llm.agents import agents_for

        return agents_for(self.mode, self.prompts, client, usage)


# ------------------------------------------------------------------------------------------------ session


class Session:
    """The LLM client (``model``; its response cache at ``cache``, None for none), the sandbox of the ``sandbox``
    section (None: no sandbox) and ``workers`` threads that run programs, for one ``async with``.

    Inside it: :attr:`client`, :attr:`sandbox`, :attr:`limits`, :attr:`install_limits`, and :meth:`blocking` to
    run a blocking call (a program in the sandbox) on the pool without holding up the event loop. ``opener``
    makes the sandbox from its section (default :func:`aiev.sandbox.from_config`)."""

    def __init__(self, model: ModelSettings | None, cache: str | Path | None = None,
                 sandbox: dict[str, Any] | None = None, workers: int = 1,
                 opener: Callable[[dict[str, Any]], tuple[Any, Any, Any]] | None = None) -> None:  # fmt: skip
        self.model = model
        self.opener = opener
        self.cache = cache
        self.section = sandbox
        self.workers = workers
        self.client: Any = None
        self.sandbox: Any = None
        self.limits: Any = None
        self.install_limits: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._client_cm: Any = None

    async def __aenter__(self) -> Session:
        if self.section is not None:
            from aiev.sandbox import from_config

            self.sandbox, self.limits, self.install_limits = (self.opener or from_config)(self.section)
            self._pool = ThreadPoolExecutor(max_workers=max(1, self.workers), thread_name_prefix="sandbox")
        if self.model is not None:
            from aiev.llm.client import client_session

            self._client_cm = client_session(self.model.client, self.cache)
            try:
                self.client = await self._client_cm.__aenter__()
            except BaseException:
                self._close_pool()
                raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self._client_cm is not None:
                await self._client_cm.__aexit__(*exc)
        finally:
            self._close_pool()

    def _close_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def blocking(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        assert self._pool is not None, "a Session without a sandbox section has no workers"
        return asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def agents(self, usage: dict[str, int]) -> Any:
        """The agents of this session's model, asking through its client; ``usage`` counts their requests."""
        assert self.model is not None
        return self.model.agents(self.client, usage)

    def usage(self) -> dict[str, Any]:
        return self.client.usage.to_dict() if self.client is not None else {}


# ------------------------------------------------------------------------------------------------ counters


class Tally(Counter):
    """The counters a step increments as it works (``tally["kept"] += 1``, :meth:`count`); :meth:`of` reads a
    fixed list of them, zeros included, so a report names every reason whether it occurred or not."""

    def count(self, items: Iterable[Any]) -> Tally:
        for item in items:
            self[item] += 1
        return self

    def of(self, keys: Iterable[str]) -> dict[str, int]:
        return {k: self.get(k, 0) for k in keys}

    def sorted(self) -> dict[str, int]:
        return dict(sorted(self.items()))
