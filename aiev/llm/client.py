"""One async client for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, transformers serve).

- bounded concurrency, the waiting requests sent in the order an engine's prompt cache serves best
  (:mod:`aiev.llm.gate`: the one sharing the longest beginning with the last prompt first);
- its own retry loop: exponential backoff with full jitter on 429, 5xx,
  timeouts, connection errors and malformed or empty replies; ``Retry-After`` is honoured;
- identical requests in flight at once are sent once and share the reply;
- a persistent response cache (SQLite in WAL mode; one file per shard, never shared between nodes) keyed by
  model + messages + sampling parameters, written as soon as a reply arrives: a re-run never pays twice;
- token usage per request, summed, with the cost from configurable per-model prices.

The API key is read from the environment variable named in the config and never logged or written anywhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiev.llm.gate import PrefixGate

log = logging.getLogger(__name__)

Message = dict[str, str]


class LLMError(RuntimeError):
    """A request that failed for good (retries spent, or an error that retrying cannot fix)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason

    @property
    def final(self) -> bool:
        """The request or the model itself failed, not the transport: retrying the same request cannot help (a
        dialogue is rejected with reason ``llm_<reason>``, a scored task fails), where a transient failure leaves
        the work unfinished for a re-run."""
        return self.reason in FINAL_LLM_REASONS


#: LLM failures that come from the request or the model's own answer (see :attr:`LLMError.final`).
FINAL_LLM_REASONS = frozenset({"empty_reply", "http_400", "http_413", "http_422"})


class EndpointUnreachable(RuntimeError):
    """The endpoint cannot be used at all: raised before anything is spent."""


class EndpointDown(EndpointUnreachable):
    """The endpoint stopped taking connections while the job ran (``llm.down_after`` refusals in a row, across
    every request of the client): retrying for minutes cannot help, so the job stops at once, keeping what it
    finished."""


@dataclass
class Usage:
    requests: int = 0
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    retries: int = 0
    #: prompt tokens the engine served from its prefix cache, where it says so (OpenAI, vLLM:
    #: ``usage.prompt_tokens_details.cached_tokens``); llama-cpp-python's server does not
    cached_prompt_tokens: int = 0

    def add(self, other: Usage) -> None:
        for k in self.__dataclass_fields__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["cost_usd"] = round(d["cost_usd"], 6)
        return d


@dataclass(frozen=True)
class Reply:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False
    cached_prompt_tokens: int = 0


def cost_usd(prices: dict[str, dict[str, float]], model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for the tokens, from per-million-token prices (llm.prices); 0 for a model without a price."""
    price = prices.get(model) or {}
    per_mtok = prompt_tokens * price.get("prompt_per_mtok", 0.0) + completion_tokens * price.get(
        "completion_per_mtok", 0.0
    )
    return per_mtok / 1e6


@dataclass(frozen=True)
class LLMSettings:
    base_url: str
    model: str
    api_key_env: str | None = None
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 1024
    seed: int | None = None
    concurrency: int = 16
    #: which waiting request goes next: ``prefix`` (the longest beginning shared with the last one) or ``fifo``
    order: str = "prefix"
    timeout_s: float = 120.0
    max_retries: int = 6
    backoff_s: float = 1.0
    backoff_max_s: float = 60.0
    #: Connections refused or reset in a row, over all requests, after which the endpoint counts as down.
    down_after: int = 8
    prices: dict[str, dict[str, float]] = field(default_factory=dict)
    #: What the model is, beyond its name: set by ``aiev serve`` for a local model (its file name and content hash).
    identity: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, llm: dict[str, Any], endpoint: dict[str, Any]) -> LLMSettings:
        s = llm["sampling"]
        return cls(
            base_url=endpoint["base_url"],
            model=endpoint["model"],
            api_key_env=endpoint.get("api_key_env"),
            temperature=s["temperature"],
            top_p=s["top_p"],
            max_tokens=s["max_tokens"],
            seed=s.get("seed"),
            concurrency=llm["concurrency"],
            order=llm.get("order", "prefix"),
            timeout_s=llm["timeout_s"],
            max_retries=llm["max_retries"],
            backoff_s=llm["backoff_s"],
            backoff_max_s=llm["backoff_max_s"],
            down_after=llm["down_after"],
            prices=llm.get("prices") or {},
            identity=endpoint.get("identity"),
        )

    @property
    def cache_model(self) -> str:
        """The model as the response cache keys it: with the content hash of a served checkpoint, so a retrained
        student under the same path never gets the replies of the one before."""
        sha = (self.identity or {}).get("sha256")
        return f"{self.model}@sha256:{sha}" if sha else self.model

    def sampling(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        if self.seed is not None:
            out["seed"] = self.seed
        return out

    def api_key(self) -> str:
        if not self.api_key_env:
            return "not-needed"  # local servers (vLLM, llama.cpp) accept any key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise EndpointUnreachable(
                f"the environment variable {self.api_key_env} (llm api_key_env) is not set: export your API key "
                "in it, or set api_key_env: null for a local server that needs none"
            )
        return key

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return cost_usd(self.prices, self.model, prompt_tokens, completion_tokens)


#: Set by ``aiev serve --role ROLE -- COMMAND`` for COMMAND: the endpoint of the model it serves for ROLE.
SERVED_ROLE_ENV = "AIEV_SERVED_ROLE"
SERVED_URL_ENV = "AIEV_LLM_BASE_URL"
SERVED_MODEL_ENV = "AIEV_LLM_MODEL"
SERVED_IDENTITY_ENV = "AIEV_LLM_MODEL_IDENTITY"  # JSON: the served model's name, file name and content hash


def endpoint_settings(llm: dict[str, Any], role: str) -> LLMSettings:
    """The settings of the endpoint that plays ``role`` (``teacher`` or ``student``): the one place that decides.

    With ``llm.ROLE.serve`` set, the model is served inside the job by ``aiev serve --role ROLE``, whose
    endpoint is taken from the environment it sets; without it, ``llm.ROLE.base_url`` and ``model`` are used as
    they are. Any mismatch between the two is an error, never a silent rewrite of the config."""
    endpoint = llm[role]
    served_role = os.environ.get(SERVED_ROLE_ENV)
    if endpoint.get("serve"):
        if served_role != role or not os.environ.get(SERVED_URL_ENV):
            raise EndpointUnreachable(
                f"llm.{role}.serve is set, so this step must run under `aiev serve --role {role} --config ... -- "
                f"COMMAND` (the workflow's rules do that); or set llm.{role}.serve: null and llm.{role}.base_url"
            )
        endpoint = {
            **endpoint,
            "base_url": os.environ[SERVED_URL_ENV],
            "model": os.environ.get(SERVED_MODEL_ENV, endpoint["model"]),
            "api_key_env": None,
            "identity": json.loads(os.environ[SERVED_IDENTITY_ENV]) if os.environ.get(SERVED_IDENTITY_ENV) else None,
        }
    elif served_role == role:
        raise EndpointUnreachable(
            f"started under `aiev serve --role {role}`, but llm.{role}.serve is null: the served model would be "
            f"ignored. Set llm.{role}.serve in the config, or run the step without aiev serve"
        )
    return LLMSettings.from_config(llm, endpoint)


class ResponseCache:
    """SQLite response cache; WAL mode with a busy timeout makes concurrent writers on one node safe.

    Keep one file per shard: SQLite locking is not reliable on NFS or Lustre, so files are never shared
    between nodes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # Parsed replies, as caches written before the raw table existed hold them: still read, no longer written.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, "
            "prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL)"
        )
        # The HTTP body of each reply, stored the moment it arrives, before it is parsed or used.
        self._db.execute("CREATE TABLE IF NOT EXISTS raw (key TEXT PRIMARY KEY, body BLOB NOT NULL)")

    @staticmethod
    def key(model: str, messages: list[Message] | dict[str, Any], sampling: dict[str, Any]) -> str:
        """Chat requests: ``messages`` is the message list; completions: ``{"prompt": ..., "stop": [...]}``."""
        blob = json.dumps({"model": model, "messages": messages, "sampling": sampling}, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> Reply | None:
        with self._lock:
            raw = self._db.execute("SELECT body FROM raw WHERE key = ?", (key,)).fetchone()
            row = None if raw else self._db.execute(
                "SELECT text, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()  # fmt: skip
        if raw is not None:
            reply = parse_reply(raw[0])
            if isinstance(reply, Reply):
                return Reply(reply.text, reply.prompt_tokens, reply.completion_tokens, cached=True)
            self.drop(key)  # a body that was no usable reply: ask again
            return None
        return Reply(row[0], row[1], row[2], cached=True) if row else None

    def put_raw(self, key: str, body: bytes) -> None:
        """Store a reply's HTTP body as it arrived (committed before this returns)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO raw VALUES (?, ?)", (key, body))

    def drop(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM raw WHERE key = ?", (key,))

    def __len__(self) -> int:
        with self._lock:
            raw = self._db.execute("SELECT COUNT(*) FROM raw").fetchone()[0]
            return raw + self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


#: The longest wait before retrying a refused connection (a down endpoint is declared after ``down_after`` of them).
REFUSED_BACKOFF_S = 1.0

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def parse_reply(body: bytes, allow_empty: bool = False) -> Reply | str:
    """A chat-completion or completion body as a Reply, or the reason it is none (``empty_reply``,
    ``malformed_reply``). ``allow_empty``: an empty text is an answer (a continuation the model ends at once)."""
    try:
        data = json.loads(body)
        choices = data.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        message = choice.get("message")
        text = message.get("content") if isinstance(message, dict) else choice.get("text")
        usage = data.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        cached_prompt = int(details.get("cached_tokens") or 0)
    except (ValueError, TypeError, AttributeError):
        return "malformed_reply"
    if not isinstance(text, str):
        return "malformed_reply" if choices else "empty_reply"
    if not text.strip() and not allow_empty:
        return "empty_reply"
    return Reply(text, prompt_tokens, completion_tokens, cached_prompt_tokens=cached_prompt)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


class LLMClient:
    """Chat completions with retries, a cache and usage accounting. Use one per process and endpoint."""

    def __init__(self, settings: LLMSettings, cache: ResponseCache | None = None) -> None:
        from openai import AsyncOpenAI

        self.settings = settings
        self.cache = cache
        self.usage = Usage()
        self.gate = PrefixGate(settings.concurrency, settings.order)
        self._inflight: dict[str, asyncio.Future[Reply]] = {}
        self._refused = 0  # connection attempts refused or reset in a row, over all requests
        self._down: EndpointDown | None = None
        import httpx2
        from openai import DefaultAsyncHttpxClient

        # One pooled connection per request in flight: a pool sized to the concurrency is scanned faster.
        limits = httpx2.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
        self._client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key(),
            max_retries=0,  # the loop below retries, with jitter and Retry-After
            timeout=settings.timeout_s,
            http_client=DefaultAsyncHttpxClient(limits=limits, timeout=settings.timeout_s),
        )

    async def close(self) -> None:
        await self._client.close()

    async def preflight(self) -> None:
        """Fail before spending anything if the endpoint is unreachable, refuses the key, or lacks the model."""
        import openai

        try:
            models = [m.id async for m in self._client.models.list()]
        except openai.AuthenticationError as exc:
            raise EndpointUnreachable(
                f"{self.settings.base_url} refused the API key from ${self.settings.api_key_env}: {exc.message}"
            ) from exc
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise EndpointUnreachable(
                f"cannot reach the LLM endpoint {self.settings.base_url} ({type(exc).__name__}). Start a server "
                "(aiev serve), or point llm.teacher.base_url at OpenAI or a running vLLM server"
            ) from exc
        except openai.APIStatusError as exc:
            log.warning("endpoint %s cannot list models (%s); going on", self.settings.base_url, exc.status_code)
            return
        if models and self.settings.model not in models:
            raise EndpointUnreachable(
                f"model '{self.settings.model}' is not served at {self.settings.base_url} (it serves: "
                f"{', '.join(models[:10])}); set llm.teacher.model"
            )

    async def engine_counters(self) -> dict[str, int] | None:
        """The serving engine's own prompt-cache counters (aiev's llama.cpp server: ``GET /aiev/counters``), or
        None where the engine has none. Cumulative since the engine started: take the difference of two reads."""
        import httpx2

        root = self.settings.base_url.rstrip("/").removesuffix("/v1")
        try:
            resp = await self._client.get(f"{root}/aiev/counters", cast_to=httpx2.Response)
            data = json.loads(resp.content)
        except Exception:  # any engine without them, or one that is gone: no figures, not an error
            return None
        if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
            return None
        return data

    def _backoff(self, attempt: int, exc: Exception | None) -> float:
        hinted = _retry_after(exc) if exc is not None else None
        if hinted is not None:
            return min(hinted, self.settings.backoff_max_s)
        cap = min(self.settings.backoff_max_s, self.settings.backoff_s * (2**attempt))
        return random.uniform(0, cap)  # full jitter

    async def chat(self, messages: list[Message]) -> Reply:
        """A chat completion (``/chat/completions``): chat models, the paper's roles."""
        sampling = self.settings.sampling()
        key = ResponseCache.key(self.settings.cache_model, messages, sampling)
        return await self._call("/chat/completions", {"messages": messages}, sampling, key)

    async def complete(self, prompt: str, stop: list[str], *, allow_empty: bool = False) -> Reply:
        """A plain completion (``/completions``): base models, prompted with few-shot templates. With
        ``allow_empty`` an empty text is a reply, not a failure to retry (a model continuing its own turn may end
        it at once)."""
        sampling = self.settings.sampling()
        key = ResponseCache.key(self.settings.cache_model, {"prompt": prompt, "stop": stop}, sampling)
        return await self._call("/completions", {"prompt": prompt, "stop": stop}, sampling, key, allow_empty)

    async def _call(
        self, path: str, payload: dict[str, Any], sampling: dict[str, Any], key: str, allow_empty: bool = False
    ) -> Reply:
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                self.usage.cached += 1
                return hit
        pending = self._inflight.get(key)
        if pending is not None:  # the same request is on its way already: share its reply, pay once
            self.usage.cached += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            order_by = payload["prompt"] if "prompt" in payload else json.dumps(payload["messages"])
            async with self.gate.slot(order_by):
                reply = await self._request(path, payload, sampling, key, allow_empty)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waits
            raise
        finally:
            del self._inflight[key]
        future.set_result(reply)
        self.usage.requests += 1
        self.usage.prompt_tokens += reply.prompt_tokens
        self.usage.completion_tokens += reply.completion_tokens
        self.usage.cached_prompt_tokens += reply.cached_prompt_tokens
        self.usage.cost_usd += self.settings.cost(reply.prompt_tokens, reply.completion_tokens)
        return reply

    async def _request(
        self, path: str, payload: dict[str, Any], sampling: dict[str, Any], key: str, allow_empty: bool = False
    ) -> Reply:
        import httpx2
        import openai

        last = "unknown"
        for attempt in range(self.settings.max_retries + 1):
            if self._down is not None:
                raise self._down
            exc: Exception | None = None
            try:
                # The SDK's low-level post (same auth and errors as chat.completions.create) returning the raw
                # response: its body is stored before anything parses or uses it, so a reply that arrived is never
                # paid twice, whenever the job is killed.
                resp = await self._client.post(
                    path, body={"model": self.settings.model, **payload, **sampling}, cast_to=httpx2.Response
                )
                body = resp.content
                self._refused = 0
                if self.cache is not None:
                    self.cache.put_raw(key, body)
                reply = parse_reply(body, allow_empty)
                if isinstance(reply, Reply):
                    return reply
                last = reply
                if self.cache is not None:
                    self.cache.drop(key)
            except openai.APIStatusError as e:
                self._refused = 0  # it answered
                if e.status_code not in _RETRY_STATUS:
                    raise LLMError(f"http_{e.status_code}", str(e.message)[:500]) from e
                exc, last = e, f"http_{e.status_code}"
            except openai.APITimeoutError as e:  # slow, not gone (a subclass of APIConnectionError)
                exc, last = e, type(e).__name__
            except openai.APIConnectionError as e:
                exc, last = e, type(e).__name__
                self._refused += 1
                if self._refused >= self.settings.down_after:
                    cause = e.__cause__ or e
                    self._down = EndpointDown(
                        f"the LLM endpoint {self.settings.base_url} refused or dropped {self._refused} connections "
                        f"in a row ({type(cause).__name__}: {cause}): it is down, so the job stops instead of "
                        "retrying every request for minutes"
                    )
                    raise self._down from e
            except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError, TypeError) as e:
                exc, last = e, "malformed_reply"
            if attempt < self.settings.max_retries:
                delay = self._backoff(attempt, exc)
                if self._refused:  # nothing listens there now: look again soon, so that "down" comes in seconds
                    delay = min(delay, REFUSED_BACKOFF_S)
                self.usage.retries += 1
                log.debug("LLM request failed (%s); retry %d in %.2fs", last, attempt + 1, delay)
                await asyncio.sleep(delay)
        raise LLMError(last, f"gave up after {self.settings.max_retries + 1} attempts")


@asynccontextmanager
async def client_session(settings: LLMSettings, cache_path: str | Path | None) -> AsyncIterator[LLMClient]:
    """An LLM client with its response cache, both closed on the way out whatever happens: the one set-up of
    every agent session (dialogue generation, pass@1, benchmark sampling, check-tests' second solutions, and,
    with no cache, the interactive chat). One cache file per job: SQLite files are never shared between nodes."""
    cache = ResponseCache(Path(cache_path)) if cache_path is not None else None
    client = LLMClient(settings, cache)
    try:
        yield client
    finally:
        try:
            await client.close()
        finally:
            if cache is not None:
                cache.close()
