"""The run summary: counts carried from the batch reports, totals beside the paper's, and the projection's
arithmetic checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

from aiev.config import load_config
from aiev.report import summary
from tests.report.handed import SUMMARY, handed, run_summary


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_batch(root: Path, k: int, *, passed: int, rejected: int, wall: float, stage: str, nxt: str) -> Path:
    d = root / f"batch_{k}"
    runs = [{"dialogues": passed + rejected, "wall_seconds": wall, "concurrency": 4}]
    if k == 0:  # an engine that counted its prompt cache (aiev's llama.cpp server)
        runs[0]["engine_cache"] = {"prompt_tokens": 4000, "prompt_tokens_cached": 2400}
    if k == 1:  # an endpoint that reports cached tokens in its replies' usage (OpenAI, vLLM)
        runs[0] |= {"prompt_tokens": 2000, "cached_prompt_tokens": 500}
    gen = {"passed": passed, "rejected": rejected, "passed_by_rounds": {"1": passed},
           "rejected_by_reason": {"max_rounds": rejected}, "rounds": passed + 2, "rounds_multi_round_entries": 3,
           "stage": stage, "shard_runs": runs}  # fmt: skip
    write(d / "generate_report.json", gen)
    n = passed + rejected
    write(d / "usage.json", {"requests": 10 * n, "prompt_tokens": 1000 * n, "completion_tokens": 100 * n,
                             "cost_usd": 0.5 * n})  # fmt: skip
    write(d / "decontam_report.json", {"rows": {"kept": passed - 1, "removed": 1}})
    write(d / "split_report.json", {"train": passed - 2, "test": 1})
    write(d / "train_report.json", {"trained": True, "steps": 2, "final_loss": 1.5, "wall_seconds": 100.0})
    write(d / "eval" / "teacher.json", {"n": 1, "passed": 1, "pass_at_1": 1.0, "wall_seconds": 10.0})
    write(d / "eval" / "student.json", {"n": 1, "passed": 0, "pass_at_1": 0.0, "wall_seconds": 20.0})
    write(d / "stage.json", {"stage": stage, "next": nxt, "reason": f"why {k}"})
    return d


def test_summary_totals_and_projection(tmp_path):
    dirs = [
        make_batch(tmp_path, 0, passed=6, rejected=4, wall=50.0, stage="teaching", nxt="self-learning"),
        make_batch(tmp_path, 1, passed=4, rejected=6, wall=30.0, stage="self-learning", nxt="teaching"),
    ]
    write(tmp_path / "dedup.json", {"kept": 1000})
    write(tmp_path / "batches.json", {"batch_size": 10})
    section = load_config({"summary": {"projection": {"generation_jobs": 2, "concurrency": 4}}})["summary"]
    info = run_summary(section, **handed(SUMMARY, dirs), dedup_report=tmp_path / "dedup.json",
                       batches_report=tmp_path / "batches.json", output=tmp_path / "s.json",
                       markdown=tmp_path / "s.md")  # fmt: skip
    b0, b1 = info["batches"]
    assert (b0["batch"], b0["stage"], b0["next"], b0["seeds"]) == (0, "teaching", "self-learning", 10)
    assert b0["teacher_pass_at_1"] == 1.0 and b0["student_pass_at_1"] == 0.0
    assert b1["stage"] == "self-learning" and b1["wall_seconds"]["generate"] == 30.0
    assert b0["prompt_cache"] == 0.6 and b1["prompt_cache"] == 0.25
    t = info["totals"]
    assert (t["seeds"], t["passed"], t["rounds"], t["decontam_removed"], t["kept"]) == (20, 10, 14, 2, 8)
    p = info["projection"]
    # 1000 seeds (dedup), per seed 10 requests, 1000 + 100 tokens, $0.5; a dialogue holds a slot for
    # (50*4 + 30*4) / 20 = 16 s; 2 jobs x 4 slots: 1000 * 16 / 8 = 2000 s; 100 batches of 10, each adding
    # train 100 + evaluations 30 = 130 s: 13000 s; 15000 s = 4.17 h
    assert p["seeds"] == 1000 and p["batches"] == 100 and p["entries"] == 500
    assert p["requests"] == 10000 and p["prompt_tokens"] == 1_000_000 and p["completion_tokens"] == 100_000
    assert p["cost_usd"] == 500.0 and p["seconds_per_dialogue_slot"] == 16.0
    assert p["generation_hours"] == round(2000 / 3600, 2) and p["loop_seconds_per_batch"] == 130.0
    assert p["wall_hours"] == round(15000 / 3600, 2)
    md = (tmp_path / "s.md").read_text()
    assert "| 1 | self-learning |" in md and "169,000" in md and "- batch 1: why 1" in md
    assert json.loads((tmp_path / "s.json").read_text()) == info


def test_summary_with_no_batch_generated_says_so(tmp_path):
    write(tmp_path / "dedup.json", {"kept": 5})
    write(tmp_path / "batches.json", {"batch_size": 5})
    info = run_summary(load_config({})["summary"], **handed(SUMMARY, [tmp_path / "batch_0"]),
                       dedup_report=tmp_path / "dedup.json", batches_report=tmp_path / "batches.json",
                       output=tmp_path / "s.json", markdown=tmp_path / "s.md")  # fmt: skip
    assert "nothing to project" in info["projection"]["note"] and info["batches"][0]["passed"] is None


def summary_markdown(tmp_path, benchmarks: list[str]) -> str:
    """results/summary.md of a run with no batch but these benchmark reports."""
    write(tmp_path / "dedup.json", {"kept": 5})
    write(tmp_path / "batches.json", {"batch_size": 5})
    run_summary(load_config({})["summary"], **handed(SUMMARY, [tmp_path / "batch_0"]),
                benchmarks=benchmarks, dedup_report=tmp_path / "dedup.json", batches_report=tmp_path / "batches.json",
                output=tmp_path / "s.json", markdown=tmp_path / "s.md")  # fmt: skip
    return (tmp_path / "s.md").read_text()


def test_benchmark_table_beside_the_papers(tmp_path):
    for model, suite, base, plus in (("base", "humaneval", 0.5, 0.25), ("student_1", "humaneval", 0.75, 0.5),
                                     ("student_1", "mbpp", 1.0, 0.5)):  # fmt: skip
        write(tmp_path / "benchmarks" / model / f"{suite}.json",
              {"suite": suite, "n": 4, "base_pass@1": base, "plus_pass@1": plus, "limit": 4})  # fmt: skip
    paths = sorted(str(p) for p in (tmp_path / "benchmarks").glob("*/*.json"))
    table = summary.benchmark_table(paths)
    assert table["base"] == {"humaneval": 50.0, "humaneval+": 25.0, "humaneval_tasks": 4}
    assert table["student_1"]["mbpp+"] == 50.0 and table["student_1"]["humaneval"] == 75.0
    md = summary_markdown(tmp_path, paths)
    assert "| student_1 | 75 | 50 | 100 | 50 |" in md and "| AutoCoder-33B (paper) | 90.9 | 78 | 82.5 | 70.6 |" in md
    assert "subset" in md


def test_benchmark_table_has_multipl_e_and_ds1000_with_what_was_left_out(tmp_path):
    reports = {
        "multipl-e-js": {"suite": "multipl-e-js", "n": 4, "pass@1": 0.5, "flaky": {"HumanEval_1": {}}},
        "multipl-e-swift": {"suite": "multipl-e-swift", "n": 0, "pass@1": None, "skipped": "no Swift toolchain"},
        "ds1000": {"suite": "ds1000", "n": 10, "scored": 8, "pass@1": 0.25, "complete": False,
                   "skipped_libraries": {"Tensorflow": "ModuleNotFoundError"}},
    }  # fmt: skip
    for suite, r in reports.items():
        write(tmp_path / "benchmarks" / "student_0" / f"{suite}.json", r)
    paths = sorted(str(p) for p in (tmp_path / "benchmarks").glob("*/*.json"))
    row = summary.benchmark_table(paths)["student_0"]
    assert row["multipl-e-js"] == 50.0 and row["multipl-e-swift"] is None and row["ds1000"] == 25.0
    assert row["notes"] == ["ds1000 on 8/10 problems (no Tensorflow)",
                            "multipl-e-js: 1 task(s) changed verdict when re-scored",
                            "multipl-e-swift skipped: no Swift toolchain"]  # fmt: skip
    md = summary_markdown(tmp_path, paths)
    assert "| model | multipl-e-js | multipl-e-swift | ds1000 |" in md
    assert "| student_0 | 50 | – | 25 |" in md or "| student_0 | 50 | - | 25 |" in md, md
    assert "| AutoCoder-33B (paper) | 68.9 | 53.8 | 47.2 |" in md and "no Tensorflow" in md
