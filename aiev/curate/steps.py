"""The curation part's steps: ``aiev check-tests``, ``aiev decontaminate``, ``aiev split``, ``aiev format``
(rules/curate.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override

METRICS = ("levenshtein", "ratio")


def _benchmark_arg(text: str) -> tuple[str, str | None]:
    from aiev.curate import benchdata

    try:
        return benchdata.parse_spec(text)
    except benchdata.BenchmarkError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _Mapping(argparse.Action):
    """Repeatable NAME[=PATH] flags collected into one mapping (the value of a mapping config key)."""

    def __call__(self, parser, namespace, value, option_string=None):
        current = getattr(namespace, self.dest) or {}
        setattr(namespace, self.dest, {**current, value[0]: value[1]})


def _decontam_args(p: argparse.ArgumentParser) -> None:
    from aiev.curate.benchdata import NAMES

    p.add_argument("--input", required=True, help="entries JSONL (each row needs id and messages)")
    p.add_argument("--output", required=True, help="JSONL of the kept rows (input lines, byte for byte)")
    p.add_argument("--removed", required=True, help="JSONL per removal: id, closest benchmark task, similarity")
    p.add_argument("--report", required=True, help="JSON report: counts per benchmark, top matches, bad rows")
    override(
        p, "--benchmark", key="decontam.benchmarks", action=_Mapping, type=_benchmark_arg, metavar="NAME[=PATH]",
        help=f"benchmark to compare with (repeatable; replaces decontam.benchmarks). NAME in {', '.join(NAMES)}; "
        "without =PATH it is loaded the way users do (package or hub)",
    )  # fmt: skip
    override(p, "--threshold", key="decontam.threshold", type=float, help="remove when similarity > this")
    override(p, "--metric", key="decontam.metric", choices=METRICS, help="levenshtein (default) or ratio")
    override(p, "--workers", key="decontam.workers", type=int, help="processes for the search")


def _decontam(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.curate import decontam

    return decontam.run(cfg["decontam"], args)


def _decontam_summary(r: dict[str, Any]) -> str:
    rows = r["rows"]
    bad = f"; {rows['bad']} bad rows neither kept nor removed (listed in the report)" if rows["bad"] else ""
    return (
        f"{rows['good']} rows, {rows['kept']} kept, {rows['removed']} removed ({r['metric']} > {r['threshold']} "
        f"against {r['blocks']['unique_snippets']} snippets) in {r['search']['seconds']:.1f} s{bad}"
    )


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="passing entries JSONL of one batch (dialogues.jsonl)")
    p.add_argument("--output", required=True, help="JSONL of the kept entries, each with its `quality` figures")
    p.add_argument("--removed", required=True, help="JSONL per removed entry: id, reason, detail, quality")
    p.add_argument("--report", required=True, help="JSON report: removals by reason, mutation scores, bad rows")
    p.add_argument("--state-dir", required=True, help="where the progress file lives (outside the outputs)")
    override(p, "--mode", key="check_tests.mode", choices=("filter", "report", "off"))
    override(p, "--mutants", key="check_tests.mutants", type=int, help="mutants per entry")
    override(p, "--min-mutation-score", key="check_tests.min_mutation_score", type=float)
    override(p, "--workers", key="check_tests.workers", type=int, help="sandbox executions at once")
    p.add_argument("--stage", choices=("teaching", "self-learning"), default="teaching",
                   help="who wrote the batch (check_tests.second_solution asks that model)")  # fmt: skip


def _check(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.curate import checks

    return checks.run(checks.CheckSettings.from_config(cfg, args.stage), args)


def _check_summary(r: dict[str, Any]) -> str:
    reasons = r["removed_by_reason"] if r["mode"] == "filter" else r["would_remove_by_reason"]
    why = ", ".join(f"{k} {v}" for k, v in reasons.items() if v) or "none"
    verb = "removed" if r["mode"] == "filter" else "would remove (mode report)"
    score = r["mean_mutation_score"]
    return (
        f"{r['entries']} entries, {r['kept']} kept; {verb}: {why}; mean mutation score "
        f"{'-' if score is None else f'{score:.2f}'} over {r['mutants']} mutants; {r['seconds']:.1f} s"
        + (f"; resumed {r['resumed']}" if r["resumed"] else "")
    )


def _split_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="decontaminated entries JSONL of one batch")
    p.add_argument("--train", required=True, help="train split JSONL (input lines, in order)")
    p.add_argument("--test", required=True, help="test split JSONL: entries with runnable unit tests only")
    p.add_argument("--report", required=True, help="JSON report: sizes, the rule, test ids, bad rows")
    override(p, "--test-fraction", key="split.test_fraction", type=float)
    override(p, "--seed", key="split.seed", type=int)


def _split(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.curate import split

    return split.run(cfg["split"], args)


def _format_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True, help="entries JSONL (the train split)")
    p.add_argument("--output", required=True, help="SFT records JSONL (chat messages with loss segments)")
    p.add_argument("--report", required=True, help="JSON report: counts, special tokens, bad rows")


def _format(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.curate import format as sft

    return sft.run(cfg["format"], args)


STEPS = [
    Step("check-tests", "check that a passing entry's tests can fail and its code matches the problem (mutants, "
         "examples)", _check_args, _check, _check_summary, report="report"),
    Step("decontaminate", "remove entries whose code is too similar to benchmark code (exact Levenshtein)",
         _decontam_args, _decontam, _decontam_summary, report="report"),
    Step("split", "split a batch 9:1 into train and test (test: entries with runnable tests)", _split_args, _split,
         lambda r: f"{r['total']} entries -> {r['train']} train, {r['test']} test ({r['eligible']} eligible)"
         + (f"; {r['bad']} bad rows left out (listed in the report)" if r["bad"] else ""), report="report"),
    Step("format", "format passing dialogues as code-interpreter SFT records", _format_args, _format,
         lambda r: f"{r['formatted']} SFT records, {r['not_passed']} entries not passed, {r['bad']} bad rows; "
         f"special tokens {' '.join(r['special_tokens'])}", report="report"),
]  # fmt: skip
