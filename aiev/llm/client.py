"""One async client for any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, transformers serve).

- bounded concurrency, the waiting requests sent in the order an engine's prompt cache serves best
  (:mod:`aiev.llm.gate`: the one sharing the longest beginning with the last prompt first);
- its own retry loop: exponential backoff with full jitter on 429, 5xx,
  timeouts, connection errors and malformed or empty replies; ``Retry-After`` is honoured;
- replies streamed, so that a slow engine is told from a dead one: a request fails only when no new token came for
  ``llm.timeout_s`` (a stall), or when it outlives a deadline that follows ``max_tokens`` and the engine's speed as
  measured on earlier replies; the failed request's connection is closed before it is sent again, which stops the
  engine generating it (llama.cpp's server and ``transformers serve`` both stop a stream whose client is gone);
- identical requests in flight at once are sent once and share the reply;
- a persistent response cache (SQLite in WAL mode; one file per shard, never shared between nodes) keyed by
  model + messages + sampling parameters, written as soon as a reply arrives: a re-run never pays twice;
- token usage per request, summed, with the cost from configurable per-model prices.

The API key is read from the environment variable named in the config and never logged or written anywhere.
"""

from __future__ import annotations

import asyncio
import collections
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
    #: A stall: the longest wait for the next token of a streamed reply, once its first came; for a server that does
    #: not stream, the longest wait for a whole reply.
    timeout_s: float = 120.0
    #: The longest one request may generate once its first token came; None: from max_tokens and the engine's
    #: measured speed (:meth:`LLMClient.deadline_s`).
    deadline_s: float | None = None
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
            deadline_s=llm.get("deadline_s"),
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

#: The pace (tokens/s) a request's deadline assumes before the engine has been measured, and the least it ever
#: assumes; once measured, the slowest of the last :data:`SPEED_WINDOW` replies, slowed down :data:`SLOWDOWN` times.
FLOOR_TOKENS_PER_S = 1.0
SLOWDOWN = 4.0
SPEED_WINDOW = 8
#: A reply's speed is measured from this many streamed pieces on (fewer: its time is mostly the prompt's).
MIN_MEASURED = 8


class Stalled(Exception):
    """A streamed reply that made no progress within its wait, or outlived its deadline: its connection was
    closed, which stops the engine generating it."""


class _HTTPStatus(Exception):
    """A reply with an HTTP error status (``response`` for its Retry-After)."""

    def __init__(self, response: Any, body: bytes) -> None:
        super().__init__(f"HTTP {response.status_code}: {body[:500].decode('utf-8', 'replace')}")
        self.response = response
        self.status_code = response.status_code


def progress_of(line: bytes) -> int:
    """1 when a streamed reply's line carries new text or its finish reason (a token came), else 0 (a ping, a
    comment, the first chunk naming the role, ``[DONE]``)."""
    if not line.startswith(b"data:"):
        return 0
    try:
        event = json.loads(line[5:])
    except ValueError:
        return 0
    choices = event.get("choices") if isinstance(event, dict) else None
    for choice in choices or []:
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        piece = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if piece or choice.get("finish_reason"):
            return 1
    return 0


def is_event_stream(body: bytes) -> bool:
    """Whether a stored body is a streamed reply (server-sent events) rather than one JSON object."""
    head = body.lstrip()[:6]
    return head.startswith((b"data:", b":", b"event:", b"id:"))


def stream_events(body: bytes) -> list[dict[str, Any]]:
    """The JSON objects of a streamed reply's ``data:`` lines, up to ``[DONE]`` (comments, pings, skipped)."""
    events = []
    for line in body.splitlines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        if data:
            events.append(json.loads(data))
    return events


def fold_stream(body: bytes) -> dict[str, Any]:
    """A streamed reply as the one JSON object a server that does not stream would have sent: the pieces of its
    text joined, its finish reason, the usage of its last chunk. Raises ValueError for a stream cut off before its
    finish reason (a dropped connection, an engine that gave up on it)."""
    text: list[str] = []
    finish, usage, chat = None, None, False
    for event in stream_events(body):
        if not isinstance(event, dict):
            raise ValueError("a stream event that is no JSON object")
        if "error" in event:
            raise ValueError(f"the stream reported an error: {str(event['error'])[:200]}")
        usage = event.get("usage") or usage
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                chat = True
                piece = delta.get("content")
            else:
                piece = choice.get("text")
            if isinstance(piece, str):
                text.append(piece)
            finish = choice.get("finish_reason") or finish
    if finish is None:
        raise ValueError("the stream ended before its finish reason")
    choice = {"index": 0, "finish_reason": finish}
    choice |= {"message": {"role": "assistant", "content": "".join(text)}} if chat else {"text": "".join(text)}
    # a server that sends no usage with a stream: one piece of text a token (llama.cpp's, vLLM's streams)
    return {"choices": [choice], "usage": usage or {"completion_tokens": sum(1 for t in text if t)}}


def parse_reply(body: bytes, allow_empty: bool = False) -> Reply | str:
    """A chat-completion or completion body (one JSON object, or a streamed reply's events) as a Reply, or the
    reason it is none (``empty_reply``, ``malformed_reply``). ``allow_empty``: an empty text is an answer (a
    continuation the model ends at once)."""
    try:
        data = fold_stream(body) if is_event_stream(body) else json.loads(body)
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
        self._at_engine = 0  # requests of this client sent and not yet answered
        #: the engine's speed on the last replies (tokens/s, generation only)
        self.speeds: collections.deque[float] = collections.deque(maxlen=SPEED_WINDOW)
        import httpx2
        from openai import DefaultAsyncHttpxClient

        # One pooled connection per request in flight: a pool sized to the concurrency is scanned faster.
        limits = httpx2.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
        # Completions are streamed over a client of their own, whose waits are the request loop's (no read timeout)
        self._url = settings.base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {settings.api_key()}",
            "Accept": "text/event-stream, application/json",
        }
        self._http = httpx2.AsyncClient(limits=limits, timeout=httpx2.Timeout(None, connect=settings.timeout_s))
        self._client = AsyncOpenAI(
            base_url=settings.base_url,
            api_key=settings.api_key(),
            max_retries=0,  # the loop below retries, with jitter and Retry-After
            timeout=settings.timeout_s,
            http_client=DefaultAsyncHttpxClient(limits=limits, timeout=settings.timeout_s),
        )

    async def close(self) -> None:
        try:
            await self._http.aclose()
        finally:
            await self._client.close()

    def pace(self) -> float:
        """The speed (tokens/s) a request's deadline assumes: the slowest of the last replies, slowed down
        :data:`SLOWDOWN` times, never below :data:`FLOOR_TOKENS_PER_S`."""
        measured = min(self.speeds) / SLOWDOWN if self.speeds else 0.0
        return max(FLOOR_TOKENS_PER_S, measured)

    def deadline_s(self) -> float:
        """The longest a request may generate once its first token came: ``llm.deadline_s``, or ``timeout_s`` and
        the time ``max_tokens`` take at :meth:`pace`."""
        if self.settings.deadline_s is not None:
            return self.settings.deadline_s
        return self.settings.timeout_s + self.settings.max_tokens / self.pace()

    def first_token_wait_s(self, ahead: int) -> float:
        """The longest wait for a streamed reply's first token: its own deadline (the prompt is read before the
        first token, and an engine reads a prompt faster than it generates ``max_tokens``; it sends nothing
        meanwhile), and the deadline of each request ahead of it at the engine (a one-slot engine answers them
        first)."""
        return (ahead + 1) * self.deadline_s()

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

    async def _send(self, path: str, body: dict[str, Any]) -> tuple[bytes, float | None]:
        """One attempt: the reply's body as it came and the engine's speed on it (tokens/s; None where it could not
        be measured). A streamed reply waits at most :meth:`first_token_wait_s` for its first token, then at most
        ``timeout_s`` for each next one and :meth:`deadline_s` in all; a reply that is not streamed, and the
        response's headers, at most ``timeout_s``. A reply that overstays is dropped (:class:`Stalled`): closing its
        connection stops the engine generating it, so the next attempt never queues behind the abandoned one."""
        loop = asyncio.get_running_loop()
        ahead = self._at_engine
        self._at_engine += 1
        sent = loop.time()
        stall = self.settings.timeout_s
        limit = sent + stall
        try:
            request = self._http.build_request("POST", self._url + path, json=body, headers=self._headers)
            try:
                resp = await asyncio.wait_for(self._http.send(request, stream=True), stall)
            except asyncio.TimeoutError:
                raise Stalled(f"no response within {stall:.0f} s") from None
            try:
                if resp.status_code >= 400:
                    raw = await asyncio.wait_for(resp.aread(), stall)
                    raise _HTTPStatus(resp, raw)
                streamed = resp.headers.get("content-type", "").startswith("text/event-stream")
                if streamed:
                    limit = sent + self.first_token_wait_s(ahead)
                pieces: list[bytes] = []
                rest, tokens, first, last, deadline = b"", 0, 0.0, 0.0, 0.0
                chunks = resp.aiter_bytes().__aiter__()
                while True:
                    try:
                        chunk = await asyncio.wait_for(chunks.__anext__(), max(limit - loop.time(), 0.0))
                    except StopAsyncIteration:
                        break
                    except asyncio.TimeoutError:
                        raise Stalled(
                            self._overstayed(streamed, tokens, loop.time() - sent, limit == deadline)
                        ) from None
                    pieces.append(chunk)
                    if not streamed:
                        continue
                    *lines, rest = (rest + chunk).split(b"\n")
                    came = sum(map(progress_of, lines))
                    if came:
                        last = loop.time()
                        if not tokens:
                            first, deadline = last, last + self.deadline_s()
                        tokens += came
                        limit = min(last + stall, deadline)
            finally:
                await resp.aclose()  # an unfinished stream: the connection is closed, and the engine stops
        finally:
            self._at_engine -= 1
        speed = (tokens - 1) / (last - first) if tokens >= MIN_MEASURED and last > first else None
        return b"".join(pieces), speed

    @staticmethod
    def _overstayed(streamed: bool, tokens: int, waited: float, past_deadline: bool) -> str:
        if past_deadline:
            return f"a reply still generating {waited:.0f} s after it was sent, past its deadline ({tokens} tokens)"
        what = "whole reply" if not streamed else "first token" if not tokens else f"token after the {tokens}th"
        return f"no {what} {waited:.0f} s after it was sent"

    async def _request(
        self, path: str, payload: dict[str, Any], sampling: dict[str, Any], key: str, allow_empty: bool = False
    ) -> Reply:
        import httpx2

        last = "unknown"
        body = {"model": self.settings.model, **payload, **sampling, "stream": True,
                "stream_options": {"include_usage": True}}  # fmt: skip
        for attempt in range(self.settings.max_retries + 1):
            if self._down is not None:
                raise self._down
            exc: Exception | None = None
            try:
                # The body is stored as it came, before anything parses or uses it, so a reply that arrived is never
                # paid twice, whenever the job is killed.
                raw, speed = await self._send(path, body)
                self._refused = 0
                if self.cache is not None:
                    self.cache.put_raw(key, raw)
                reply = parse_reply(raw, allow_empty)
                if isinstance(reply, Reply):
                    if speed is not None:
                        self.speeds.append(speed)
                    return reply
                last = reply
                if self.cache is not None:
                    self.cache.drop(key)
            except _HTTPStatus as e:
                self._refused = 0  # it answered
                if e.status_code not in _RETRY_STATUS:
                    raise LLMError(f"http_{e.status_code}", str(e)[:500]) from e
                exc, last = e, f"http_{e.status_code}"
            except (Stalled, httpx2.TimeoutException) as e:  # slow, not gone
                exc, last = e, "timeout"
                log.info("LLM request dropped and sent again: %s", e)
            except httpx2.TransportError as e:  # refused, reset, or cut off before the reply ended
                exc, last = e, type(e).__name__
                self._refused += 1
                if self._refused >= self.settings.down_after:
                    self._down = EndpointDown(
                        f"the LLM endpoint {self.settings.base_url} refused or dropped {self._refused} connections "
                        f"in a row ({type(e).__name__}: {e}): it is down, so the job stops instead of "
                        "retrying every request for minutes"
                    )
                    raise self._down from e
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
