"""The CPU-variant choice of the llama.cpp launcher, on any CPU: the best-scoring variant this CPU runs, never the
AMX one however it scores, a forced one only where it runs. (The real engine's choice on this CPU is tested in
tests/llm/test_engine_watch.py.)"""

from __future__ import annotations

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
