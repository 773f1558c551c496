"""The benchmark suites' scorers: which scorer scores a suite and where its tasks come from (the names and
families themselves are :mod:`aiev.suites`).

| suite | scorer | tasks |
|---|---|---|
| humaneval, mbpp | :mod:`aiev.scoring.plus` (evalplus 0.3.1) | HumanEval+ / MBPP+ |
| multipl-e-LANG | :mod:`aiev.scoring.multiple` | MultiPL-E's HumanEval in LANG |
| ds1000 | :mod:`aiev.scoring.ds1000` | DS-1000 |
"""

from __future__ import annotations

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


def run(cfg: dict[str, Any], paths: Any) -> dict[str, Any]:
    """``aiev benchmark score``: the suite's scorer on a samples file (``paths``: ``suite``, ``samples``,
    ``data``); it reads the config's ``benchmark`` and ``sandbox`` sections."""
    suite, samples, data = paths.suite, paths.samples, getattr(paths, "data", None)
    kind = family(suite)
    if kind == "evalplus":
        return plus.score(cfg, suite=suite, samples=samples, data=data)
    if kind == "multipl-e":
        return multiple.score(cfg, lang=suite.removeprefix("multipl-e-"), samples=samples, data=data)
    return ds1000.score(cfg, samples=samples, data=data)
