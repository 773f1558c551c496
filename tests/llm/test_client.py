from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import time

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


# ------------------------------------------------------------------------------ a slow engine is not a dead one


def test_a_stream_slower_than_the_timeout_in_all_is_followed_not_sent_again(tmp_path):
    """Each token comes well within timeout_s, the whole reply does not: the request is sent once and answered."""
    text = "one two three four five six seven eight nine ten"
    with ScriptedServer(lambda m: text, stream_token_s=0.25) as server:
        client = LLMClient(settings(server.url), ResponseCache(tmp_path / "c.sqlite"))
        assert ask_many(client, 1) == [text]
    assert server.received == 1 and server.abandoned == 0 and client.usage.retries == 0
    assert server.requests[0]["stream"] is True
    assert client.usage.completion_tokens == 10  # the usage of the stream's last chunk
    assert len(client.speeds) == 1  # the engine's speed, measured on the reply
    cache = ResponseCache(tmp_path / "c.sqlite")
    hit = cache.get(next(iter(cache._db.execute("SELECT key FROM raw")))[0])
    assert hit is not None and hit.text == text and hit.cached  # the stream as stored is read back as the reply


def test_a_stalled_stream_is_dropped_on_the_engine_before_it_is_sent_again():
    """No token for timeout_s: the client closes the stream (the server sees its client gone) and asks again."""
    text = "alpha beta gamma delta epsilon zeta eta theta"
    with ScriptedServer(lambda m: text, stream_token_s=0.05, stall_s=2.5) as server:
        client = LLMClient(settings(server.url))
        assert ask_many(client, 1) == [text]
        deadline = time.monotonic() + 10
        while server.abandoned == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # the abandoned stream sees its client gone at its next write
    assert server.received == 2 and server.abandoned == 1 and server.successes == 1
    assert client.usage.retries == 1 and client.usage.requests == 1


def test_the_deadline_follows_max_tokens_and_the_measured_speed():
    client = LLMClient(settings("http://127.0.0.1:9/v1", timeout_s=10.0, max_tokens=400))
    try:
        from aiev.llm.client import FLOOR_TOKENS_PER_S, SLOWDOWN

        assert client.deadline_s() == 10.0 + 400 / FLOOR_TOKENS_PER_S  # not measured yet: the floor
        client.speeds.extend([80.0, 40.0, 60.0])
        assert client.pace() == 40.0 / SLOWDOWN  # the slowest of the last replies, slowed down
        assert client.deadline_s() == 10.0 + 400 / (40.0 / SLOWDOWN)
        assert client.first_token_wait_s(0) == client.deadline_s()  # nothing ahead: its own prompt only
        assert client.first_token_wait_s(2) == 3 * client.deadline_s()  # two replies to wait for first
        client.speeds.clear()
        client.speeds.append(2.0)  # an engine slower than the floor assumes: the floor holds
        assert client.pace() == FLOOR_TOKENS_PER_S
    finally:
        asyncio.run(client.close())
    fixed = LLMClient(settings("http://127.0.0.1:9/v1", deadline_s=300.0))
    try:
        assert fixed.deadline_s() == 300.0  # llm.deadline_s overrides
    finally:
        asyncio.run(fixed.close())


def test_a_streamed_reply_is_folded_into_one():
    from aiev.llm.client import parse_reply

    def ev(d: dict) -> bytes:
        return b"data: " + json.dumps(d).encode() + b"\n\n"

    chat = b": ping\n\n" + ev({"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]})
    chat += ev({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]})
    chat += ev({"choices": [{"index": 0, "delta": {"content": " there"}, "finish_reason": None}]})
    done = ev({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 7, "completion_tokens": 2}}) + b"data: [DONE]\n\n"  # fmt: skip
    assert parse_reply(chat + done) == Reply("Hi there", 7, 2)
    assert parse_reply(chat) == "malformed_reply"  # cut off before its finish reason: asked again
    text = ev({"choices": [{"index": 0, "text": "x = 1", "finish_reason": None}]})
    text += ev({"choices": [{"index": 0, "text": "", "finish_reason": "length"}]}) + b"data: [DONE]\n\n"
    assert parse_reply(text) == Reply("x = 1", 0, 1)  # no usage sent: one piece a token
