"""Where the tests and the benchmark scripts find the project's read-only benchmark data: ``../shared`` beside
the checkout (HumanEval(+), MBPP(+), DS-1000 and MultiPL-E with their licences, ``MANIFEST.md``). This is the one
place that path is written; the package and the workflow never default to it (their data comes from the config).
``AIEV_SHARED`` points elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AIEV_SHARED") or REPO.parent / "shared")
BENCHMARK_DATA = SHARED / "data" / "benchmarks"


def benchmark_file(*parts: str) -> Path:
    """A file under the benchmark data, or a clear error naming where it was looked for."""
    path = BENCHMARK_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (the benchmark data is looked for in {BENCHMARK_DATA}; "
                                "set AIEV_SHARED to the folder that holds data/benchmarks)")  # fmt: skip
    return path
