"""The batch files a report step is handed, one named argument per kind, zipped into one record per batch.

The rules hand each report step exactly the files its job declares as inputs, one argument per kind of file
(``--check-reports``, ``--students`` ...), each a list in batch order: the K-th file of every list is batch K's.
Which file is which kind is the rules' business (rules/common.smk): no module here spells a batch file's name.
A kind the rule did not hand over (its part switched off) is absent for every batch, ``None``, and reads as an
empty report (its fields null), whatever lies on disk: what Snakemake thinks the job reads is what it reads
(tests/test_workflow.py audits it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiev.io import read_json_if_exists

#: One kind's files, one per batch in batch order (empty: the kind is absent).
Files = Sequence[str | Path]


def kind_of(paths: Any, kind: str) -> Files:
    """One kind of batch file the step was handed (``paths.KIND``), in batch order; () where it was not."""
    return getattr(paths, kind, None) or ()


def per_batch(**kinds: Files | None) -> list[dict[str, Path | None]]:
    """One record per batch, in batch order (the position in the lists is the batch's index): kind -> its file,
    ``None`` for a kind not handed over (an empty list). Every kind handed over has one file per batch."""
    lists = {kind: list(files or []) for kind, files in kinds.items()}
    n = max((len(files) for files in lists.values()), default=0)
    uneven = {kind: len(files) for kind, files in lists.items() if files and len(files) != n}
    if uneven:
        raise ValueError(f"one file per batch ({n} batches) for each kind handed over, not {uneven}")
    return [{kind: Path(files[k]) if files else None for kind, files in lists.items()} for k in range(n)]


def read(path: Path | None) -> dict[str, Any]:
    """A handed-over JSON report's content; ``{}`` when its kind was not handed over or it does not exist."""
    return (read_json_if_exists(path) or {}) if path is not None else {}
