from __future__ import annotations

import json
from argparse import Namespace

from aiev.config import load_config
from aiev.seeds.dedup import DedupParams, code_tokens, deduplicate
from aiev.seeds.steps import STEPS
from aiev.steps import run_step

ORIGINAL = """def moving_average(values, window):
    result = []
    total = 0.0
    for index, value in enumerate(values):
        total += value
        if index >= window:
            total -= values[index - window]
        if index >= window - 1:
            result.append(total / window)
    return result
"""
RENAMED = """def rolling_mean(xs, k):
    out = []
    acc = 0.0
    for i, x in enumerate(xs):
        acc += x
        if i >= k:
            acc -= xs[i - k]
        if i >= k - 1:
            out.append(acc / k)
    return out
"""
DIFFERENT = """def moving_average(values, window):
    import statistics
    chunks = [values[i:i + window] for i in range(0, len(values), window)]
    means = {}
    for index, chunk in enumerate(chunks):
        means[index] = statistics.fmean(chunk) if chunk else None
    ordered = sorted(means.items(), key=lambda kv: kv[1] or 0)
    return [m for _, m in ordered]
"""


def rec(i, text, kind="snippet"):
    return {"id": f"t:{i}", "source": "t", "kind": kind, "text": text, "provenance": {"type": "jsonl"}}


def test_canonical_tokens_ignore_local_names_but_keep_apis():
    a = code_tokens("total = len(items)\nitems.append(total)")
    b = code_tokens("n = len(xs)\nxs.append(n)")
    assert a == b
    # attribute names, builtins and imports keep their spelling
    assert "append" in a and "len" in a
    assert code_tokens("import os") != code_tokens("import sys")
    assert code_tokens("x.foo()") != code_tokens("x.bar()")


def test_renamed_variables_are_caught_and_a_different_function_is_not():
    kept, dropped = deduplicate([rec(0, ORIGINAL), rec(1, RENAMED), rec(2, DIFFERENT)], DedupParams())
    assert [r["id"] for r in kept] == ["t:0", "t:2"]
    assert dropped == [{"id": "t:1", "reason": "near", "duplicate_of": "t:0", "similarity": 1.0}]


def test_renaming_off_misses_renamed_copy():
    kept, _ = deduplicate([rec(0, ORIGINAL), rec(1, RENAMED)], DedupParams(canonical_identifiers=False))
    assert len(kept) == 2


def test_exact_duplicates_up_to_whitespace_keep_the_first():
    a = "Write a function that returns the n-th Fibonacci number."
    b = "  Write a function   that returns\nthe n-th Fibonacci number. "
    kept, dropped = deduplicate(
        [rec(0, a, "instruction"), rec(1, b, "instruction"), rec(2, a, "instruction")], DedupParams()
    )
    assert [r["id"] for r in kept] == ["t:0"]
    assert [(d["id"], d["reason"], d["duplicate_of"]) for d in dropped] == [
        ("t:1", "exact", "t:0"),
        ("t:2", "exact", "t:0"),
    ]


def test_near_duplicate_instructions_and_distinct_ones():
    base = (
        "Write a Python function that reads a CSV file of sales records, groups the rows by region, "
        "and returns the total revenue per region as a dictionary sorted by revenue."
    )
    near = base + " Use only the standard library."
    other = (
        "Implement a thread-safe LRU cache class with get and put methods and a fixed capacity, "
        "evicting the least recently used key when full."
    )
    kept, dropped = deduplicate(
        [rec(0, base, "instruction"), rec(1, near, "instruction"), rec(2, other, "instruction")],
        DedupParams(),
    )
    assert [r["id"] for r in kept] == ["t:0", "t:2"]
    assert dropped[0]["reason"] == "near" and dropped[0]["similarity"] >= 0.7


def test_short_fragments_only_exact(tmp_path):
    kept, _ = deduplicate([rec(0, "x = 1"), rec(1, "y = 1")], DedupParams())
    assert len(kept) == 2  # identical after renaming, but too short to call near-duplicates


def test_deterministic_and_parallel_equals_serial():
    recs = [rec(i, ORIGINAL.replace("window", f"w{i % 7}") + f"\n# {i % 11}\n") for i in range(3000)]
    recs += [rec(10_000 + i, DIFFERENT.replace("means", f"m{i}")) for i in range(50)]
    a = deduplicate(recs, DedupParams(workers=1))
    b = deduplicate(recs, DedupParams(workers=2))
    assert a == b


def test_run_writes_report(tmp_path):
    src = tmp_path / "seeds.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in [rec(0, ORIGINAL), rec(1, RENAMED), rec(2, ORIGINAL)]))
    cfg = {"dedup": load_config()["dedup"] | {"workers": 1}}
    step = next(s for s in STEPS if s.name == "dedup")
    report = run_step(step, cfg, Namespace(input=src, output=tmp_path / "out.jsonl", report=tmp_path / "rep.json"))
    assert (report["input"], report["kept"], report["dropped_exact"], report["dropped_near"]) == (3, 1, 1, 1)
    on_disk = json.loads((tmp_path / "rep.json").read_text())
    assert {d["id"] for d in on_disk["dropped_rows"]} == {"t:1", "t:2"}
    assert (tmp_path / "out.jsonl").read_text().count("\n") == 1
