"""pass@1 on a test split, for real: a scripted OpenAI-compatible server plays the model, programs run in the
sandbox. The entry's own tests judge the model's solution (the model's tests are dropped), a reply without code
fails, bad rows are counted, and a re-run asks the model nothing again."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from aiev.config import load_config
from aiev.evaluate.steps import STEPS
from aiev.steps import run_step
from tests.conftest import write_jsonl
from tests.generate.test_dialogue import bwrap_or_skip
from tests.scripted_server import BUGGY, SOLUTION, TESTS, ScriptedServer, _block

ENTRY_TESTS = TESTS


def evaluate(cfg: dict, *, role: str, batch: int | None = None, **paths) -> dict:
    """The ``evaluate`` step as the CLI runs it (settings built from the config, the summary written)."""
    (step,) = STEPS
    return run_step(step, cfg, argparse.Namespace(role=role, batch_index=batch, **paths))


def model(messages: list[dict]) -> str:
    problem = messages[-1]["content"]
    if "CASE=right" in problem:  # a right solution with wrong tests of its own: the entry's tests judge it
        return _block(SOLUTION) + _block("assert add(2, 2) == 5\n")
    if "CASE=wrong" in problem:
        return _block(BUGGY) + _block("assert add(1, 1) == 0\n")
    if "CASE=solution-only" in problem:  # one block without tests: all of it is the solution
        return "Here you go:\n" + _block(SOLUTION)
    return "I would add the two numbers."


def tasks(path: Path) -> Path:
    cases = ("right", "wrong", "solution-only", "prose")
    rows = [{"id": f"t:{case}", "problem": f"Write add(a, b). CASE={case}", "tests": ENTRY_TESTS,
             "solution": SOLUTION, "passed": True} for case in cases]  # fmt: skip
    rows.append({"id": "t:bad", "problem": "no tests here"})
    return write_jsonl(path, rows)


def test_pass_at_1_scores_the_models_solution_with_the_entrys_tests(tmp_path):
    bwrap_or_skip()
    test = tasks(tmp_path / "test.jsonl")
    with ScriptedServer(model) as server:
        cfg = load_config({"llm": {"teacher": {"base_url": server.url, "model": "scripted", "serve": None}},
                           "evaluate": {"sandbox_workers": 1}})  # fmt: skip
        args = {"role": "teacher", "test": test, "results": tmp_path / "r.jsonl", "summary": tmp_path / "s.json",
                "state_dir": tmp_path / "state", "batch": 3}  # fmt: skip
        report = evaluate(cfg, **args)
        asked = len(server.requests)
        again = evaluate(cfg, **args)
        assert len(server.requests) == asked == 4  # the re-run asked nothing
        # as after a kill -9: one task scored, the next one's line torn, the cache lost -> 3 tasks asked again
        progress = tmp_path / "state" / "results.jsonl"
        lines = progress.read_text().splitlines(keepends=True)
        progress.write_text(lines[0] + lines[1][:25])
        (tmp_path / "state" / "llm_cache.sqlite").unlink()
        resumed = evaluate(cfg, **args)
        assert len(server.requests) == asked + 3 and resumed["passed"] == report["passed"]
        assert len(progress.read_text().splitlines()) == 4  # the torn line is gone, no row glued to it
        # the progress lost but the cache kept: only the task whose reply was in the lost cache is asked again
        progress.unlink()
        assert evaluate(cfg, **args)["passed"] == report["passed"]
        assert len(server.requests) == asked + 4
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert {k: r["passed"] for k, r in rows.items()} == {
        "t:right": True, "t:wrong": False, "t:solution-only": True, "t:prose": False,
    }  # fmt: skip
    assert rows["t:right"]["solution"] == SOLUTION.rstrip("\n") and rows["t:prose"]["reason"] == "no_code"
    assert rows["t:wrong"]["reason"] == "failed" and "AssertionError" in rows["t:wrong"]["execution"]["stderr"]
    assert (report["n"], report["passed"], report["pass_at_1"]) == (4, 2, 0.5)
    assert report["failed_by_reason"] == {"failed": 1, "no_code": 1} and report["batch"] == 3
    assert report["model"] == "scripted" and report["sampling"]["temperature"] == 0.0
    assert [b["id"] for b in report["bad_tasks"]] == ["t:bad"] and report["tokens"]["completion"] > 0
    assert {k: again[k] for k in ("n", "passed", "pass_at_1")} == {k: report[k] for k in ("n", "passed", "pass_at_1")}
    # the programmer was asked the problem as its first turn, greedy
    first = server.requests[0]
    assert first["messages"][-1]["content"].startswith("Write add(a, b).") and first["temperature"] == 0.0


def test_an_empty_test_split_gives_an_undefined_score(tmp_path):
    (tmp_path / "test.jsonl").write_text("")
    cfg = load_config({"llm": {"teacher": {"base_url": "http://127.0.0.1:9/v1", "serve": None}}})
    report = evaluate(cfg, role="teacher", test=tmp_path / "test.jsonl", results=tmp_path / "r.jsonl",
                       summary=tmp_path / "s.json", state_dir=tmp_path / "state")  # fmt: skip
    assert report["n"] == 0 and report["pass_at_1"] is None
    assert (tmp_path / "r.jsonl").read_text() == ""


def test_the_role_must_be_teacher_or_student(tmp_path):
    with pytest.raises(ValueError, match="role must be one of"):
        evaluate(load_config({}), role="judge", test="t", results="r", summary="s", state_dir=tmp_path)


def test_the_packages_the_entry_installed_are_there_for_the_model_too(tmp_path):
    """An entry whose passing round installed a package: its tests need it, and it is installed (offline, from a
    local wheelhouse) before the model's solution runs; a package that cannot be installed fails the task."""
    bwrap_or_skip()
    from tests.generate.test_dialogue import tiny_wheel

    tiny_wheel(tmp_path / "wheels")
    tests = "import aievtinypkg\nassert add(2, 3) == aievtinypkg.plus(2, 3)\n"
    executed = {"role": "execution", "content": "ok", "exit_code": 0, "stdout": "", "stderr": "",
                "install": {"exit_code": 0, "specs": ["aievtinypkg"], "stdout": "", "stderr": ""}}  # fmt: skip
    rows = [{"id": f"t:{k}", "problem": f"Write add(a, b). CASE=right {k}", "tests": tests, "passed": True,
             "messages": [{"role": "user", "content": "p"}, executed if k == "pkg" else
                          {**executed, "install": {**executed["install"], "specs": ["nosuchpkg-aiev"]}}]}
            for k in ("pkg", "missing")]  # fmt: skip
    write_jsonl(tmp_path / "test.jsonl", rows)
    with ScriptedServer(model) as server:
        cfg = load_config({"llm": {"teacher": {"base_url": server.url, "model": "scripted", "serve": None}},
                           "sandbox": {"install": {"find_links": str(tmp_path / "wheels")}}})  # fmt: skip
        report = evaluate(cfg, role="teacher", test=tmp_path / "test.jsonl", results=tmp_path / "r.jsonl",
                           summary=tmp_path / "s.json", state_dir=tmp_path / "state")  # fmt: skip
    rows = {r["id"]: r for r in map(json.loads, (tmp_path / "r.jsonl").read_text().splitlines())}
    assert rows["t:pkg"]["passed"] is True
    assert rows["t:missing"]["passed"] is False and rows["t:missing"]["reason"] == "install_failed"
    assert report["failed_by_reason"] == {"install_failed": 1}
