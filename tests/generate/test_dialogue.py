"""AIEV dialogues end to end: scripted OpenAI-compatible server (real HTTP, real openai client) + real sandbox."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from aiev.config import load_config
from aiev.generate import shards as generate
from aiev.generate.dialogue import extract_program
from aiev.llm.client import EndpointUnreachable
from aiev.records import record_errors
from tests.scripted_server import ScriptedServer, dialogue_script

SCENARIOS = ["pass1", "fix", "never", "pip", "nocode", "fix", "pass1"]


def bwrap_or_skip():
    from aiev.sandbox import SandboxError, get_sandbox

    try:
        get_sandbox("auto")
    except SandboxError as exc:
        pytest.skip(f"no sandbox backend: {exc}")


def tiny_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, so the pip-install turn runs offline from a local wheelhouse."""
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / "aievtinypkg-1.0-py3-none-any.whl"
    files = {
        "aievtinypkg/__init__.py": "def plus(a, b):\n    return a + b\n",
        "aievtinypkg-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: aievtinypkg\nVersion: 1.0\n",
        "aievtinypkg-1.0.dist-info/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{name},,\n" for name in files) + "aievtinypkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
        z.writestr("aievtinypkg-1.0.dist-info/RECORD", record)
    return whl


def write_batch(path: Path, scenarios: list[str], bad: bool = False) -> Path:
    rows = [
        {
            "id": f"t:{i}",
            "source": "t",
            "kind": "instruction",
            "text": f"Adding numbers, case {i}. SCENARIO={sc}",
            "reference": None,
            "provenance": {"type": "jsonl"},
        }
        for i, sc in enumerate(scenarios)
    ]
    lines = [json.dumps(r) for r in rows]
    if bad:
        lines.insert(2, "{torn json")
        lines.insert(3, json.dumps({"id": "t:bad", "text": "no kind or source"}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_config(url: str, wheelhouse: Path | None, **gen) -> dict:
    return load_config(
        {
            "llm": {
                "teacher": {"base_url": url, "model": "scripted"},
                "timeout_s": 1.0,
                "backoff_s": 0.01,
                "backoff_max_s": 0.2,
                "concurrency": 8,
                "prices": {"scripted": {"prompt_per_mtok": 1.0, "completion_per_mtok": 2.0}},
            },
            "generate": {"max_rounds": 3, "concurrent_dialogues": 4, **gen},
            "sandbox": {"timeout_s": 20, "install": {"find_links": str(wheelhouse) if wheelhouse else None}},
        }
    )


def run_shard(tmp: Path, name: str, batch: Path, cfg: dict, state: Path | None = None, **kw):
    out = tmp / name
    out.mkdir(exist_ok=True)
    info = generate.run(
        cfg,
        batch=batch,
        shard=kw.get("shard", 0),
        shards=kw.get("shards", 1),
        state_dir=state or out / "state",
        dialogues=out / "dialogues.jsonl",
        rejects=out / "rejects.jsonl",
        report=out / "report.json",
        batch_index=0,
    )
    return out, info


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x]


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    bwrap_or_skip()
    folder = tmp_path_factory.mktemp("wheels")
    tiny_wheel(folder)
    return folder


@pytest.fixture(scope="module")
def reference(tmp_path_factory, wheelhouse):
    """A fault-free run of every scenario; other tests compare against it."""
    tmp = tmp_path_factory.mktemp("ref")
    batch = write_batch(tmp / "batch_0.jsonl", SCENARIOS, bad=True)
    with ScriptedServer(dialogue_script) as server:
        out, info = run_shard(tmp, "ref", batch, make_config(server.url, wheelhouse))
        assert server.repeated == 0
    return batch, out, info


def test_scenarios(reference):
    _, out, info = reference
    passed = {e["id"]: e for e in load(out / "dialogues.jsonl")}
    rejected = {e["id"]: e for e in load(out / "rejects.jsonl")}
    assert sorted(passed) == ["t:0", "t:1", "t:3", "t:5", "t:6"]
    assert sorted(rejected) == ["t:2", "t:4"]
    for e in [*passed.values(), *rejected.values()]:
        assert record_errors(e, "entry") == [], e["id"]

    # pass at round 1: problem, answer, execution (stdout)
    e = passed["t:0"]
    assert e["rounds"] == 1 and [m["role"] for m in e["messages"]] == ["user", "assistant", "execution"]
    assert e["messages"][2]["exit_code"] == 0 and "all tests passed" in e["messages"][2]["stdout"]
    assert e["solution"].startswith("def add") and e["tests"].startswith("assert add")
    assert e["problem"].startswith("Implement add") and e["stage"] == "teaching" and e["model"] == "scripted"
    assert len(e["provenance"]["prompts_sha256"]) == 64

    # a bug: stderr goes back, the questioner diagnoses, the programmer fixes
    e = passed["t:1"]
    roles = [m["role"] for m in e["messages"]]
    assert e["rounds"] == 2 and roles == ["user", "assistant", "execution", "user", "assistant", "execution"]
    first = e["messages"][2]
    assert first["exit_code"] == 1 and "AssertionError" in first["stderr"]
    assert e["messages"][3]["agent"] == "questioner" and "subtracts" in e["messages"][3]["content"]
    assert e["messages"][5]["exit_code"] == 0

    # never passing: discarded after max_rounds, every message kept
    e = rejected["t:2"]
    assert e["reason"] == "max_rounds" and e["rounds"] == 3 and e["passed"] is False
    assert [m["role"] for m in e["messages"]].count("execution") == 3
    assert e["solution"] is None and e["tests"] is None

    # a pip install turn, offline from the wheelhouse, then the code imports it
    e = passed["t:3"]
    ex = e["messages"][2]
    assert ex["install"]["exit_code"] == 0 and ex["install"]["specs"] == ["aievtinypkg"]
    assert ex["exit_code"] == 0

    # no code at all: rejected with its reason
    assert rejected["t:4"]["reason"] == "no_code"

    # bad seeds are reported, not fatal
    reasons = [b["reason"].split(":")[0] for b in info["bad_seeds"]]
    assert sorted(reasons) == ["invalid-json", "invalid-seed"]


def test_usage_and_merge(reference, tmp_path):
    _, out, _ = reference
    info = generate.merge(
        {"prices": {"scripted": {"prompt_per_mtok": 1.0, "completion_per_mtok": 2.0}}},
        shards=[(str(out / "dialogues.jsonl"), str(out / "rejects.jsonl"), str(out / "report.json"))],
        dialogues=tmp_path / "d.jsonl",
        rejects=tmp_path / "r.jsonl",
        usage=tmp_path / "usage.json",
        report=tmp_path / "rep.json",
    )
    usage = json.loads((tmp_path / "usage.json").read_text())
    entries = load(out / "dialogues.jsonl") + load(out / "rejects.jsonl")
    assert usage["requests"] == sum(e["usage"]["requests"] for e in entries) > 0
    expected = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert usage["cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert info["passed"] == 5 and info["rejected"] == 2 and info["passed_by_rounds"] == {"1": 3, "2": 2}


def test_faults_do_not_change_the_result(reference, tmp_path, wheelhouse):
    batch, ref, _ = reference
    with ScriptedServer(dialogue_script, faults=True, slow_s=2.0) as server:
        out, _ = run_shard(tmp_path, "faulty", batch, make_config(server.url, wheelhouse))
        assert set(server.faulted) == {"429", "500", "slow", "truncated", "empty"}
        assert server.repeated == 0
    for name in ("dialogues.jsonl", "rejects.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_rerun_replays_from_cache_without_requests(reference, tmp_path, wheelhouse):
    batch, ref, _ = reference
    state = tmp_path / "state"
    with ScriptedServer(dialogue_script) as server:
        run_shard(tmp_path, "a", batch, make_config(server.url, wheelhouse), state=state)
        first = server.received
        (state / "progress.jsonl").unlink()  # forget finished dialogues: everything replays from the LLM cache
        out, _ = run_shard(tmp_path, "b", batch, make_config(server.url, wheelhouse), state=state)
        assert server.received == first
    assert (out / "dialogues.jsonl").read_bytes() == (ref / "dialogues.jsonl").read_bytes()


def test_shards_concatenate_to_the_batch(reference, tmp_path, wheelhouse):
    batch, ref, _ = reference
    parts = []
    with ScriptedServer(dialogue_script) as server:
        for s in range(3):
            out, _ = run_shard(tmp_path, f"s{s}", batch, make_config(server.url, wheelhouse), shard=s, shards=3)
            parts.append((str(out / "dialogues.jsonl"), str(out / "rejects.jsonl"), str(out / "report.json")))
    info = generate.merge(
        {"prices": {}},
        shards=parts,
        dialogues=tmp_path / "d.jsonl",
        rejects=tmp_path / "r.jsonl",
        usage=tmp_path / "u.json",
        report=tmp_path / "x",
    )
    assert (tmp_path / "d.jsonl").read_bytes() == (ref / "dialogues.jsonl").read_bytes()
    assert (tmp_path / "r.jsonl").read_bytes() == (ref / "rejects.jsonl").read_bytes()
    assert len(info["bad_seeds"]) == 2


def test_kill_9_midway_then_resume(reference, tmp_path, wheelhouse, tool_env):
    batch, ref, _ = reference
    out = tmp_path / "out"
    state = tmp_path / "state"
    with ScriptedServer(dialogue_script, pause_after=6) as server:
        cfg = make_config(server.url, wheelhouse)
        cfg_file = tmp_path / "cfg.json"
        cfg_file.write_text(json.dumps(cfg))
        cmd = [
            sys.executable, "-m", "aiev.cli", "generate", "--config", str(cfg_file), "--batch", str(batch),
            "--batch-index", "0", "--state-dir", str(state), "--dialogues", str(out / "dialogues.jsonl"),
            "--rejects", str(out / "rejects.jsonl"), "--report", str(out / "report.json"),
        ]  # fmt: skip
        proc = subprocess.Popen(cmd, env=tool_env, stderr=subprocess.PIPE, start_new_session=True)
        try:
            assert server.paused.wait(60), "generation never reached the pause"
            # wait until every answered request is in the client's cache, then kill -9 mid-batch
            deadline = time.time() + 30
            while time.time() < deadline:
                with sqlite3.connect(state / "llm_cache.sqlite") as db:
                    if db.execute("SELECT COUNT(*) FROM replies").fetchone()[0] >= server.successes:
                        break
                time.sleep(0.05)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
        assert not (out / "dialogues.jsonl").exists()
        server.resume()
        done = subprocess.run(cmd, env=tool_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert server.repeated == 0
    for name in ("dialogues.jsonl", "rejects.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


def test_a_model_that_keeps_answering_nothing_rejects_the_dialogue(tmp_path, wheelhouse):
    batch = write_batch(tmp_path / "b.jsonl", ["empty", "pass1"])
    with ScriptedServer(dialogue_script) as server:
        out, _ = run_shard(tmp_path, "e", batch, make_config(server.url, wheelhouse))
    (rejected,) = load(out / "rejects.jsonl")
    assert rejected["reason"] == "llm_empty_reply" and [m["role"] for m in rejected["messages"]] == ["user"]
    assert record_errors(rejected, "entry") == []
    assert [e["id"] for e in load(out / "dialogues.jsonl")] == ["t:1"]


def test_unreachable_endpoint_stops_before_spending(tmp_path, wheelhouse):
    batch = write_batch(tmp_path / "b.jsonl", ["pass1"])
    cfg = make_config("http://127.0.0.1:9/v1", wheelhouse)
    with pytest.raises(EndpointUnreachable, match="cannot reach"):
        run_shard(tmp_path, "x", batch, cfg)
    cfg["llm"]["teacher"]["api_key_env"] = "AIEV_TEST_MISSING_KEY"
    os.environ.pop("AIEV_TEST_MISSING_KEY", None)
    with pytest.raises(EndpointUnreachable, match="AIEV_TEST_MISSING_KEY"):
        run_shard(tmp_path, "y", batch, cfg)


def test_wrong_model_name_is_reported(tmp_path, wheelhouse):
    batch = write_batch(tmp_path / "b.jsonl", ["pass1"])
    with ScriptedServer(dialogue_script, model="other") as server:
        with pytest.raises(EndpointUnreachable, match="not served"):
            run_shard(tmp_path, "x", batch, make_config(server.url, wheelhouse))
        assert server.received == 0


def test_api_key_never_written(tmp_path, wheelhouse, monkeypatch):
    monkeypatch.setenv("AIEV_TEST_KEY", "sk-secret-value-123")
    batch = write_batch(tmp_path / "b.jsonl", ["pass1"])
    with ScriptedServer(dialogue_script) as server:
        cfg = make_config(server.url, wheelhouse)
        cfg["llm"]["teacher"]["api_key_env"] = "AIEV_TEST_KEY"
        run_shard(tmp_path, "k", batch, cfg)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-secret-value-123" not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("```python\ndef f():\n    return 1\n```\n```python\nassert f() == 1\n```", ("def f():", "assert f()")),
        ("```\ndef f():\n    return 1\n\nassert f() == 1\n```", ("def f():", "assert f() == 1")),
        (
            "```py\nimport os\n```\n```python\ndef f():\n    return 1\n```\n```python\nassert f() == 1\n```",
            ("import os", "assert f() == 1"),
        ),
        ("text only", "no_code"),
        ("```python\ndef f():\n    return 1\n```", "no_tests"),
        ("```json\n{}\n```", "no_code"),
    ],
)
def test_code_rules(reply, expected):
    got = extract_program(reply)
    if isinstance(expected, str):
        assert got.reason == expected
    else:
        assert got.solution.startswith(expected[0]) and got.tests.startswith(expected[1])
