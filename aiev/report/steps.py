"""The report stage's steps: ``aiev dataset`` and ``aiev summary`` (rules/report.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", nargs=3, action="append", required=True, metavar=("BATCH", "TRAIN", "TEST"),
                   help="one batch's index and split files; repeat in batch order")  # fmt: skip
    p.add_argument("--output", required=True, help="the data set JSONL to write")
    p.add_argument("--report", required=True)


def _dataset(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.report import dataset

    return dataset.run(
        batches=[int(b) for b, _, _ in args.split], train=[t for _, t, _ in args.split],
        test=[t for _, _, t in args.split], output=args.output, report=args.report,
    )  # fmt: skip


def _summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-dir", dest="batch_dirs", action="append", required=True,
                   help="a batch's results directory (results/batch_K); repeat in batch order")  # fmt: skip
    p.add_argument("--dedup-report", dest="dedup_report", required=True)
    p.add_argument("--batches-report", dest="batches_report", required=True)
    p.add_argument("--dataset-report", dest="dataset_report")
    p.add_argument("--benchmark", dest="benchmarks", action="append", default=[],
                   help="a benchmark scores JSON (results/benchmarks/MODEL/SUITE.json); repeatable")  # fmt: skip
    p.add_argument("--output", required=True, help="summary.json")
    p.add_argument("--markdown", required=True, help="summary.md")


def _summary(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.report import summary

    return summary.run(
        cfg["summary"], batch_dirs=args.batch_dirs, dedup_report=args.dedup_report,
        batches_report=args.batches_report, dataset_report=args.dataset_report, output=args.output,
        markdown=args.markdown, benchmarks=args.benchmarks,
    )  # fmt: skip


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
    Step("dataset", "the released data set: every kept entry of every batch, one JSONL", _dataset_args, _dataset,
         lambda r: f"{r['entries']} entries ({r['train']} train, {r['test']} test)"),
    Step("summary", "the run summary (per batch, totals beside the paper's) and its projection", _summary_args,
         _summary, _summary_line),
]  # fmt: skip
