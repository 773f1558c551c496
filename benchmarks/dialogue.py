"""LLM client throughput against a scripted OpenAI-compatible endpoint (real HTTP, real openai client).

    python benchmarks/dialogue.py [--requests 1280] [--concurrency 64] [--latency 0.2]

Every request waits `latency` seconds on the server, so the ideal rate is concurrency / latency. The client runs
as in generation: semaphore, retry loop, SQLite response cache written per reply. Goal: >= 80% of ideal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import record

from aiev.llm.client import LLMClient, LLMSettings, ResponseCache
from tests.scripted_server import echo_script


async def drive(url: str, n: int, concurrency: int, cache_path: Path) -> tuple[float, LLMClient]:
    client = LLMClient(
        LLMSettings(base_url=url, model="scripted", concurrency=concurrency, timeout_s=30), ResponseCache(cache_path)
    )
    t0 = time.perf_counter()
    c0 = time.process_time()
    await asyncio.gather(*(client.chat([{"role": "user", "content": f"request {i}"}]) for i in range(n)))
    wall = time.perf_counter() - t0
    client.cpu_s = time.process_time() - c0  # type: ignore[attr-defined]
    await client.close()
    return wall, client


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float) -> None:
    """A minimal keep-alive HTTP/1.1 endpoint for POST /v1/chat/completions (echo script, fixed latency)."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            req = json.loads(await reader.readexactly(length)) if length else {}
            await asyncio.sleep(latency)
            text = echo_script(req.get("messages", [{"content": ""}]))
            body = json.dumps(
                {
                    "id": "x", "object": "chat.completion", "created": 0, "model": "scripted",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }
            ).encode()  # fmt: skip
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body
            )  # fmt: skip
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionResetError):
        writer.close()


def serve(latency: float, conn) -> None:
    """The endpoint runs in its own process, as a real one would, on asyncio (no thread per connection)."""

    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: _handle(r, w, latency), "127.0.0.1", 0, backlog=1024)
        conn.send(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # until the client is done
        server.close()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=1280)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(args.latency, child), daemon=True)
    proc.start()
    url = parent.recv()
    with tempfile.TemporaryDirectory() as tmp:
        wall, client = asyncio.run(drive(url, args.requests, args.concurrency, Path(tmp) / "c.sqlite"))
    parent.send("stop")
    proc.join(10)
    ideal = args.concurrency / args.latency
    rate = args.requests / wall
    ms = args.latency * 1000
    print(f"requests        {args.requests} at concurrency {args.concurrency}, server latency {ms:.0f} ms")
    print(f"wall            {wall:.2f} s")
    print(f"throughput      {rate:.1f} req/s; ideal {ideal:.1f} req/s -> {100 * rate / ideal:.1f}% of ideal")
    print(
        f"client          {client.usage.requests} requests, {client.usage.retries} retries, "
        f"{client.cpu_s:.2f} s CPU ({1000 * client.cpu_s / args.requests:.2f} ms per request)"
    )
    figures = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_ms": round(ms),
        "wall_s": round(wall, 2),
        "req_per_s": round(rate, 1),
        "ideal_req_per_s": round(ideal, 1),
        "share_of_ideal": round(rate / ideal, 3),
        "retries": client.usage.retries,
        "client_cpu_ms_per_request": round(1000 * client.cpu_s / args.requests, 2),
    }
    record("dialogue", figures, goal=">= 80% of the ideal rate (concurrency / latency)", met=rate / ideal >= 0.8)


if __name__ == "__main__":
    main()
