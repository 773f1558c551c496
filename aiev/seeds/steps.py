"""The seed part's steps: ``aiev seeds``, ``aiev dedup``, ``aiev batches`` (rules/seeds.smk)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step, override


def _seeds_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, help="seeds JSONL to write")
    p.add_argument("--report", required=True, help="JSON report: counts per source, every skipped row")


def _seeds(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.seeds import sources

    return sources.run(cfg["seeds"], args)


def _seeds_summary(r: dict[str, Any]) -> str:
    per = ", ".join(f"{name}: {i['kept']} kept, {i['skipped']} skipped" for name, i in r["sources"].items())
    return f"{r['total']} seeds ({per})"


def _dedup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--report", required=True, help="JSON report: counts, every dropped row and its twin")
    override(p, "--threshold", key="dedup.threshold", type=float, help="Jaccard threshold")
    override(p, "--shingle-size", key="dedup.shingle_size", type=int)
    override(p, "--num-perm", key="dedup.num_perm", type=int)
    override(p, "--min-tokens", key="dedup.min_tokens", type=int)
    override(p, "--workers", key="dedup.workers", type=int)
    override(p, "--seed", key="dedup.seed", type=int)


def _dedup(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.seeds import dedup

    return dedup.run(cfg["dedup"], args)


def _batches_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True)
    p.add_argument("--outdir", required=True, help="directory to hold batch_K.jsonl files")
    p.add_argument("--report", required=True)
    override(p, "--batch-size", key="batches.batch_size", type=int)
    override(p, "--seed", key="batches.seed", type=int)


def _batches(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.seeds import batches

    return batches.run(cfg["batches"], args)


STEPS = [
    Step("seeds", "read the configured seed sources into one normalised seeds.jsonl", _seeds_args, _seeds,
         _seeds_summary, report="report"),
    Step("dedup", "drop exact and near-duplicate seeds (MinHash LSH, verified by exact Jaccard)", _dedup_args,
         _dedup,
         lambda r: f"{r['input']} in, {r['kept']} kept, {r['dropped_exact']} exact and {r['dropped_near']} near "
         "duplicates dropped", report="report"),
    Step("batches", "cut the deduplicated seeds into batches (the workflow's checkpoint)", _batches_args, _batches,
         lambda r: f"{r['batches']} batches of up to {r['batch_size']} seeds", report="report"),
]  # fmt: skip
