"""Cut the deduplicated seeds into batches (2000 seeds each in the paper), deterministically."""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

from aiev.io import read_records, write_json, write_jsonl

BATCH_GLOB = "batch_*.jsonl"


def batch_name(k: int) -> str:
    return f"batch_{k}.jsonl"


def partition(
    records: list[dict[str, Any]],
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    max_batches: int | None = None,
) -> list[list[dict[str, Any]]]:
    """Split into consecutive batches of ``batch_size`` (the last may be smaller), after a seeded shuffle."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    order = list(records)
    if shuffle:
        random.Random(seed).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if max_batches is not None:
        batches = batches[:max_batches]
    return batches


def run(input_path: str | Path, outdir: str | Path, report_path: str | Path, section: dict[str, Any]) -> dict[str, Any]:
    records = read_records(input_path)
    if not records:
        raise ValueError(f"{input_path}: no seeds to batch")
    batches = partition(records, section["batch_size"], section["shuffle"], section["seed"], section.get("max_batches"))
    outdir = Path(outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    # Build the directory beside the target and swap it in, so a crash never leaves half a set of batches.
    tmp = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        for k, batch in enumerate(batches):
            write_jsonl(tmp / batch_name(k), batch)
        if outdir.exists():
            shutil.rmtree(outdir)
        tmp.rename(outdir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    report = {
        "seeds": len(records),
        "batch_size": section["batch_size"],
        "batches": len(batches),
        "sizes": [len(b) for b in batches],
        "dropped_by_max_batches": len(records) - sum(len(b) for b in batches),
    }
    write_json(report_path, report)
    return report


def list_batches(outdir: str | Path) -> list[int]:
    """Batch indices present in a batches directory, in order."""
    ks = [int(p.stem.split("_", 1)[1]) for p in Path(outdir).glob(BATCH_GLOB)]
    return sorted(ks)
