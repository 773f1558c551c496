"""A scripted OpenAI-compatible HTTP server for tests and benchmarks (real HTTP, real `openai` client).

Replies come from a script (a function of the request's messages). Fault injection: with ``faults=True`` the
first attempt of each distinct request gets, in turn, a 429 with Retry-After, a 500, a reply slower than the
client's timeout, a truncated JSON body, or an empty ``choices`` list; the next attempt is answered. The
server counts every request it answered successfully by request body, so a test can assert that nothing was
paid twice (``repeated``). ``pause_after`` holds every request after that many successes until ``resume()``,
then drops them unanswered (a kill test kills the client meanwhile).

``/completions`` (base models) is served too: ``completion_script(prompt)`` gives the text, which is cut at
the request's first stop sequence, as real servers do. ``paths`` counts the requests per endpoint and
``requests`` keeps every request body, so tests can check what a client sent.

With ``stream_token_s`` set, a request that asks for a stream gets one (server-sent events, one word a chunk, that
many seconds apart, usage in the last chunk); ``stall_s`` holds the first attempt of each request that long after
its first two words. ``abandoned`` counts the streams whose client went away before their end, seen as the server
sees it: its next write fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[list[dict[str, str]]], str]
FAULTS = ("429", "500", "slow", "truncated", "empty")


class _Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the default backlog of 5 resets connections under a burst of 64


class ScriptedServer:
    def __init__(
        self,
        script: Script,
        *,
        model: str = "scripted",
        latency_s: float = 0.0,
        faults: bool = False,
        slow_s: float = 3.0,
        pause_after: int | None = None,
        port: int = 0,
        completion_script: Callable[[str], str] | None = None,
        stream_token_s: float | None = None,
        stall_s: float = 0.0,
    ) -> None:
        self.stream_token_s = stream_token_s
        self.stall_s = stall_s
        self.abandoned = 0
        self.script = script
        self.completion_script = completion_script
        self.paths: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.model = model
        self.latency_s = latency_s
        self.faults = faults
        self.slow_s = slow_s
        self.pause_after = pause_after
        self.lock = threading.Lock()
        self.served: Counter[str] = Counter()  # body hash -> successful replies
        self.received = 0
        self.faulted: Counter[str] = Counter()  # fault kind -> times injected
        self._attempts: Counter[str] = Counter()
        self._fault_index = 0
        self._resume = threading.Event()
        self._resume.set()
        self.paused = threading.Event()
        self.dead = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    body = {"object": "list", "data": [{"id": server.model, "object": "model", "owned_by": "test"}]}
                    self._send(200, json.dumps(body).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if server.dead:  # die(): drop the connection unanswered, as a crashed process's socket is
                    self.close_connection = True
                    return
                path = self.path.rstrip("/")
                if path.endswith("/chat/completions"):
                    server._handle(self, raw, "chat")
                elif path.endswith("/completions") and server.completion_script is not None:
                    server._handle(self, raw, "completion")
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

        self.httpd = _Server(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------------------------------------
    def _handle(self, h: Any, raw: bytes, kind: str = "chat") -> None:
        req = json.loads(raw)
        key = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
        with self.lock:
            self.received += 1
            self.paths[kind] += 1
            self.requests.append(req)
            self._attempts[key] += 1
            attempt = self._attempts[key]
            fault = None
            if self.faults and attempt == 1:
                fault = FAULTS[self._fault_index % len(FAULTS)]
                self._fault_index += 1
                self.faulted[fault] += 1
            must_wait = self.pause_after is not None and sum(self.served.values()) >= self.pause_after
        if must_wait:
            # held until resume(), then dropped unanswered: the test kills the client while it waits
            self.paused.set()
            self._resume.wait()
            h.close_connection = True
            return
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault == "429":
            h._send(429, b'{"error": {"message": "rate limited"}}', {"Retry-After": "0.05"})
            return
        if fault == "500":
            h._send(500, b'{"error": {"message": "boom"}}')
            return
        if fault == "slow":
            time.sleep(self.slow_s)
        if kind == "completion":
            assert self.completion_script is not None
            text = self.completion_script(req["prompt"])
            for stop in req.get("stop") or []:
                cut = text.find(stop)
                if cut >= 0:
                    text = text[:cut]
            usage = {"prompt_tokens": len(req["prompt"].split()), "completion_tokens": len(text.split())}
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
            data = json.dumps({"id": "cmpl-" + key[:12], "object": "text_completion", "created": 0,
                               "model": req.get("model", self.model), "choices": [choice], "usage": usage})  # fmt: skip
            self._reply(h, key, fault, data.encode(), empty=json.dumps({"id": "cmpl-" + key[:12], "choices": []}))
            return
        text = self.script(req["messages"])
        if req.get("stream") and self.stream_token_s is not None:
            self._stream(h, key, text, req, stall=attempt == 1 and self.stall_s > 0)
            return
        body = {
            "id": "chatcmpl-" + key[:12],
            "object": "chat.completion",
            "created": 0,
            "model": req.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": sum(len(m["content"].split()) for m in req["messages"]),
                "completion_tokens": len(text.split()),
                "total_tokens": 0,
            },
        }
        if fault == "empty":
            body["choices"] = []
            h._send(200, json.dumps(body).encode())
            return
        self._reply(h, key, fault, json.dumps(body).encode())

    def _reply(self, h: Any, key: str, fault: str | None, data: bytes, empty: str | None = None) -> None:
        if fault == "empty" and empty is not None:
            h._send(200, empty.encode())
            return
        if fault == "truncated":
            h._send(200, data[: len(data) // 2])
            return
        if fault == "slow":
            h._send(200, data)  # the client gave up already: not a successful reply
            return
        with self.lock:
            self.served[key] += 1
        h._send(200, data)

    def _stream(self, h: Any, key: str, text: str, req: dict[str, Any], stall: bool) -> None:
        words = text.split(" ")
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words)]
        h.send_response(200)
        h.send_header("Content-Type", "text/event-stream")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in req["messages"]),
                 "completion_tokens": len(pieces), "total_tokens": 0}  # fmt: skip

        def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            chunk = {"id": "chatcmpl-" + key[:12], "object": "chat.completion.chunk", "created": 0,
                     "model": req.get("model", self.model),
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        events = [event({"role": "assistant", "content": ""})]
        events += [event({"content": p}) for p in pieces]
        events += [event({}, "stop", usage=usage), b"data: [DONE]\n\n"]
        try:
            for i, data in enumerate(events):
                if i > 1:
                    time.sleep(self.stall_s if stall and i == 3 else self.stream_token_s or 0.0)
                h.wfile.write(data)
                h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with self.lock:
                self.abandoned += 1
            return
        with self.lock:
            self.served[key] += 1

    @property
    def repeated(self) -> int:
        """Requests answered successfully more than once (paid twice)."""
        return sum(c - 1 for c in self.served.values() if c > 1)

    @property
    def successes(self) -> int:
        return sum(self.served.values())

    def resume(self) -> None:
        self.pause_after = None
        self._resume.set()

    def hold(self) -> None:
        self._resume.clear()

    def die(self) -> None:
        """Go away as a crashed server does: new connections are refused, open ones are dropped unanswered."""
        self.dead = True
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        if self.pause_after is not None:
            self._resume.clear()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._resume.set()
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------------------------- scripts

SOLUTION = "def add(a, b):\n    return a + b\n"
BUGGY = "def add(a, b):\n    return a - b\n"
TESTS = "assert add(2, 3) == 5\nassert add(-1, 1) == 0\nprint('all tests passed')\n"
UNITTEST_TESTS = (
    "class TestAdd(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n"
    "    def test_zero(self):\n        self.assertEqual(add(-1, 1), 0)\n"
)


def _block(code: str, lang: str = "python") -> str:
    return f"```{lang}\n{code}```\n"


def dialogue_script(messages: list[dict[str, str]]) -> str:
    """Drives dialogues by the SCENARIO tag in the seed: pass1, fix, never, pip, nocode, empty; and the layouts of
    instruct models: importsfirst (one block, ``import unittest`` on line 1, tests run by ``unittest.main``),
    unrun (the same, buggy, without ``unittest.main``, then fixed), printonly (tests that only print)."""
    system = messages[0]["content"]
    first_user = next(m["content"] for m in messages if m["role"] == "user")
    m = re.search(r"SCENARIO=(\w+)", first_user)
    scenario = m.group(1) if m else "pass1"
    if system.startswith("You are the questioner"):
        last = messages[-1]["content"]
        if "Here is a seed" in last:
            return f"Implement add(a, b) returning the sum of two integers. [SCENARIO={scenario}]"
        return "The function subtracts instead of adding: the assertion add(2, 3) == 5 fails. Use +."
    rounds = sum(1 for x in messages if x["role"] == "assistant")
    if scenario == "pass1":
        return "Here is my solution.\n" + _block(SOLUTION) + "And the tests:\n" + _block(TESTS)
    if scenario == "fix":
        code = BUGGY if rounds == 0 else SOLUTION
        return _block(code) + _block(TESTS)
    if scenario == "never":
        return _block(BUGGY) + _block(TESTS)
    if scenario == "pip":
        code = "import aievtinypkg\n\n\ndef add(a, b):\n    return aievtinypkg.plus(a, b)\n"
        return "First install the helper.\n" + _block("pip install aievtinypkg", "bash") + _block(code) + _block(TESTS)
    if scenario in ("importsfirst", "unrun"):
        code = BUGGY if scenario == "unrun" and rounds == 0 else SOLUTION
        runner = "" if scenario == "unrun" else '\nif __name__ == "__main__":\n    unittest.main()\n'
        return _block(f"import unittest\n\n{code}\n\n{UNITTEST_TESTS}{runner}")
    if scenario == "printonly":
        return _block(SOLUTION) + _block("print(add(2, 3))\n")
    if scenario == "empty":
        return ""
    if scenario == "nocode":
        return "I would add the two numbers."
    raise ValueError(scenario)


def solver_script(messages: list[dict[str, str]]) -> str:
    """A model better than :func:`dialogue_script`'s teacher: the same questioner, a programmer that writes the right
    ``add`` at once in every scenario (the scripted teacher's first answer in ``fix`` is wrong)."""
    if messages[0]["content"].startswith("You are the questioner"):
        return dialogue_script(messages)
    return _block(SOLUTION) + _block(TESTS)


def echo_script(messages: list[dict[str, str]]) -> str:
    return "ok " + hashlib.sha256(messages[-1]["content"].encode()).hexdigest()[:8]


def completion_dialogue_script(prompt: str) -> str:
    """The same scenarios as :func:`dialogue_script`, for base-model templates (aiev/llm/prompts/completion_*):
    the template is recognised by how the prompt ends; the scenario by the SCENARIO=... marker of the seed."""
    m = re.findall(r"SCENARIO=(\w+)", prompt)
    scenario = m[-1] if m else "pass1"
    if prompt.endswith("### Problem\n"):
        problem = "Write a function `add(a, b)` that returns the sum. For example, `add(2, 3)` returns `5`."
        return f"{problem} [SCENARIO={scenario}]\n\n### Code\n"
    if prompt.endswith("### Explanation\n"):
        return "The function subtracts instead of adding, so add(2, 3) is -1, not 5. Use +.\n\n### Code\n"
    fixing = prompt.endswith("### Fixed solution\n```python\n")
    if scenario == "nocode":
        return "I would add the two numbers.\n```\n### End\n"
    code = BUGGY if scenario == "never" or (scenario == "fix" and not fixing) else SOLUTION
    return f"{code}```\n### Tests\n```python\n{TESTS}```\n### End\n\n### Problem\nmore"
