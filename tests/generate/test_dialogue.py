"""AIEV dialogues end to end: scripted OpenAI-compatible server (real HTTP, real openai client) + real sandbox."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
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

from aiev.codeblocks import extract_program
from aiev.config import load_config
from aiev.generate import merge as merging
from aiev.generate import shards as generate
from aiev.generate.steps import STEPS as GENERATE_STEPS
from aiev.llm.client import EndpointUnreachable
from aiev.records import record_errors
from aiev.runtime import code_modules
from aiev.steps import run_step
from tests.conftest import tool_or_skip
from tests.scripted_server import ScriptedServer, dialogue_script

SCENARIOS = ["pass1", "fix", "never", "pip", "nocode", "fix", "pass1"]


def bwrap_or_skip():
    from aiev.sandbox import SandboxError, get_sandbox

    try:
        get_sandbox("auto")
    except SandboxError as exc:  # bwrap installed and failing is a failure, not a skip
        tool_or_skip("bwrap", str(exc))


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


GENERATE = GENERATE_STEPS[0]


def run_shard(tmp: Path, name: str, batch: Path, cfg: dict, state: Path | None = None, **kw):
    out = tmp / name
    out.mkdir(exist_ok=True)
    cfg = {**cfg, "generate": {**cfg["generate"], "shards": kw.get("shards", 1)}}
    args = argparse.Namespace(batch=batch, batch_index=0, shard=kw.get("shard", 0), state_dir=state or out / "state",
                              dialogues=out / "dialogues.jsonl", rejects=out / "rejects.jsonl",
                              report=out / "report.json", stage="teaching")  # fmt: skip
    info = run_step(GENERATE, cfg, args)
    return out, info


def generate_args(cfg_file: Path, batch: Path, state: Path, out: Path) -> list[str]:
    """`aiev generate` arguments for one shard written under ``out``."""
    return [
        "generate", "--config", str(cfg_file), "--batch", str(batch), "--batch-index", "0", "--state-dir", str(state),
        "--dialogues", str(out / "dialogues.jsonl"), "--rejects", str(out / "rejects.jsonl"),
        "--report", str(out / "report.json"),
    ]  # fmt: skip


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x]


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
    info = merging.run(
        {"prices": {"scripted": {"prompt_per_mtok": 1.0, "completion_per_mtok": 2.0}}},
        argparse.Namespace(
            shard=[(str(out / "dialogues.jsonl"), str(out / "rejects.jsonl"), str(out / "report.json"))],
            dialogues=tmp_path / "d.jsonl",
            rejects=tmp_path / "r.jsonl",
            usage=tmp_path / "usage.json",
        ),
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
    info = merging.run(
        {"prices": {}},
        argparse.Namespace(
            shard=parts, dialogues=tmp_path / "d.jsonl", rejects=tmp_path / "r.jsonl", usage=tmp_path / "u.json"
        ),
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
        cmd = [sys.executable, "-m", "aiev", *generate_args(cfg_file, batch, state, out)]
        proc = subprocess.Popen(cmd, env=tool_env, stderr=subprocess.PIPE, start_new_session=True)
        try:
            assert server.paused.wait(60), "generation never reached the pause"
            # wait until every answered request is in the client's cache, then kill -9 mid-batch
            deadline = time.time() + 30
            while time.time() < deadline:
                with sqlite3.connect(state / "llm_cache.sqlite") as db:
                    if db.execute("SELECT COUNT(*) FROM raw").fetchone()[0] >= server.successes:
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


def test_a_resume_with_other_settings_never_mixes_them(reference, tmp_path, wheelhouse, tool_env):
    """kill -9 mid-batch, change a setting that shapes entries, re-run: a fresh store, the old one set aside and
    reported, every entry of the new settings; the unchanged requests still come from the cache."""
    batch, _, _ = reference
    out, state = tmp_path / "out", tmp_path / "state"
    with ScriptedServer(dialogue_script, pause_after=6) as server:
        cfg = make_config(server.url, wheelhouse)
        cfg_file = tmp_path / "cfg.json"
        cfg_file.write_text(json.dumps(cfg))
        cmd = [sys.executable, "-m", "aiev", *generate_args(cfg_file, batch, state, out)]
        proc = subprocess.Popen(cmd, env=tool_env, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            assert server.paused.wait(60)
            deadline = time.time() + 90  # a loaded machine runs the first passing program slowly
            while time.time() < deadline and not (state / "progress.jsonl").read_text().strip():
                time.sleep(0.05)  # at least one dialogue finished under the first settings
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait(30)
        first = json.loads((state / "progress.fingerprint.json").read_text())
        finished_before = len((state / "progress.jsonl").read_text().splitlines())
        assert finished_before >= 1
        server.resume()
        cfg["sandbox"]["timeout_s"] = 25  # shapes entries (what passes), not the requests already made
        cfg_file.write_text(json.dumps(cfg))
        done = subprocess.run(cmd, env=tool_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert server.repeated == 0  # every request answered before the kill came from the cache
    report = json.loads((out / "report.json").read_text())
    stale = report["stale_store"]
    assert stale["changed"] == ["sandbox.timeout_s"] and stale["fingerprint"] == first["fingerprint"]
    assert stale["entries"] == finished_before
    assert len((Path(stale["path"]) / "progress.jsonl").read_text().splitlines()) == finished_before
    assert report["fingerprint"] != first["fingerprint"] and report["settings"]["sandbox"]["timeout_s"] == 25
    entries = load(out / "dialogues.jsonl") + load(out / "rejects.jsonl")
    assert len(entries) == len(SCENARIOS)
    assert {e["provenance"]["fingerprint"] for e in entries} == {report["fingerprint"]}
    assert "settings changed since the last run (sandbox.timeout_s)" in done.stderr


@pytest.mark.parametrize("moment", ["probe", "dialogue"])
def test_kill_9_of_a_generation_job_while_a_sandbox_starts_leaves_no_process(tmp_path, wheelhouse, tool_env, moment):
    """The job's start-up probe or a dialogue's first run: its sandbox init is held (SIGSTOP) before its release,
    then the job's process group gets SIGKILL. 3 s later no process of the job is left."""
    from tests.sandbox.test_tracking import assert_all_gone, children, cmdline, start_time, tree, wait_for

    bwrap_or_skip()
    batch = write_batch(tmp_path / "b.jsonl", ["pass1"])
    with ScriptedServer(dialogue_script) as server:
        cfg_file = tmp_path / "cfg.json"
        cfg_file.write_text(json.dumps(make_config(server.url, wheelhouse)))
        cmd = [
            sys.executable, "-m", "aiev", "generate", "--config", str(cfg_file), "--batch", str(batch),
            "--state-dir", str(tmp_path / "state"), "--dialogues", str(tmp_path / "d.jsonl"),
            "--rejects", str(tmp_path / "r.jsonl"), "--report", str(tmp_path / "rep.json"),
        ]  # fmt: skip
        job = subprocess.Popen(cmd, env=tool_env, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            seen: set[int] = set()

            def held_init():
                for p, _ in tree(job.pid):
                    if cmdline(p).startswith("/usr/bin/bwrap") or cmdline(p).startswith("bwrap"):
                        for k in children(p):
                            if k not in seen and "bwrap" in cmdline(k).split(" ")[0]:
                                seen.add(k)
                                os.kill(k, signal.SIGSTOP)
                                return k
                return None

            init = wait_for(held_init, step=0.0005)
            if moment == "dialogue":  # let the probe go, hold the first dialogue's sandbox
                os.kill(init, signal.SIGCONT)
                init = wait_for(held_init, step=0.0005)
            procs = [*tree(job.pid), (init, start_time(init))]
            os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)
            assert_all_gone([(p, s) for p, s in procs if s is not None], within_s=3.0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(30)


KILL_AT_ARRIVAL = """
import os, signal, sys
from aiev.llm import client
real, calls = client.parse_reply, []
def parse_then_die(body, *rest):
    calls.append(body)
    with open(os.environ["AIEV_TEST_ARRIVED"], "a") as fh:  # the replies that reached the client
        fh.write(__import__("json").loads(body)["id"] + "\\n")
    if len(calls) == int(os.environ["AIEV_TEST_KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 the moment the reply arrived, before anything reads it
    return real(body, *rest)
client.parse_reply = parse_then_die
from aiev.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("kill_at", [1, 4])
def test_a_reply_that_arrived_is_never_paid_again(reference, tmp_path, wheelhouse, tool_env, kill_at):
    """kill -9 between the arrival of a reply and its first use: the re-run finds it stored, asks nothing twice."""
    batch, ref, _ = reference
    out, state = tmp_path / "out", tmp_path / "state"
    with ScriptedServer(dialogue_script) as server:
        cfg_file = tmp_path / "cfg.json"
        cfg_file.write_text(json.dumps(make_config(server.url, wheelhouse)))
        args = generate_args(cfg_file, batch, state, out)
        arrived = tmp_path / "arrived.txt"
        env = dict(tool_env, AIEV_TEST_KILL_AT=str(kill_at), AIEV_TEST_ARRIVED=str(arrived))
        killed = subprocess.run([sys.executable, "-c", KILL_AT_ARRIVAL, *args], env=env, capture_output=True)
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
        answered = server.successes
        assert answered >= kill_at
        done = subprocess.run([sys.executable, "-m", "aiev", *args], env=tool_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        ids = arrived.read_text().split()
        assert len(ids) == kill_at
        # Every reply that reached the client was answered once only. (Replies the server sent while the client
        # was being killed, which it never read, are asked again: they never arrived.)
        paid = {key[:12]: n for key, n in server.served.items()}
        assert [paid[i.removeprefix("chatcmpl-")] for i in ids] == [1] * kill_at
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


def test_a_pass_means_the_tests_ran(tmp_path, wheelhouse):
    """The layout instruct models write (``import unittest`` on line 1) passes at once; a TestCase nothing runs is
    run by the interpreter, so its failing test fails the round (not a silent exit 0 kept as passed); tests
    that only print are never a pass (``tests_not_run``)."""
    batch = write_batch(tmp_path / "b.jsonl", ["importsfirst", "unrun", "printonly"])
    with ScriptedServer(dialogue_script) as server:
        out, _ = run_shard(tmp_path, "v", batch, make_config(server.url, wheelhouse))
    passed = {e["id"]: e for e in load(out / "dialogues.jsonl")}
    rejected = {e["id"]: e for e in load(out / "rejects.jsonl")}
    assert sorted(passed) == ["t:0", "t:1"] and sorted(rejected) == ["t:2"]
    e = passed["t:0"]
    assert e["rounds"] == 1 and e["solution"].startswith("import unittest\n\ndef add")
    assert e["tests"].startswith("class TestAdd") and e["messages"][2]["checks"]["assert_calls"] == 2
    e = passed["t:1"]
    first, second = e["messages"][2], e["messages"][5]
    assert first["exit_code"] == 1 and "AssertionError: -1 != 5" in first["stderr"]
    assert "the interpreter ran them" in first["content"] and first["checks"]["ran"] == ["unittest"]
    assert e["rounds"] == 2 and second["exit_code"] == 0 and second["checks"]["tests_run"] == 2
    e = rejected["t:2"]
    assert e["reason"] == "tests_not_run" and e["rounds"] == 3
    assert all(m["exit_code"] == 0 and "no test ran" in m["content"] for m in e["messages"] if m["role"] == "execution")
    for e in [*passed.values(), *rejected.values()]:
        assert record_errors(e, "entry") == [], e["id"]


def test_recorded_replies_are_read_as_expected():
    """Programmer replies of real runs (Gemma-3-270M in the demo) and the layouts instruct models write, each
    with what the code rules make of it now (``expected``) and made of it before (``old``):
    benchmarks/code_rules.py prints the shares."""
    rows = load(Path(__file__).resolve().parents[1] / "data" / "replies" / "programmer_replies.jsonl")
    assert len(rows) >= 20
    for row in rows:
        got = extract_program(row["reply"])
        assert getattr(got, "reason", "program") == row["expected"], row["reply"][:200]
    instruct = [r for r in rows if r["origin"].startswith("constructed")]
    assert sum(r["old"] == "no_tests" for r in instruct) >= 4 and not any(r["expected"] == "no_tests" for r in instruct)


@pytest.mark.parametrize(
    ("code", "solution", "tests"),
    [
        ("import unittest\nimport math\n\ndef f():\n    return 1\n\n# tests\nclass T(unittest.TestCase):\n    pass\n",
         "import unittest\nimport math\n\ndef f():\n    return 1", "# tests\nclass T(unittest.TestCase):"),
        ("def f():\n    return 1\n\nimport unittest\n\nclass TestF(unittest.TestCase):\n    pass\n",
         "def f():\n    return 1", "import unittest\n\nclass TestF"),
        ("import pytest\ndef f():\n    return 1\n@pytest.mark.skip\ndef test_f():\n    assert f() == 1\n",
         "import pytest\ndef f():\n    return 1", "@pytest.mark.skip\ndef test_f"),
        ("import unittest\ndef f():\n    return (\nclass TestF(unittest.TestCase):\n    pass\n",
         "import unittest\ndef f():\n    return (", "class TestF"),  # does not parse: split by its text
    ],
)  # fmt: skip
def test_one_block_splits_where_its_tests_begin(code, solution, tests):
    got = extract_program(f"```python\n{code}```")
    assert (got.solution, got.tests[: len(tests)]) == (solution, tests)
    assert got.source.split("\n")[got.tests_line - 1].startswith(tests.split("\n")[0])


def test_a_block_without_tests_is_told_what_it_holds():
    got = extract_program("```python\nimport os\n\ndef f():\n    return 1\n\nclass Box:\n    pass\n\nprint(f())\n```")
    assert got.reason == "no_tests" and "`f`, `Box` and 1 other top-level statement" in got.message
    only = extract_program("```python\nimport unittest\n\nclass TestF(unittest.TestCase):\n    pass\n```")
    assert only.reason == "no_solution"


def test_an_endpoint_that_dies_mid_run_stops_the_shard_in_seconds_keeping_what_finished(tmp_path, wheelhouse):
    """The server goes away after some dialogues: the shard ends with EndpointDown within seconds (the demo's
    backoff, not the test's short one), its finished dialogues stay in the progress store, and a re-run against
    a server that is back finishes only the rest."""
    import threading

    from aiev.llm.client import EndpointDown

    batch = write_batch(tmp_path / "b.jsonl", ["pass1"] * 8)
    state = tmp_path / "state"
    progress = state / "progress.jsonl"
    stopped: list[float] = []
    with ScriptedServer(dialogue_script, latency_s=0.3) as server:
        cfg = make_config(server.url, wheelhouse, concurrent_dialogues=1)
        cfg["llm"].update(backoff_s=1.0, backoff_max_s=60.0, concurrency=1)

        def stop_after_three() -> None:
            while not progress.exists() or len(progress.read_text().splitlines()) < 3:
                time.sleep(0.05)
            server.die()
            stopped.append(time.monotonic())

        threading.Thread(target=stop_after_three, daemon=True).start()
        with pytest.raises(EndpointDown, match=r"refused or dropped 8 connections in a row") as exc:
            run_shard(tmp_path, "x", batch, cfg, state=state)
    assert time.monotonic() - stopped[0] < 15
    kept = len(progress.read_text().splitlines())
    assert kept >= 3 and f"{kept} of 8 dialogue(s) of this shard are finished and kept in {state}" in str(exc.value)
    report = json.loads((tmp_path / "x" / "report.json").read_text())
    assert "refused" in report["endpoint_down"]
    with ScriptedServer(dialogue_script) as back:
        cfg["llm"]["teacher"]["base_url"] = back.url
        _, info = run_shard(tmp_path, "y", batch, cfg, state=state)
        assert info["this_run"]["dialogues"] == 8 - kept and info["passed"] == 8


def test_the_fingerprint_covers_every_module_the_engine_loads(tmp_path):
    """The engine's code hash is taken over the modules it imports, found from their source: every aiev module
    that importing the dialogue engine loads is in it (lazy imports inside functions add more), and so is the
    harness, which runs as a file beside each program."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, aiev.generate.dialogue as d; "
         "print(' '.join(m for m in sys.modules if m.startswith('aiev.')))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    covered = set(code_modules(generate.ENGINE_ROOTS))
    packages = {m for m in loaded if Path(importlib.util.find_spec(m).origin).name == "__init__.py"}
    assert set(loaded) - packages <= covered, set(loaded) - packages - covered
    assert {"aiev.interpreter", "aiev.codeblocks", "aiev.llm.agents", "aiev.sandbox.harness"} <= covered
    assert not {"aiev.generate.shards", "aiev.runtime", "aiev.report.summary"} & covered  # not the engine
