"""HumanEval(+) and MBPP(+) scored by evalplus 0.3.1, inside the sandbox: ``aiev benchmark score``.

The numbers are evalplus's own: its ``evaluate()`` runs on the samples (``task_id`` with ``solution``, the full
program, or ``completion``, appended to the task's prompt) against the HumanEval+ / MBPP+ file, with its time
limits (max(``min_time_limit``, ``gt_time_limit_factor`` x the canonical solution's time on this machine)) and its
per-candidate memory limit (``EVALPLUS_MAX_MEMORY_BYTES``). What we add around it:

* **Safety**: evalplus runs model-written code in its own subprocesses, with no network isolation. Here the whole
  evalplus run is one sandboxed program (:mod:`aiev.sandbox`: no network, read-only host, memory and time caps),
  with this environment's packages visible read-only; ``plus_runner.py`` is what runs inside.
* **Offline data, loaded the way users load it**: a local file (config ``benchmark.data.SUITE``) or, when none
  is set, evalplus's own download on the host (login nodes have internet), which is then shipped in.
* **evalplus 0.3.1's traps avoided**: the override paths are set before evalplus is imported; every run starts in
  a new scratch directory, so no stale ``*_eval_results.json`` is reused and nothing prompts on stdin; the run is
  bounded by the sandbox's time limit (0.3.1 can hang on some MBPP tasks); the expected-output cache lives in the
  run's scratch directory (computed once per run: ~15 s HumanEval+, ~60 s MBPP+ here).
* **Bad input is counted, never fatal**: unparsable rows, unknown task ids and duplicate samples are skipped and
  reported; a task without a sample is scored as a failure (an empty solution) and listed as ``missing``.
* ``limit`` scores the first N tasks of the data file (a subset data file is written), deterministically.

``base_pass@1`` is the share of tasks whose sample passes the base tests; ``plus_pass@1`` the share passing base
and plus tests (evalplus's definition).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sysconfig
import time
from importlib import resources
from pathlib import Path
from typing import Any

from aiev.scoring.samplefile import BenchmarkError, flaky, prepare_rows, read_tasks, sandbox_for
from aiev.suites import EVALPLUS_SUITES

log = logging.getLogger("aiev.scoring")

#: Each suite and the variable evalplus reads its data file from (HUMANEVAL_OVERRIDE_PATH, MBPP_OVERRIDE_PATH).
SUITES = {suite: f"{suite.upper()}_OVERRIDE_PATH" for suite in EVALPLUS_SUITES}
EVALPLUS_VERSION = "0.3.1"


def data_file(suite: str, configured: str | None) -> Path:
    """The HumanEval+ / MBPP+ file: the configured one, or evalplus's own download (cached on the host)."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise BenchmarkError(f"benchmark.data.{suite}: {path} does not exist")
        return path
    try:
        if suite == "humaneval":
            from evalplus.data.humaneval import _ready_human_eval_plus_path as ready
        else:
            from evalplus.data.mbpp import _ready_mbpp_plus_path as ready
        return Path(ready())
    except Exception as exc:  # network, missing package: say what to do
        raise BenchmarkError(
            f"no {suite} data: set benchmark.data.{suite} to a local HumanEval+/MBPP+ file, or run where evalplus "
            f"can download it (a login node) once: {exc}"
        ) from exc


def _verdicts(cfg: dict[str, Any], suite: str, tasks: list[dict[str, Any]], rows: list[dict[str, Any]]):
    """One sandboxed evalplus run on ``rows`` (one per task of ``tasks``): ``{task_id: {"base", "plus"}}`` and
    evalplus's hash of the data."""
    from aiev.sandbox import Limits

    section = cfg["benchmark"]
    args = {
        "suite": suite,
        "override_env": SUITES[suite],
        "workers": section["workers"],
        "max_memory_bytes": section["candidate_memory_mb"] << 20,
        "min_time_limit": section["min_time_limit"],
        "gt_time_limit_factor": section["gt_time_limit_factor"],
    }
    runner = resources.files("aiev.scoring").joinpath("plus_runner.py").read_text(encoding="utf-8")
    files = {
        "run.py": runner,
        "args.json": json.dumps(args),
        "data.jsonl": "".join(json.dumps(t) + "\n" for t in tasks),
        "samples.jsonl": "".join(json.dumps(r) + "\n" for r in rows),
    }
    sandbox = sandbox_for(cfg, "evalplus")
    limits = Limits(section["timeout_s"], section["memory_mb"], section["max_procs"], 64 << 20)
    site = Path(sysconfig.get_paths()["purelib"])  # evalplus and its dependencies, read-only inside
    res = sandbox.run(files, ["python3", "run.py"], limits, prefix=site)
    if res.timed_out or res.exit_code != 0:
        tail = res.stderr[-3000:]
        why = f"ran past benchmark.timeout_s = {section['timeout_s']} s" if res.timed_out else f"exit {res.exit_code}"
        raise BenchmarkError(f"evalplus ({suite}) failed in the sandbox: {why}\n{tail}")
    out = json.loads(res.stdout.strip().splitlines()[-1])
    per_task = {}
    for t in tasks:
        base, plus = out["verdicts"][t["task_id"]][0]
        per_task[t["task_id"]] = {"base": "pass" if base == "pass" else "fail",
                                  "plus": "pass" if base == plus == "pass" else "fail"}  # fmt: skip
    return per_task, out.get("hash"), args


def score(
    cfg: dict[str, Any],
    *,
    suite: str,
    samples: str | Path,
    limit: int | None = None,
    data: str | None = None,
) -> dict[str, Any]:
    """The ``benchmark score`` step for humaneval / mbpp: evalplus's verdicts on ``samples``.
    With ``benchmark.rescore_failures``, the failed tasks are scored once more and disagreements reported as
    ``flaky`` (the first verdicts are the ones counted)."""
    if suite not in SUITES:
        raise BenchmarkError(f"evalplus scores {', '.join(SUITES)}, not {suite!r}")
    section = cfg["benchmark"]
    start = time.monotonic()
    path = data_file(suite, data or section["data"][suite])
    tasks = read_tasks(path)
    limit = limit if limit is not None else section["limit"]
    if limit is not None:
        tasks = tasks[:limit]
    rows, info = prepare_rows(tasks, samples)
    if info["missing"]:
        log.warning("%d task(s) have no sample: scored as failures (%s...)", len(info["missing"]), info["missing"][:3])
    per_task, evalplus_hash, args = _verdicts(cfg, suite, tasks, rows)
    code = [(r.get("solution") or r.get("completion") or "").strip() for r in rows]
    failed = [i for i, t in enumerate(tasks) if per_task[t["task_id"]]["plus"] == "fail" and code[i]]
    again = {}
    if section["rescore_failures"] and failed:
        again, _, _ = _verdicts(cfg, suite, [tasks[i] for i in failed], [rows[i] for i in failed])
        log.info("%s: %d failed task(s) scored again, %d changed", suite, len(failed), len(flaky(per_task, again)))
    n = len(per_task)
    report = {
        "suite": suite,
        "n": n,
        "base_pass@1": round(sum(v["base"] == "pass" for v in per_task.values()) / n, 6) if n else None,
        "plus_pass@1": round(sum(v["plus"] == "pass" for v in per_task.values()) / n, 6) if n else None,
        "per_task": per_task,
        "rescored": len(again),
        "flaky": flaky(per_task, again),
        **info,
        "samples": str(samples),
        "data": str(path),
        "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "evalplus_hash": evalplus_hash,
        "limit": limit,
        "scorer": {
            "evalplus": EVALPLUS_VERSION,
            **{k: args[k] for k in ("workers", "min_time_limit", "gt_time_limit_factor", "max_memory_bytes")},
        },
        "seconds": round(time.monotonic() - start, 3),
    }
    return report
