"""The report's plots: every file written, the caption numbers equal the data's, byte-identical on a re-run, and a
run without the loop or benchmarks still writes every output, saying inside what is missing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from aiev.config import load_config
from aiev.report import plots
from tests.report.handed import PLOTS, SUMMARY, handed, run_plots, run_summary
from tests.report.test_summary import make_batch, write


def fake_run(root: Path) -> tuple[Path, list[Path]]:
    dirs = [
        make_batch(root, 0, passed=6, rejected=4, wall=50.0, stage="teaching", nxt="self-learning"),
        make_batch(root, 1, passed=4, rejected=6, wall=30.0, stage="self-learning", nxt="self-learning"),
    ]
    for i, d in enumerate(dirs):
        gen = json.loads((d / "generate_report.json").read_text())
        gen["passed_by_rounds"] = {"1": gen["passed"] - 1 - i, "2": 1, "3": i}
        gen["rejected_by_reason"] = {"max_rounds": gen["rejected"] - 1, "llm_empty_reply": 1}
        write(d / "generate_report.json", gen)
        write(d / "decontam_report.json", {"rows": {"kept": 5, "removed": 1 + i}, "threshold": 0.9,
                                           "benchmarks": {"humaneval": {"removed": 1, "snippets": 164},
                                                          "mbpp": {"removed": i, "snippets": 500}}})  # fmt: skip
        check = {"mode": "filter", "entries": 6 - 2 * i, "mutation_scores": [0.2, 0.9][: 2 - i]}
        check["would_remove_by_reason"] = {"weak": 1, "tests_not_run": i, "tautology": 0}
        write(d / "check_report.json", check)
        write(d / "student" / "metrics.json", {"world_size": 2, "loss": [{"step": s, "loss": 2.0 - 0.25 * s - i}
                                                                         for s in range(1, 5)]})  # fmt: skip
    write(root / "dedup.json", {"kept": 1000})
    write(root / "batches.json", {"batch_size": 10})
    bench = root / "benchmarks" / "student_1" / "humaneval.json"
    write(bench, {"suite": "humaneval", "n": 164, "base_pass@1": 0.25, "plus_pass@1": 0.2})
    section = load_config({})["summary"]
    run_summary(section, **handed(SUMMARY, dirs), dedup_report=root / "dedup.json",
                batches_report=root / "batches.json", output=root / "summary.json", markdown=root / "s.md",
                benchmarks=[str(bench)])  # fmt: skip
    return root / "summary.json", dirs


def test_every_plot_and_table_with_the_numbers_of_the_data(tmp_path):
    summ, dirs = fake_run(tmp_path)
    out = tmp_path / "report"
    rep = run_plots(summary=summ, **handed(PLOTS, dirs), outdir=out)
    for name in plots.PLOTS:
        svg = (out / f"{name}.svg").read_text()
        assert svg.startswith("<?xml") and "<svg" in svg and not (out / f"{name}.rst").read_text().startswith("No ")
    # the numbers the captions include, recomputed here from the fake batches
    text = {n: (out / f"{n}.rst").read_text() for n in plots.PLOTS}
    # passes by round: batch 0 (6 passed) 5, 1, 0; batch 1 (4 passed) 2, 1, 1
    assert (
        "10 of 20 dialogues passed (50.0%): 7 at the first round, 3 after execution feedback (30.0%" in text["rounds"]
    )
    assert "round 1: 7, round 2: 2, round 3: 1." in text["rounds"]
    assert "10 dialogues rejected: max_rounds 8, llm_empty_reply 2." in text["rejections"]
    assert (
        "3 entries removed (Levenshtein similarity above 0.9): humaneval 2 (of 164 snippets), mbpp 1"
        in text["decontam"]
    )
    assert (
        "10 passing entries checked (mode filter); mean mutation score 0.43 over 3 entries with mutants; removed: "
        "weak 2, tests_not_run 1." in text["checks"]
    )
    assert "200 requests, 20,000 prompt + 2,000 completion = 22,000 tokens, $10.00 over 2 batch(es)." in text["usage"]
    assert "The student took over after batch 0 (self-learning stage from batch 1)." in text["stages"]
    assert "batch 1 (self-learning): teacher 100.0%, student 0.0% on 1 test entries" in text["stages"]
    assert "- batch 1: 4 steps on 2 process(es), loss 0.750 -> 0.000" in text["loss"]
    assert "- student_1: humaneval 25.0, humaneval+ 20.0" in text["benchmarks"]
    assert "AutoCoder-33B (paper): humaneval 90.9, humaneval+ 78.0" in text["benchmarks"]
    # each plot draws what its caption states (matplotlib keeps text as <text> or glyph paths with ids)
    assert (
        "Rejections by reason" in (out / "rejections.svg").read_text()
        or "glyph" in (out / "rejections.svg").read_text()
    )
    table = (out / "batches.html").read_text()
    rows = re.findall(r"<tr><td>(\w+)</td><td>([\w-]+)</td><td>(\d+)</td><td>(\d+)</td>", table)
    assert rows == [("0", "teaching", "10", "6"), ("1", "self-learning", "10", "4")], rows
    assert "<td>total</td>" in table and "169,000 entries" in table
    bt = (out / "benchmarks.html").read_text()
    assert "<td>student_1</td><td>25</td><td>20</td>" in bt and "AutoCoder-33B (paper)" in bt
    assert rep["plots"] == [f"{p}.svg" for p in plots.PLOTS]

    # byte-identical when nothing changed (no date, fixed ids): a re-run changes no file
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    run_plots(summary=summ, **handed(PLOTS, dirs), outdir=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_run_without_the_loop_still_writes_every_output(tmp_path):
    write(tmp_path / "summary.json", {"batches": [{"batch": 0, "seeds": 5, "passed": 2, "passed_by_rounds": {"1": 2},
                                                   "rejected": 3, "rejected_by_reason": {"max_rounds": 3}}],
                                      "totals": {"seeds": 5, "passed": 2}})  # fmt: skip
    out = tmp_path / "report"
    run_plots(summary=tmp_path / "summary.json", **handed(PLOTS, [tmp_path / "batch_0"]), outdir=out)
    assert {p.name for p in out.iterdir()} == {f"{n}.{e}" for n in plots.PLOTS for e in ("svg", "rst")} | {
        "batches.html",
        "benchmarks.html",
        "plots.json",
    }
    assert (out / "stages.rst").read_text().strip() == "No batch was evaluated: the loop was off."
    assert (out / "loss.rst").read_text().strip() == "No student was trained."
    assert (out / "benchmarks.rst").read_text().strip() == "No benchmark was scored."
    assert (out / "usage.rst").read_text().strip() == "No LLM request was made."
    assert "2 of 5 dialogues passed (40.0%)" in (out / "rounds.rst").read_text()


def test_a_suite_not_scored_is_no_zero_bar(tmp_path):
    """A skipped suite (no toolchain) has no bar and its caption says it was not scored; 0% stays a real score."""
    table = {"student_1": {"humaneval": 0.0, "multipl-e-swift": None, "notes": ["multipl-e-swift skipped: no swift"]},
             "base": {"humaneval": 12.5, "multipl-e-swift": 25.0}}  # fmt: skip
    text = plots.benchmarks(plots._plt(), table, {}, tmp_path / "b.svg")
    assert "- student_1: humaneval 0.0; not scored: multipl-e-swift" in text
    assert "- base: humaneval 12.5, multipl-e-swift 25.0\n" in text
    assert "nan" not in (tmp_path / "b.svg").read_text()  # the missing bar is left out, not drawn from NaN


def test_every_figure_has_its_caption_and_the_rule_takes_its_outputs_from_the_one_list():
    repo = Path(__file__).resolve().parents[2]
    for figure in plots.FIGURES:
        assert (repo / "docs" / "report" / figure.caption).is_file(), figure.caption
    assert len({f.output for f in plots.FIGURES}) == len(plots.FIGURES)  # the rule's output names are distinct
    rule = (repo / "rules" / "report.smk").read_text(encoding="utf-8")
    for figure in plots.FIGURES:  # no figure is spelled out a second time in the rule
        assert figure.file not in rule and figure.caption not in rule, figure.name
