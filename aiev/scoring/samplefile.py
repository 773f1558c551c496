"""What every benchmark scorer shares: its error, reading a samples file against a task list, the sandbox of a
suite, and the second look at failures."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aiev.io import SkipLog, read_jsonl


class BenchmarkError(RuntimeError):
    pass


def prepare_rows(
    tasks: list[dict[str, Any]], samples: str | Path, fields: tuple[str, ...] = ("solution", "completion")
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One sample per task of ``tasks``, in task order, and what was skipped or filled in. A sample names its task
    by ``task_id`` (or MultiPL-E's ``name``) and carries its code in the first of ``fields`` it has."""
    ids = [t["task_id"] for t in tasks]
    known = set(ids)
    skips = SkipLog()
    chosen: dict[str, dict[str, Any]] = {}
    unknown: list[str] = []
    duplicates: list[str] = []
    for line, row in read_jsonl(samples, skips):
        tid = row.get("task_id", row.get("name"))
        field = next((f for f in fields if f in row), None)
        if not isinstance(tid, str) or field is None or not isinstance(row[field], str):
            skips.add(f"bad-sample: needs a task_id and a string {' or '.join(fields)}", file=str(samples), line=line)
        elif tid not in known:
            unknown.append(tid)
        elif tid in chosen:
            duplicates.append(tid)  # greedy pass@1: one sample per task; the first is scored
        else:
            chosen[tid] = {"task_id": tid, field: row[field]}
    missing = [t for t in ids if t not in chosen]
    rows = [chosen.get(t, {"task_id": t, fields[0]: ""}) for t in ids]
    return rows, {"missing": missing, "unknown": sorted(set(unknown)), "duplicates": duplicates,
                  "bad": len(skips), "bad_rows": skips.rows}  # fmt: skip


def read_tasks(path: Path) -> list[dict[str, Any]]:
    """A benchmark's tasks (jsonl or jsonl.gz) in file order; a MultiPL-E task's ``name`` is its ``task_id``."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    for r in rows:
        r.setdefault("task_id", r.get("name"))
    return rows


def sandbox_for(cfg: dict[str, Any], family: str) -> Any:
    """The sandbox a suite family's candidates run in: with Apptainer, ``benchmark.images[family]`` (the suite's
    toolchains, containers/*.def) where set, else ``sandbox.image``; bubblewrap sees the host's /usr."""
    from aiev.sandbox import from_config

    section = dict(cfg["sandbox"])
    image = cfg["benchmark"].get("images", {}).get(family)
    if section.get("backend") == "apptainer" and image:
        section["image"] = image
    sandbox, _, _ = from_config(section)
    return sandbox


def flaky(first: dict[str, Any], again: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tasks scored twice whose verdicts differ: ``{task_id: {"first": v1, "second": v2}}``."""
    return {t: {"first": first[t], "second": v} for t, v in again.items() if v != first[t]}


def verdict(res: Any) -> tuple[str, str]:
    """A sandboxed program's verdict: ``pass`` when it exited 0 in time, else ``fail`` and why."""
    if res.exit_code == 0 and not res.timed_out:
        return "pass", ""
    return "fail", ("timed out" if res.timed_out else f"exit {res.exit_code}: {res.stderr[-400:]}")


def run_all(
    run: Callable[[dict[str, Any], dict[str, Any]], tuple[str, str]], tasks: list[dict[str, Any]],
    rows: list[dict[str, Any]], workers: int, rescore: bool, has_code: Callable[[dict[str, Any]], bool],
) -> tuple[list[tuple[str, str]], dict[str, str]]:  # fmt: skip
    """Every task's (verdict, why), ``workers`` at once; with ``rescore``, the failed ones whose sample has code
    are run a second time: their second verdicts, by task id (for :func:`flaky`)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        verdicts = list(pool.map(run, tasks, rows))
    failed = [i for i, (v, _) in enumerate(verdicts) if v == "fail" and has_code(rows[i])]
    again: dict[str, str] = {}
    if rescore and failed:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            second = list(pool.map(run, [tasks[i] for i in failed], [rows[i] for i in failed]))
        again = {tasks[i]["task_id"]: v for i, (v, _) in zip(failed, second, strict=True)}
    return verdicts, again
