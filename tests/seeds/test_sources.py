from __future__ import annotations

import json
import textwrap
from argparse import Namespace
from pathlib import Path

import pytest

from aiev.config import ConfigError, load_config
from aiev.records import record_errors
from aiev.seeds.sources import SeedError, collect_seeds, stdlib_root
from aiev.seeds.steps import STEPS
from aiev.steps import run_step


def section(*sources, **kw):
    return load_config({"seeds": {"sources": list(sources), **kw}})["seeds"]


def test_jsonl_bad_rows_are_skipped_and_reported(tmp_path):
    f = tmp_path / "in.jsonl"
    lines = [
        json.dumps({"problem": "Write a function that adds two numbers.", "solution": "def f(a,b): ..."}),
        "{not json",
        json.dumps({"other": "no problem field here"}),
        json.dumps({"problem": "   "}),
        json.dumps({"problem": "x" * 500}),
        json.dumps({"problem": 42}),
        json.dumps(["a list"]),
        "",
        json.dumps({"problem": "Reverse a linked list in place and return its new head."}),
    ]
    data = ("\n".join(lines) + "\n").encode() + b'{"problem": "caf\xe9 broken utf8 in a row"}\n'
    f.write_bytes(data)
    src = {
        "name": "local",
        "type": "jsonl",
        "path": str(f),
        "text_field": "problem",
        "reference_field": "solution",
    }
    got, report = collect_seeds(section(src, max_chars=400))
    assert [s["id"] for s in got] == ["local:1", "local:9"]
    assert got[0]["reference"] == "def f(a,b): ..." and got[0]["kind"] == "instruction"
    assert got[0]["provenance"] == {"type": "jsonl", "file": str(f), "line": 1}
    skipped = {(r["line"], r["reason"].split(":")[0]) for r in report["skipped"]}
    assert skipped == {
        (2, "invalid-json"),
        (3, "missing-field"),
        (4, "empty"),
        (5, "too-long"),
        (6, "not-a-string"),
        (7, "not-an-object"),
        (10, "not-utf8"),
    }
    assert all(r["file"] == str(f) for r in report["skipped"])
    assert report["sources"]["local"]["kept"] == 2 and report["sources"]["local"]["skipped"] == 7
    for s in got:
        assert record_errors(s, "seed") == []


def test_source_yielding_nothing_fails_clearly(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"x": 1}\nnope\n')
    with pytest.raises(SeedError, match="yielded no usable seed"):
        collect_seeds(section({"name": "b", "type": "jsonl", "path": str(f), "text_field": "problem"}))


def test_missing_file_and_duplicate_names(tmp_path):
    with pytest.raises(SeedError, match="file not found"):
        collect_seeds(section({"name": "b", "type": "jsonl", "path": str(tmp_path / "no"), "text_field": "t"}))
    src = {"name": "s", "type": "stdlib", "count": 2}
    with pytest.raises(SeedError, match="unique"):
        collect_seeds(section(src, src))


def test_parquet_source_with_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = tmp_path / "evol.parquet"
    table = pa.table(
        {
            "instruction": ["Sort a list of tuples by their second item.", None, "Parse an ISO date string."],
            "response": ["sorted(xs, key=lambda t: t[1])", "x", "date.fromisoformat(s)"],
        }
    )
    pq.write_table(table, f)
    src = {
        "name": "evol",
        "type": "parquet",
        "path": str(f),
        "text_field": "instruction",
        "reference_field": "response",
    }
    got, report = collect_seeds(section(src))
    assert [s["id"] for s in got] == ["evol:0", "evol:2"]
    assert got[1]["reference"] == "date.fromisoformat(s)"
    assert report["skipped"][0]["line"] == 1 and report["skipped"][0]["reason"].startswith("missing-field")


def test_hf_source_from_save_to_disk(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "problem": ["Implement binary search over a sorted list.", "Count words in a text file."],
            "solution": ["def bs(): ...", "def wc(): ..."],
        }
    )
    ds.save_to_disk(str(tmp_path / "oss"))
    src = {
        "name": "oss",
        "type": "hf",
        "dataset": str(tmp_path / "oss"),
        "text_field": "problem",
        "reference_field": "solution",
    }
    got, _ = collect_seeds(section(src))
    assert [s["text"] for s in got] == ds["problem"]
    assert got[0]["provenance"]["type"] == "hf" and got[0]["provenance"]["row"] == 0


def test_hf_source_calls_the_hub_loader(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config_name=None, split=None, revision=None):
        calls.append((name, config_name, split, revision))
        return datasets.Dataset.from_dict({"instruction": ["Write a haiku generator in Python."]})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    src = {
        "name": "evol",
        "type": "hf",
        "dataset": "ise-uiuc/Magicoder-Evol-Instruct-110K",
        "text_field": "instruction",
        "revision": "abc123",
    }
    got, _ = collect_seeds(section(src))
    assert calls == [("ise-uiuc/Magicoder-Evol-Instruct-110K", None, "train", "abc123")]
    assert got[0]["provenance"]["revision"] == "abc123"


def test_hf_unreachable_says_what_to_do(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    src = {
        "name": "oss",
        "type": "hf",
        "dataset": "ise-uiuc/Magicoder-OSS-Instruct-75K",
        "text_field": "problem",
    }
    with pytest.raises(SeedError, match="save_to_disk"):
        collect_seeds(section(src))


def test_stdlib_is_deterministic_real_code():
    src = {"name": "std", "type": "stdlib", "count": 40, "seed": 3}
    a, _ = collect_seeds(section(src))
    b, _ = collect_seeds(section(src))
    c, _ = collect_seeds(section({**src, "seed": 4}))
    assert a == b and a != c
    assert len(a) == 40 and len({s["id"] for s in a}) == 40
    for s in a:
        p = s["provenance"]
        n = p["end_line"] - p["start_line"] + 1
        assert 1 <= n <= 15
        real = (Path(stdlib_root()) / p["module"]).read_text(encoding="utf-8").splitlines()
        chunk = real[p["start_line"] - 1 : p["end_line"]]
        # the snippet is exactly those lines of the real file, dedented
        assert s["text"] == textwrap.dedent("\n".join(chunk)).strip("\n")
        assert s["kind"] == "snippet" and "/test/" not in f"/{p['module']}"
        assert record_errors(s, "seed") == []


def test_mixed_sources_run_writes_outputs(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"q": "Write a function computing a factorial."}) + "\n")
    sec = section(
        {"name": "a", "type": "jsonl", "path": str(f), "text_field": "q"},
        {"name": "std", "type": "stdlib", "count": 5},
    )
    step = next(s for s in STEPS if s.name == "seeds")
    report = run_step(step, {"seeds": sec}, Namespace(output=tmp_path / "seeds.jsonl", report=tmp_path / "report.json"))
    rows = [json.loads(x) for x in (tmp_path / "seeds.jsonl").read_text().splitlines()]
    assert report["total"] == 6 == len(rows)
    assert {r["source"] for r in rows} == {"a", "std"}
    assert json.loads((tmp_path / "report.json").read_text())["sources"]["std"]["kept"] == 5


def test_stdlib_whole_self_contained_functions():
    """unit: function draws whole module-level functions; self_contained keeps those that need only their
    parameters and the builtins. Every seed is the real source text, each function at most once, seeded."""
    import ast
    from pathlib import Path

    src = {"name": "fn", "type": "stdlib", "count": 30, "seed": 3, "unit": "function", "self_contained": True,
           "min_lines": 2, "max_lines": 10}  # fmt: skip
    sec = load_config({"seeds": {"sources": [src]}})["seeds"]
    seeds, _ = collect_seeds(sec)
    again, _ = collect_seeds(sec)
    assert [s["text"] for s in seeds] == [s["text"] for s in again]
    places = [(s["provenance"]["module"], s["provenance"]["start_line"]) for s in seeds]
    assert len(set(places)) == 30
    for s in seeds:
        p = s["provenance"]
        tree = ast.parse(s["text"])
        (fn,) = tree.body
        assert isinstance(fn, ast.FunctionDef) and fn.name == p["function"] and p["unit"] == "function"
        assert 2 <= p["end_line"] - p["start_line"] + 1 <= 10
        lines = (Path(stdlib_root()) / p["module"]).read_text(encoding="utf-8").splitlines()
        assert s["text"] == "\n".join(lines[p["start_line"] - 1 : p["end_line"]]).strip("\n")
        assert not any(isinstance(n, ast.Import | ast.ImportFrom | ast.Global) for n in ast.walk(fn))


def test_stdlib_functions_up_to_max_params():
    import ast

    from aiev.seeds.sources import parameter_count

    src = {"name": "fn", "type": "stdlib", "count": 40, "seed": 1, "unit": "function", "self_contained": True,
           "min_lines": 2, "max_lines": 10}  # fmt: skip
    counts = {}
    for limit in (None, 1):
        seeds, _ = collect_seeds(load_config({"seeds": {"sources": [{**src, "max_params": limit}]}})["seeds"])
        assert len(seeds) == 40
        counts[limit] = [parameter_count(ast.parse(s["text"]).body[0]) for s in seeds]
    assert set(counts[1]) == {1} and max(counts[None]) > 1
    assert parameter_count(ast.parse("def f(a, /, b, *c, d, **e): pass").body[0]) == 5
    with pytest.raises(ConfigError, match="max_params"):
        load_config({"seeds": {"sources": [{**src, "max_params": 0}]}})


def test_self_contained_rule():
    import ast

    from aiev.seeds.sources import self_contained

    def check(code: str) -> bool:
        return self_contained(ast.parse(code).body[0])

    assert check("def f(x):\n    y = x * 2\n    return len(str(y))")
    assert not check("def f(x):\n    return math.sqrt(x)")  # a module name
    assert not check("def f(x):\n    import os\n    return os.sep")
    assert not check("def f():\n    return 1")  # nothing to vary
    assert not check("def f(x):\n    print(x)")  # returns nothing
    assert not check("def f(x):\n    yield x")
    assert check("def f(xs):\n    return [g(x) for x in xs if x]\n".replace("g(x)", "abs(x)"))
