"""The released data set: every kept entry of every batch (its train and its test split), in one JSONL file.

Each line is the entry as the batch's split wrote it, with one key added, ``split`` (``train`` or ``test``), so
the held-out pass@1 tasks stay recognisable. Batches in order, and within a batch the train lines, then the test
lines, each in file order. Rows that are not JSON objects are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiev.io import SkipLog, atomic_open, dumps, read_jsonl, write_json


def run(
    *, train: list[str], test: list[str], output: str | Path, report: str | Path, batches: list[int] | None = None
) -> dict[str, Any]:
    """The ``dataset`` step: ``train[i]`` and ``test[i]`` are the split files of batch ``batches[i]``."""
    if len(train) != len(test):
        raise ValueError(f"{len(train)} train file(s) but {len(test)} test file(s): give one of each per batch")
    batches = batches if batches is not None else list(range(len(train)))
    skips = SkipLog()
    per_batch = []
    with atomic_open(output) as out:
        for k, tr, te in zip(batches, train, test, strict=True):
            counts = {"batch": k, "train": 0, "test": 0}
            for split, path in (("train", tr), ("test", te)):
                for _, row in read_jsonl(path, skips):
                    out.write(dumps({**row, "split": split}) + "\n")
                    counts[split] += 1
            per_batch.append(counts)
    info = {
        "output": str(output),
        "entries": sum(b["train"] + b["test"] for b in per_batch),
        "train": sum(b["train"] for b in per_batch),
        "test": sum(b["test"] for b in per_batch),
        "batches": per_batch,
        "bad": len(skips),
        "bad_rows": skips.rows,
    }
    write_json(report, info)
    return info
