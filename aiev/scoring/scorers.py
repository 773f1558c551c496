"""The benchmark suites' scorers: which scorer scores a suite and where its tasks come from (the names and
families themselves are :mod:`aiev.suites`).

| suite | scorer | tasks |
|---|---|---|
| humaneval, mbpp | :mod:`aiev.scoring.plus` (evalplus 0.3.1) | HumanEval+ / MBPP+ |
| multipl-e-LANG | :mod:`aiev.scoring.multiple` | MultiPL-E's HumanEval in LANG |
| ds1000 | :mod:`aiev.scoring.ds1000` | DS-1000 |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiev import suites as names
from aiev.scoring import ds1000, multiple, plus
from aiev.scoring.samplefile import BenchmarkError, read_tasks

SUITES = names.SUITES


def family(suite: str) -> str:
    """``evalplus``, ``multipl-e`` or ``ds1000`` (:data:`aiev.suites.FAMILIES`)."""
    try:
        return names.family(suite)
    except names.UnknownSuite as e:
        raise BenchmarkError(str(e)) from None


def tasks(cfg: dict[str, Any], suite: str, data: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """The suite's tasks (the first ``limit``, or ``benchmark.limit``), each with a ``task_id``."""
    section = cfg["benchmark"]
    kind = family(suite)
    if kind == "evalplus":
        rows = read_tasks(plus.data_file(suite, data or section["data"][suite]))
    elif kind == "multipl-e":
        rows = read_tasks(multiple.data_file(suite.removeprefix("multipl-e-"), data or section["data"]["multipl_e"]))
    else:
        rows = ds1000.tasks_of(ds1000.data_file(data or section["data"]["ds1000"]))
    limit = limit_of(cfg, limit)
    return rows[:limit] if limit is not None else rows


def limit_of(cfg: dict[str, Any], limit: int | None) -> int | None:
    return limit if limit is not None else cfg["benchmark"]["limit"]


def score(
    cfg: dict[str, Any], *, suite: str, samples: str | Path, output: str | Path, limit: int | None = None,
    data: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """``aiev benchmark score``: the suite's scorer on a samples file; the report is written to ``output``."""
    kind = family(suite)
    if kind == "evalplus":
        return plus.score(cfg, suite=suite, samples=samples, output=output, limit=limit, data=data)
    if kind == "multipl-e":
        lang = suite.removeprefix("multipl-e-")
        return multiple.score(cfg, lang=lang, samples=samples, output=output, limit=limit, data=data)
    return ds1000.score(cfg, samples=samples, output=output, limit=limit, data=data)
