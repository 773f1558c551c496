"""Base models: the completion mode (few-shot templates, stop sequences) against the scripted server, the
templates' rendering (golden files), and the real embedded-default engine where it is installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from aiev.llm.agents import CODE_STOP, TEXT_STOP, fill, load_prompts, prompts_sha256
from aiev.records import record_errors
from tests.generate.test_dialogue import bwrap_or_skip, generate_args, load, make_config, run_shard, write_batch
from tests.scripted_server import ScriptedServer, completion_dialogue_script, dialogue_script

GOLDEN = Path(__file__).parent / "golden"
SCENARIOS = ["pass1", "fix", "never", "nocode", "pass1"]
CODE_PROMPT_ENDS = ("### Solution\n```python\n", "### Fixed solution\n```python\n")


def completion_config(url: str, wheelhouse: Path | None, **gen) -> dict:
    cfg = make_config(url, wheelhouse, **gen)
    cfg["llm"]["teacher"]["mode"] = "completion"
    return cfg


@pytest.fixture(scope="module")
def completion_run(tmp_path_factory, wheelhouse):
    bwrap_or_skip()
    tmp = tmp_path_factory.mktemp("completion")
    batch = write_batch(tmp / "batch.jsonl", SCENARIOS)
    with ScriptedServer(dialogue_script, completion_script=completion_dialogue_script) as server:
        out, info = run_shard(tmp, "ref", batch, completion_config(server.url, wheelhouse))
        requests = list(server.requests)
        paths = dict(server.paths)
    return batch, out, info, requests, paths


def test_completion_mode_runs_the_dialogue_on_the_completions_endpoint(completion_run):
    _, out, info, requests, paths = completion_run
    assert paths == {"completion": len(requests)}  # never the chat endpoint
    passed = {e["id"]: e for e in load(out / "dialogues.jsonl")}
    rejected = {e["id"]: e for e in load(out / "rejects.jsonl")}
    assert sorted(passed) == ["t:0", "t:1", "t:4"]
    assert passed["t:0"]["rounds"] == 1 and passed["t:1"]["rounds"] == 2  # t:1 passes after a feedback round
    # the template opens the fence, so prose lands in a Python block: "no tests" rather than "no code"
    assert rejected["t:2"]["reason"] == "max_rounds" and rejected["t:3"]["reason"] == "no_tests"
    for e in [*passed.values(), *rejected.values()]:
        assert record_errors(e, "entry") == []
        assert e["provenance"]["mode"] == "completion"
        assert e["provenance"]["prompts_sha256"] == prompts_sha256(load_prompts("completion"))
    fix = passed["t:1"]
    assert [(m["role"], m["agent"]) for m in fix["messages"]] == [
        ("user", "questioner"),
        ("assistant", "programmer"),
        ("execution", "interpreter"),
        ("user", "questioner"),
        ("assistant", "programmer"),
        ("execution", "interpreter"),
    ]  # fmt: skip  (the same shape as a chat dialogue)
    answer = fix["messages"][4]["content"]
    assert answer.startswith("```python\ndef add(a, b):\n    return a + b\n```\n### Tests\n```python\n")
    assert "### End" not in answer and "### Problem" not in answer  # cut at the template's next section
    assert info["settings"]["mode"] == "completion"


def test_completion_requests_use_the_templates_and_stop_sequences(completion_run):
    _, _, _, requests, _ = completion_run
    kinds = {"problem": 0, "solve": 0, "diagnose": 0, "fix": 0}
    for req in requests:
        prompt, stop = req["prompt"], req["stop"]
        if prompt.endswith("### Problem\n"):
            kinds["problem"] += 1
            assert stop == TEXT_STOP and prompt.startswith("Each code snippet below")
        elif prompt.endswith("### Explanation\n"):
            kinds["diagnose"] += 1
            assert stop == TEXT_STOP and "### Result\n" in prompt
        elif prompt.endswith("### Fixed solution\n```python\n"):
            kinds["fix"] += 1
            assert stop == CODE_STOP and "### Explanation\n" in prompt
        else:
            assert prompt.endswith("### Solution\n```python\n") and stop == CODE_STOP
            kinds["solve"] += 1
        assert req["temperature"] == 0.0 and req["max_tokens"] > 0
    # identical prompts are asked once (the two pass1 problems read alike); a dialogue's later rounds go on from
    # its earlier ones, so "never" and "nocode" ask a new diagnosis in each of their 2 failed rounds, "fix" in 1
    assert kinds == {"problem": 5, "solve": 4, "diagnose": 5, "fix": 5}
    # after its problem, a dialogue is one growing text: a diagnosis goes on from the code prompt before it and
    # that prompt's reply, a fix from its diagnosis prompt and reply, so the engine's cache serves all but the end
    asked = [r["prompt"] for r in requests]
    for i, prompt in enumerate(asked):
        if prompt.endswith("### Fixed solution\n```python\n"):
            diagnosis = prompt.rsplit("### Explanation\n", 1)[0] + "### Explanation\n"
            assert diagnosis in asked[:i]
        if prompt.endswith("### Explanation\n"):
            code_prompts = [p for p in asked[:i] if prompt.startswith(p) and p.endswith(CODE_PROMPT_ENDS)]
            assert code_prompts, "a diagnosis goes on from the code prompt before it"
            reply = prompt[len(max(code_prompts, key=len)) :].split("### Result\n", 1)[0]
            assert reply.startswith(("def add", "I would add"))  # the programmer's reply, as the model wrote it


def test_completion_replies_are_cached(completion_run, tmp_path, wheelhouse):
    batch, ref, _, _, _ = completion_run
    state = tmp_path / "state"
    with ScriptedServer(dialogue_script, completion_script=completion_dialogue_script) as server:
        run_shard(tmp_path, "a", batch, completion_config(server.url, wheelhouse), state=state)
        first = server.received
        (state / "progress.jsonl").unlink()  # every dialogue replays from the cache
        out, _ = run_shard(tmp_path, "b", batch, completion_config(server.url, wheelhouse), state=state)
        assert server.received == first
    assert (out / "dialogues.jsonl").read_bytes() == (ref / "dialogues.jsonl").read_bytes()


def test_completion_kill_9_then_resume_pays_nothing_twice(completion_run, tmp_path, wheelhouse, tool_env):
    from tests.generate.test_dialogue import KILL_AT_ARRIVAL

    batch, ref, _, _, _ = completion_run
    out, state = tmp_path / "out", tmp_path / "state"
    with ScriptedServer(dialogue_script, completion_script=completion_dialogue_script) as server:
        cfg_file = tmp_path / "cfg.json"
        cfg_file.write_text(json.dumps(completion_config(server.url, wheelhouse)))
        args = generate_args(cfg_file, batch, state, out)
        arrived = tmp_path / "arrived.txt"
        env = dict(tool_env, AIEV_TEST_KILL_AT="5", AIEV_TEST_ARRIVED=str(arrived))
        killed = subprocess.run([sys.executable, "-c", KILL_AT_ARRIVAL, *args], env=env, capture_output=True)
        assert killed.returncode == -signal.SIGKILL
        done = subprocess.run([sys.executable, "-m", "aiev", *args], env=tool_env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        paid = {key[:12]: n for key, n in server.served.items()}
        assert [paid[i.removeprefix("cmpl-")] for i in arrived.read_text().split()] == [1] * 5
    for name in ("dialogues.jsonl", "rejects.jsonl"):
        assert (out / name).read_bytes() == (ref / name).read_bytes()


# ------------------------------------------------------------------------------------ golden templates

RENDER = {
    "completion_problem": {"seed": "def twice(x):\n    return 2 * x"},
    "completion_solve": {"problem": "Write a function `twice(x)` that returns 2 * x. For example, `twice(2)` is `4`."},
    "completion_diagnose": {"result": "exit code 1\nstderr:\nAssertionError"},
    "completion_fix": {"diagnosis": "It returns x, not 2 * x."},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RENDER))
def test_template_rendering_golden(name):
    """Each template renders to exactly the committed text (AIEV_UPDATE_GOLDEN=1 rewrites after a deliberate
    change; the change then shows in review, and in every new entry's prompts_sha256)."""
    rendered = fill(load_prompts("completion")[name], **RENDER[name])
    golden = GOLDEN / f"{name}.txt"
    if os.environ.get("AIEV_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    assert rendered == golden.read_text(encoding="utf-8")
    assert "{" + next(iter(RENDER[name])) + "}" not in rendered
    assert rendered.endswith(("### Problem\n", "### Explanation\n", "```python\n"))


# ------------------------------------------------------------------------------------------ real engine

#: Self-contained stdlib functions, whole (the embedded default's kind of seed): lib2to3 fix_operator.invocation,
#: email._header_value_parser.quote_string, http.cookiejar.strip_quotes, and two more.
REAL_SEEDS = [
    "def invocation(s):\n    def dec(f):\n        f.invocation = s\n        return f\n    return dec",
    "def quote_string(value):\n    return '\"'+str(value).replace('\\\\', '\\\\\\\\').replace('\"', r'\\\"')+'\"'",
    "def strip_quotes(text):\n    if text.startswith('\"'):\n        text = text[1:]\n    if text.endswith('\"'):\n"
    "        text = text[:-1]\n    return text",
    "def _is_even(n):\n    return n % 2 == 0",
    "def clamp(value, low, high):\n    return max(low, min(high, value))",
]
REAL_GOLDEN = GOLDEN / "real_engine_outcomes.json"


def test_real_engine_generates_the_recorded_outcomes(repo, tool_env, tmp_path):
    """The embedded default for real, as the workflow runs it: `aiev serve --role teacher` serves the shipped
    GGUF with the portable llama.cpp build and `aiev generate` runs the dialogues in the sandbox, at temperature 0
    with seed 0 and llama.cpp's plain AVX2 variant forced (one thread), so that any x86-64 machine with AVX2
    computes the same tokens. Each seed's outcome (passed, rounds, reason) equals the one recorded from this
    engine's own output (AIEV_UPDATE_GOLDEN=1 records it again), whichever it is: not seeds chosen for passing.
    CI installs the engine: a skip there fails the run."""
    from tests.llm.test_engine_watch import real_engine

    real_engine()
    bwrap_or_skip()
    import yaml

    if " avx2 " not in Path("/proc/cpuinfo").read_text():
        pytest.skip("the recorded outcomes are of llama.cpp's AVX2 variant, which this CPU cannot run")
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["llm"]["sampling"]["temperature"] = 0.0
    cfg["generate"]["shards"] = 1
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    rows = [{"id": f"real:{i}", "source": "real", "kind": "snippet", "text": text, "reference": None,
             "provenance": {"type": "stdlib"}} for i, text in enumerate(REAL_SEEDS)]  # fmt: skip
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    out.mkdir()
    env = dict(tool_env, AIEV_LLAMA_CPU_VARIANT="haswell")
    done = subprocess.run(
        ["aiev", "serve", "--role", "teacher", "--config", str(cfg_file), "--log", str(tmp_path / "engine.log"), "--",
         "aiev", *generate_args(cfg_file, batch, tmp_path / "state", out)],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "llama.cpp CPU backend haswell" in (tmp_path / "engine.log").read_text()
    entries = load(out / "dialogues.jsonl") + load(out / "rejects.jsonl")
    outcomes = sorted(({"id": e["seed_id"], "passed": e["passed"], "rounds": e["rounds"], "reason": e.get("reason")}
                       for e in entries), key=lambda o: o["id"])  # fmt: skip
    for e in entries:
        assert record_errors(e, "entry") == []
        if e["passed"]:
            assert e["tests"] and "assert" in e["tests"]
    # the engine's own prompt-cache figures, per run, in the shard's report: every prompt token it was sent is
    # either served from its cache or evaluated, and the gate's order made the cache serve some of them
    run = json.loads((out / "report.json").read_text())["this_run"]
    engine = run["engine_cache"]
    # (the engine also counts the requests the client retried, e.g. an empty reply)
    assert engine["requests"] >= run["requests"] and engine["prompt_tokens"] >= run["prompt_tokens"]
    assert engine["prompt_tokens_cached"] + engine["prompt_tokens_evaluated"] == engine["prompt_tokens"]
    assert engine["prompt_tokens_cached"] > 0 and run["order"]["sent"] == run["requests"]
    if os.environ.get("AIEV_UPDATE_GOLDEN"):
        REAL_GOLDEN.write_text(json.dumps(outcomes, indent=1) + "\n", encoding="utf-8")
    assert outcomes == json.loads(REAL_GOLDEN.read_text(encoding="utf-8"))
