"""The report part's steps: ``aiev dataset`` and ``aiev summary`` (rules/report.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step


def _per_batch(p: argparse.ArgumentParser, flag: str, what: str, *, required: bool = False) -> None:
    """A kind of batch file: one FILE per batch, in batch order (the K-th is batch K's); none given: absent."""
    p.add_argument(flag, nargs="*", default=[], required=required, metavar="FILE",
                   help=f"each batch's {what}, in batch order; only these are read")  # fmt: skip


def _dataset_args(p: argparse.ArgumentParser) -> None:
    _per_batch(p, "--train", "train split (the data set's train rows)", required=True)
    _per_batch(p, "--test", "test split (the data set's test rows)", required=True)
    _per_batch(p, "--generate-reports", "generation report")
    _per_batch(p, "--check-reports", "test-check report")
    _per_batch(p, "--decontam-reports", "decontamination report")
    _per_batch(p, "--stages", "stage record (when the loop runs)")
    p.add_argument("--output", required=True, help="the data set's directory (Hugging Face datasets layout)")
    p.add_argument("--report", help="dataset_report.json (default: OUTPUT/dataset_report.json)")


def _dataset(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.report import dataset

    return dataset.run(cfg, args)


def _summary_args(p: argparse.ArgumentParser) -> None:
    _per_batch(p, "--generate-reports", "generation report")
    _per_batch(p, "--usage", "LLM usage")
    _per_batch(p, "--check-reports", "test-check report")
    _per_batch(p, "--decontam-reports", "decontamination report")
    _per_batch(p, "--split-reports", "split report")
    _per_batch(p, "--train-reports", "training report (when training runs)")
    _per_batch(p, "--teacher-evals", "teacher's evaluation (when the loop runs)")
    _per_batch(p, "--student-evals", "student's evaluation (when the loop runs)")
    _per_batch(p, "--stages", "stage record (when the loop runs)")
    p.add_argument("--dedup-report", dest="dedup_report", required=True)
    p.add_argument("--batches-report", dest="batches_report", required=True)
    p.add_argument("--dataset-report", dest="dataset_report")
    p.add_argument("--benchmarks", nargs="*", default=[], metavar="FILE",
                   help="the benchmark scores JSONs (results/benchmarks/MODEL/SUITE.json)")  # fmt: skip
    p.add_argument("--output", required=True, help="summary.json")
    p.add_argument("--markdown", required=True, help="summary.md")


def _summary(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.report import summary

    return summary.run(cfg["summary"], args)


def _plots_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--summary", required=True, help="the run summary (summary.json)")
    _per_batch(p, "--check-reports", "test-check report")
    _per_batch(p, "--decontam-reports", "decontamination report")
    _per_batch(p, "--students", "trained student (its folder, when training runs)")
    p.add_argument("--outdir", required=True, help="where the plots, their numbers and the tables go")


def _plots(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.report import plots

    return plots.run(args)


def _summary_line(r: dict[str, Any]) -> str:
    p = r["projection"]
    stages = ", ".join(f"{b['batch']}: {b['stage']}->{b['next']}" for b in r["batches"])
    out = f"{r['batches_run']} batch(es) [{stages}], {r['totals']['passed']} entries"
    if "wall_hours" in p:
        tokens = p["prompt_tokens"] + p["completion_tokens"]
        out += f"; projected for {p['seeds']:,} seeds: {p['entries']:,} entries, {tokens:,} tokens, "
        out += f"${p['cost_usd']}, {p['wall_hours']} h"
    return out


STEPS = [
    Step("dataset", "the released data set: every kept entry, parquet and JSONL shards per split, and its card",
         _dataset_args, _dataset,
         lambda r: f"{r['entries']} entries ({r['train']} train, {r['test']} test), {r['bad']} row(s) skipped"),
    Step("summary", "the run summary (per batch, totals beside the paper's) and its projection", _summary_args,
         _summary, _summary_line, report="output"),
    Step("plots", "the report's plots (SVG), the numbers their captions state, and the tables", _plots_args, _plots,
         lambda r: f"{len(r['plots'])} plots and {len(r['tables'])} tables in {r['outdir']}"),
]  # fmt: skip
