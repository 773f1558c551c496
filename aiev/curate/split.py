"""Per-batch train/test split (9:1 in the paper). The test split is the pass@1 set of a later evaluation.

Only entries with runnable unit tests may enter the test split: ``passed`` is true and ``solution`` and
``tests`` are non-empty strings. With N good rows and E eligible ones, the test split has
``min(E, floor(test_fraction * N + 1/2))`` entries (test_fraction read as the decimal it is written as, so
half rounds up exactly): the eligible entries with the smallest ``sha256("{seed}:{id}")`` (ties: the earlier
line). Everything else goes to train. Both files keep the input order, each line copied byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

from aiev.config import exact_decimal
from aiev.io import SkipLog, copy_lines, read_jsonl, write_json

log = logging.getLogger("aiev.split")


def is_eligible(row: dict[str, Any]) -> bool:
    """Does the entry carry runnable unit tests (may it be a pass@1 test item)?"""
    return (
        row.get("passed") is True
        and isinstance(row.get("solution"), str)
        and bool(row["solution"].strip())
        and isinstance(row.get("tests"), str)
        and bool(row["tests"].strip())
    )


def held_out_size(total: int, eligible: int, test_fraction: float) -> int:
    """``min(eligible, floor(test_fraction * total + 1/2))``, computed exactly."""
    frac = exact_decimal(test_fraction)
    return min(eligible, math.floor(frac * total + Fraction(1, 2)))


def rank_key(seed: int, entry_id: str) -> str:
    return hashlib.sha256(f"{seed}:{entry_id}".encode()).hexdigest()


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``split`` step, with the ``split`` section (``test_fraction``, ``seed``; ``paths``: ``input``,
    ``train``, ``test``)."""
    return split(paths.input, paths.train, paths.test, section["test_fraction"], section["seed"])


def split(
    input_path: str | Path,
    train_path: str | Path,
    test_path: str | Path,
    test_fraction: float = 0.1,
    seed: int = 0,
    report_path: str | Path | None = None,
) -> dict[str, Any]:
    skips = SkipLog()
    lines: list[int] = []
    eligible: list[tuple[str, int, str]] = []  # (rank, line, id)
    for lineno, obj in read_jsonl(input_path, skips):
        rid = obj.get("id")
        if not isinstance(rid, str) or not rid:
            skips.add("bad-row: missing or non-string id", file=str(input_path), line=lineno)
            continue
        lines.append(lineno)
        if is_eligible(obj):
            eligible.append((rank_key(seed, rid), lineno, rid))
    n_test = held_out_size(len(lines), len(eligible), test_fraction)
    chosen = sorted(eligible)[:n_test]
    test_lines = {line for _, line, _ in chosen}
    copy_lines(input_path, test_path, test_lines)
    copy_lines(input_path, train_path, set(lines) - test_lines)
    report = {
        "input": str(input_path),
        "train_file": str(train_path),
        "test_file": str(test_path),
        "test_fraction": test_fraction,
        "seed": seed,
        "rule": "test = min(eligible, floor(test_fraction * total + 1/2)); lowest sha256(seed:id) first",
        "total": len(lines),
        "eligible": len(eligible),
        "train": len(lines) - len(test_lines),
        "test": len(test_lines),
        "test_ids": sorted(rid for _, _, rid in chosen),
        "bad": len(skips),
        "bad_rows": skips.rows,
    }
    if report_path is not None:
        write_json(report_path, report)
    return report
