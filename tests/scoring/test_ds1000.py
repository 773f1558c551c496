"""DS-1000 in the sandbox: the reference answers of one problem per library pass where the library imports, a
library that does not import is reported skipped with the reason (never scored as zero), a wrong answer fails,
answers are cut the way DS-1000 cuts them, and the report carries the library versions it was scored with."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from aiev.config import load_config
from aiev.scoring import ds1000
from aiev.scoring.samplefile import BenchmarkError
from tests.conftest import SHARED_BENCHMARKS, write_jsonl
from tests.generate.test_dialogue import bwrap_or_skip
from tests.scoring import sample
from tests.scoring import score as score_step

EXCERPT = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "ds1000" / "ds1000-libraries.jsonl"


def tasks() -> list[dict]:
    return ds1000.tasks_of(EXCERPT)


def score(tmp_path: Path, answers: dict[str, str], **section) -> dict:
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": k, "completion": v} for k, v in answers.items()])
    cfg = load_config({"benchmark": {"data": {"ds1000": str(EXCERPT)}, "workers": 2, **section}})
    return score_step(cfg, suite="ds1000", samples=tmp_path / "s.jsonl", output=tmp_path / "o.json")


def test_references_pass_where_the_library_imports_and_the_rest_are_skipped_with_the_reason(tmp_path):
    bwrap_or_skip()
    report = score(tmp_path, {t["task_id"]: t["reference_code"] for t in tasks()})
    assert json.loads((tmp_path / "o.json").read_text()) == report
    importable = {lib for lib in ds1000.LIBRARIES if all(importlib.util.find_spec(m) for m in ds1000.modules(lib))}
    assert set(report["skipped_libraries"]) == set(ds1000.LIBRARIES) - importable
    for t in tasks():
        lib = t["metadata"]["library"]
        assert report["per_task"][t["task_id"]] == ("pass" if lib in importable else "skipped"), report["failures"]
        if lib not in importable:
            assert report["per_library"][lib]["version"] is None
            assert report["per_library"][lib]["skipped_because"].startswith("ModuleNotFoundError")
        else:
            assert report["per_library"][lib]["version"] == importlib.import_module(ds1000.LIBRARIES[lib]).__version__
    assert report["scored"] == len(importable) and report["pass@1"] == 1.0
    assert report["complete"] is (importable == set(ds1000.LIBRARIES))


def test_a_wrong_answer_fails_a_missing_one_is_counted_and_failures_are_scored_twice(tmp_path):
    bwrap_or_skip()
    numpy = next(t for t in tasks() if t["metadata"]["library"] == "Numpy")
    pandas = next(t for t in tasks() if t["metadata"]["library"] == "Pandas")
    report = score(tmp_path, {numpy["task_id"]: "result = None\n"}, limit=2)
    assert list(report["per_task"]) == [pandas["task_id"], numpy["task_id"]]
    assert report["per_task"] == {pandas["task_id"]: "fail", numpy["task_id"]: "fail"}
    assert report["missing"] == [pandas["task_id"]] and report["pass@1"] == 0.0
    assert "AssertionError" in report["failures"][numpy["task_id"]]
    assert report["rescored"] == 1 and report["flaky"] == {}  # the empty answer is not worth a second run


def test_answers_are_cut_as_ds1000_cuts_them():
    assert ds1000.postprocess("<code>\nresult = 1\n</code>\nEND SOLUTION\nmore") == "\nresult = 1\n"
    assert ds1000.postprocess("```python\nresult = 2\n```\ntext") == "\nresult = 2\n"
    assert ds1000.postprocess("result = 3\nEND SOLUTION\n</code>") == "result = 3"
    t = tasks()[0]
    program = ds1000.program(t, "```python\nresult = df\n```")
    assert program.startswith(t["code_context"]) and program.endswith(
        "code = '\\nresult = df\\n'\ntest_execution(code)\n"
    )


def test_a_missing_environment_or_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(BenchmarkError, match="pip install --target"):
        ds1000.environment(str(tmp_path / "nope"))
    with pytest.raises(BenchmarkError, match="does not exist"):
        ds1000.data_file(str(tmp_path / "nope.jsonl"))


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("AIEV_SLOW_TESTS") != "1", reason="minutes: set AIEV_SLOW_TESTS=1")
def test_references_of_the_whole_file(tmp_path):
    """All 1,000 reference answers (benchmarks/ds1000_references.py reports the same with the pinned versions)."""
    bwrap_or_skip()
    data = SHARED_BENCHMARKS / "ds1000" / "ds1000.jsonl.gz"
    if not data.exists():
        pytest.skip(f"{data} is not here")
    rows = ds1000.tasks_of(data)
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": t["task_id"], "completion": t["reference_code"]} for t in rows])
    cfg = load_config({"benchmark": {"data": {"ds1000": str(data)}, "rescore_failures": False}})
    report = score_step(cfg, suite="ds1000", samples=tmp_path / "s.jsonl", output=tmp_path / "o.json")
    assert report["pass@1"] >= 0.95, {k: v for k, v in report["failures"].items()}


def test_samples_from_a_served_model_then_scored(tmp_path):
    """A chat model answers each problem with its reference answer in a python fence: the fenced code is the
    answer, and it passes."""
    bwrap_or_skip()
    from aiev.scoring import samples
    from tests.scripted_server import ScriptedServer

    numpy = [t for t in tasks() if t["metadata"]["library"] in ("Numpy", "Pandas")]
    by_prompt = {samples.chat_prompt("ds1000", t): t for t in numpy}

    def chat(messages):
        return f"Use this:\n```python\n{by_prompt[messages[-1]['content']]['reference_code']}```\nIt sets result."

    with ScriptedServer(chat) as server:
        cfg = load_config({"llm": {"teacher": {"base_url": server.url, "model": "scripted", "serve": None}},
                           "benchmark": {"data": {"ds1000": str(EXCERPT)}, "limit": 2}})  # fmt: skip
        out = sample(cfg, suite="ds1000", role="teacher", samples=tmp_path / "s.jsonl",
                               state_dir=tmp_path / "state")  # fmt: skip
        asked = [r["messages"][-1]["content"] for r in server.requests]
    assert out["n"] == 2 and out["empty"] == 0
    assert all(a.endswith("in a python fence.") and "BEGIN SOLUTION" in a for a in asked)
    report = score_step(cfg, suite="ds1000", samples=tmp_path / "s.jsonl", output=tmp_path / "o.json")
    assert report["pass@1"] == 1.0, report["failures"]


def test_the_data_home_reaches_the_programs_that_load_data_and_network_failures_are_listed(tmp_path):
    """The sandbox has no network: a program that downloads fails and is listed; with the data home the library
    finds its cached file in the program's home."""
    bwrap_or_skip()
    context = (
        "import os, urllib.request\n"
        "def test_execution(code):  # like seaborn's load_dataset(: the cache first, else the download\n"
        "    path = os.path.expanduser('~/.cache/seaborn/tips.csv')\n"
        "    if not os.path.exists(path):\n"
        "        urllib.request.urlretrieve('https://example.org/tips.csv', path)\n"
        "    assert open(path).read() == 'a,b\\n'\n"
    )
    data = tmp_path / "ds.jsonl"
    write_jsonl(data, [{"prompt": "", "reference_code": "", "code_context": context,
                        "metadata": {"problem_id": 7, "library": "Numpy"}}])  # fmt: skip
    write_jsonl(tmp_path / "s.jsonl", [{"task_id": "ds1000/7", "completion": "x = 1"}])
    cfg = load_config({"benchmark": {"data": {"ds1000": str(data)}, "rescore_failures": False}})
    offline = score_step(cfg, suite="ds1000", samples=tmp_path / "s.jsonl", output=tmp_path / "o.json")
    assert offline["per_task"] == {"ds1000/7": "fail"} and offline["network_failures"] == ["ds1000/7"]
    home = tmp_path / "home" / ".cache" / "seaborn"
    home.mkdir(parents=True)
    (home / "tips.csv").write_text("a,b\n")
    cfg["benchmark"]["ds1000_data_home"] = str(tmp_path / "home")
    cached = score_step(cfg, suite="ds1000", samples=tmp_path / "s.jsonl", output=tmp_path / "o.json")
    assert cached["per_task"] == {"ds1000/7": "pass"} and cached["network_failures"] == []
