"""Cut the deduplicated seeds into batches (2000 seeds each in the paper), deterministically."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from aiev.io import atomic_dir, read_records, write_jsonl

#: A batch's file name (rules/common.smk's BATCH_FILE ends with the same pattern: a test checks it).
BATCH_FILE = "batch_{k}.jsonl"


def batch_name(k: int) -> str:
    return BATCH_FILE.format(k=k)


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


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``batches`` step (the workflow's checkpoint), with the parameters of the ``batches`` section
    (``paths``: ``input``, ``outdir``)."""
    records = read_records(paths.input)
    if not records:
        raise ValueError(f"{paths.input}: no seeds to batch")
    batches = partition(records, section["batch_size"], section["shuffle"], section["seed"], section.get("max_batches"))
    outdir = Path(paths.outdir)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(outdir) as tmp:  # a crash never leaves half a set of batches
        for k, batch in enumerate(batches):
            write_jsonl(tmp / batch_name(k), batch)
    info = {
        "seeds": len(records),
        "batch_size": section["batch_size"],
        "batches": len(batches),
        "sizes": [len(b) for b in batches],
        "dropped_by_max_batches": len(records) - sum(len(b) for b in batches),
    }
    return info


def list_batches(outdir: str | Path) -> list[int]:
    """Batch indices present in a batches directory, in order."""
    ks = [int(p.stem.split("_", 1)[1]) for p in Path(outdir).glob(BATCH_FILE.format(k="*"))]
    return sorted(ks)
