"""The batch files a report step is handed, grouped by their batch folder and read by name.

The rules hand each report step the exact files its job declares as inputs (``results/batch_K/check_report.json``,
``results/batch_K/eval/student.json``, a trained student's folder ...), never a folder to look into: what Snakemake
thinks the job reads is what it reads (tests/test_workflow.py audits it). A file the rule did not hand over is
treated as absent, even where it lies on disk.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiev.io import read_json_if_exists

_BATCH_DIR = re.compile(r"batch_(\d+)")


@dataclass
class BatchFiles:
    """One batch's handed-over files: ``name`` (the path below ``results/batch_K``, e.g. ``eval/teacher.json``)
    to path."""

    index: int
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)

    def path(self, name: str) -> Path | None:
        return self.files.get(name)

    def json(self, name: str) -> dict[str, Any]:
        """The named JSON file's content; ``{}`` when it was not handed over or does not exist."""
        path = self.files.get(name)
        return (read_json_if_exists(path) or {}) if path is not None else {}

    @classmethod
    def of_dir(cls, folder: str | Path) -> BatchFiles:
        """Everything now in ``folder`` (for library use and tests; steps are handed their files). Its index is
        the folder's ``batch_K``, else 0."""
        root = Path(folder)
        m = _BATCH_DIR.fullmatch(root.name)
        return cls(int(m.group(1)) if m else 0, root,
                   {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))})  # fmt: skip


def group(paths: Iterable[str | Path]) -> list[BatchFiles]:
    """``paths`` grouped by the ``batch_K`` folder each lies in, in batch order.

    A path with no ``batch_K`` folder above it is an error: the rule handed the step something it cannot place."""
    found: dict[Path, BatchFiles] = {}
    for raw in paths:
        path = Path(raw)
        for parent in path.parents:
            m = _BATCH_DIR.fullmatch(parent.name)
            if m:
                b = found.setdefault(parent, BatchFiles(int(m.group(1)), parent))
                b.files[path.relative_to(parent).as_posix()] = path
                break
        else:
            raise ValueError(f"{raw}: not inside a batch folder (results/batch_K)")
    ordered = sorted(found.values(), key=lambda b: b.index)
    for a, b in itertools.pairwise(ordered):
        if a.index == b.index:
            raise ValueError(f"two folders for batch {a.index}: {a.folder} and {b.folder}")
    return ordered
