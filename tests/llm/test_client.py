from __future__ import annotations

import asyncio
import json
import multiprocessing as mp

import pytest

from aiev.llm.client import LLMClient, LLMError, LLMSettings, Reply, ResponseCache
from tests.scripted_server import ScriptedServer, echo_script


def settings(url: str, **kw) -> LLMSettings:
    base = {"base_url": url, "model": "scripted", "timeout_s": 1.0, "backoff_s": 0.01, "backoff_max_s": 0.2}
    return LLMSettings(**{**base, **kw})


def ask_many(client: LLMClient, n: int) -> list[str]:
    async def go():
        try:
            replies = await asyncio.gather(*(client.chat([{"role": "user", "content": f"q{i}"}]) for i in range(n)))
        finally:
            await client.close()
        return [r.text for r in replies]

    return asyncio.run(go())


def test_every_fault_is_retried_to_the_same_answers(tmp_path):
    with ScriptedServer(echo_script) as clean:
        expected = ask_many(LLMClient(settings(clean.url)), 10)
    with ScriptedServer(echo_script, faults=True, slow_s=2.0) as faulty:
        client = LLMClient(settings(faulty.url))
        got = ask_many(client, 10)
        assert set(faulty.faulted) == {"429", "500", "slow", "truncated", "empty"}
    assert got == expected
    assert client.usage.requests == 10 and client.usage.retries == 10


def test_gives_up_with_a_reason_after_max_retries():
    with ScriptedServer(echo_script, faults=True) as server:
        client = LLMClient(settings(server.url, max_retries=0))
        with pytest.raises(LLMError) as exc:
            ask_many(client, 1)  # the first fault in the cycle is a 429
        assert exc.value.reason == "http_429"


def test_an_empty_completion_is_retried_unless_an_empty_text_is_an_answer():
    """Generation treats an empty reply as a failure worth retrying; a model continuing its own turn (the chat)
    may end it at once, so there it is the answer, asked for once."""

    async def ask(client: LLMClient, **kw) -> str:
        try:
            return (await client.complete("go on", ["<|code_end|>"], **kw)).text
        finally:
            await client.close()

    with ScriptedServer(echo_script, completion_script=lambda prompt: "") as server:
        assert asyncio.run(ask(LLMClient(settings(server.url, max_retries=2)), allow_empty=True)) == ""
        assert server.paths["completion"] == 1
        with pytest.raises(LLMError) as exc:
            asyncio.run(ask(LLMClient(settings(server.url, max_retries=2))))
        assert exc.value.reason == "empty_reply" and server.paths["completion"] == 4


def test_cache_means_no_second_request(tmp_path):
    with ScriptedServer(echo_script) as server:
        cache = ResponseCache(tmp_path / "c.sqlite")
        a = ask_many(LLMClient(settings(server.url), cache), 5)
        b = ask_many(LLMClient(settings(server.url), ResponseCache(tmp_path / "c.sqlite")), 5)
        assert a == b and server.received == 5 and len(cache) == 5


def test_cache_key_covers_model_messages_and_sampling():
    msgs = [{"role": "user", "content": "hi"}]
    k = ResponseCache.key("m", msgs, {"temperature": 0})
    assert k != ResponseCache.key("m2", msgs, {"temperature": 0})
    assert k != ResponseCache.key("m", [{"role": "user", "content": "hi!"}], {"temperature": 0})
    assert k != ResponseCache.key("m", msgs, {"temperature": 0.7})


def _writer(path: str, start: int) -> None:
    cache = ResponseCache(path)
    for i in range(start, start + 200):  # what the client stores: the body as it arrived
        body = {
            "choices": [{"message": {"content": f"text {i}"}}],
            "usage": {"prompt_tokens": i, "completion_tokens": i},
        }
        cache.put_raw(f"k{i}", json.dumps(body).encode())


def test_cache_is_safe_with_concurrent_writer_processes(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    ResponseCache(path).close()
    procs = [mp.get_context("spawn").Process(target=_writer, args=(path, s)) for s in (0, 200, 400)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    cache = ResponseCache(path)
    assert len(cache) == 600 and cache.get("k599") == Reply("text 599", 599, 599, cached=True)


def test_cost_from_prices():
    s = settings("http://x", prices={"scripted": {"prompt_per_mtok": 2.5, "completion_per_mtok": 10.0}})
    assert s.cost(1_000_000, 100_000) == pytest.approx(3.5)
    assert settings("http://x").cost(10, 10) == 0.0


def test_identical_requests_in_flight_are_sent_once():
    with ScriptedServer(echo_script, latency_s=0.2) as server:
        client = LLMClient(settings(server.url))

        async def go():
            same = [{"role": "user", "content": "same question"}]
            try:
                return await asyncio.gather(*(client.chat(same) for _ in range(8)))
            finally:
                await client.close()

        replies = asyncio.run(go())
        assert len({r.text for r in replies}) == 1
        assert server.received == 1 and client.usage.requests == 1 and client.usage.cached == 7


def test_an_endpoint_that_refuses_connections_is_declared_down_in_seconds():
    """Connections refused, over every request in flight, `down_after` times in a row: EndpointDown, with the
    demo's backoff (1 s, up to 60 s; 6 retries), in seconds rather than the ~20 s a request would retry."""
    import socket
    import time

    from aiev.llm.client import EndpointDown

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    client = LLMClient(settings(f"http://127.0.0.1:{port}/v1", backoff_s=1.0, backoff_max_s=60.0, concurrency=2))
    t0 = time.monotonic()
    with pytest.raises(EndpointDown, match=rf"127.0.0.1:{port}/v1 refused or dropped 8 connections in a row") as exc:
        ask_many(client, 6)
    assert time.monotonic() - t0 < 10
    assert "ConnectError" in str(exc.value)


def test_timeouts_and_http_errors_never_count_as_down():
    """A slow or failing server is not a dead one: only refused connections count, and any answer resets them."""
    with ScriptedServer(echo_script, faults=True, slow_s=1.5) as server:
        client = LLMClient(settings(server.url, down_after=1))
        assert len(ask_many(client, 10)) == 10


def test_an_engine_without_cache_counters_gives_none():
    """Counters come from aiev's llama.cpp server (tests/generate/test_completion.py runs it); any other endpoint,
    or one that is gone, has none, and asking is never an error."""

    async def ask(url: str):
        client = LLMClient(settings(url))
        try:
            return await client.engine_counters()
        finally:
            await client.close()

    with ScriptedServer(echo_script) as server:
        assert asyncio.run(ask(server.url)) is None
    assert asyncio.run(ask("http://127.0.0.1:9/v1")) is None
