"""The demo's figures, read from a finished run's own files, each beside its goal.

    make demo            # or any `snakemake` run of the workflow
    python benchmarks/demo_run.py [--workdir .]

Reads what the run wrote, nothing else: ``results/summary.json`` (per batch: dialogues, passed, the engines'
prompt-cache share by their own counters, each step's wall seconds) and the newest Snakemake log
(``.snakemake/log/<start>.snakemake.log`` of the last run that ran jobs: its ``Elapsed time``). The
workflow's time is the ``snakemake`` run's, after the set-up (virtual environment, engine build); ``make demo``'s
own minutes are the caller's clock.

Goals: the workflow in at most 15 min with at least 10 passed dialogues; at least 85% of prompt tokens
served from the engines' prompt caches.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from record import record

GOAL_MINUTES = 15.0
GOAL_PASSED = 10
GOAL_CACHE = 0.85


def workflow_seconds(workdir: Path) -> tuple[float, str] | None:
    """(seconds, log name) of the newest Snakemake run in ``workdir`` that ran jobs (``snakemake --report`` writes a
    log too); the log's own ``Elapsed time`` where it has one, else from its name to its last change."""
    for log in sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True):
        text = log.read_text(encoding="utf-8", errors="replace")
        if "steps (" not in text:
            continue
        elapsed = re.findall(r"^Elapsed time: (\d+):(\d+):(\d+(?:\.\d+)?)", text, re.M)
        if elapsed:
            h, m, sec = elapsed[-1]
            return int(h) * 3600 + int(m) * 60 + float(sec), log.name
        started = datetime.strptime(log.name.split(".")[0], "%Y-%m-%dT%H%M%S")
        return log.stat().st_mtime - started.timestamp(), log.name
    return None


def rows(workdir: Path) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, goal, met) for each row the run's files give."""
    summary: dict[str, Any] = json.loads((workdir / "results" / "summary.json").read_text(encoding="utf-8"))
    batches = summary["batches"]
    passed = sum(b.get("passed") or 0 for b in batches)
    seeds = sum(b.get("seeds") or 0 for b in batches)
    out: list[tuple[str, str, str, bool | None]] = []
    wall = workflow_seconds(workdir)
    if wall is not None:
        minutes = wall[0] / 60
        met = minutes <= GOAL_MINUTES and passed >= GOAL_PASSED
        out.append(("workflow (snakemake, after set-up)", f"{minutes:.1f} min, {passed} of {seeds} dialogues passed",
                    f"<= {GOAL_MINUTES:.0f} min with >= {GOAL_PASSED} passed", met))  # fmt: skip
    for b in batches:
        w = b.get("wall_seconds") or {}
        steps = ", ".join(f"{k} {v:.0f} s" for k, v in w.items() if v)
        out.append((f"batch {b['batch']}: wall seconds by step", steps or "-", "-", None))
        cache = b.get("prompt_cache")
        if cache is not None:
            out.append((f"batch {b['batch']}: prompt tokens from the engines' caches", f"{cache:.1%}",
                        f">= {GOAL_CACHE:.0%}", cache >= GOAL_CACHE))  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("."), help="the run's folder (default: here)")
    args = ap.parse_args(argv)
    if not (args.workdir / "results" / "summary.json").exists():
        print(f"{args.workdir}/results/summary.json: no finished run here (make demo first)", file=sys.stderr)
        return 2
    print(f"{'what':<52} {'measured':<44} {'goal':<28} met")
    found = rows(args.workdir)
    for what, measured, goal, met in found:
        flag = "-" if met is None else ("yes" if met else "NO")
        print(f"{what:<52} {measured:<44} {goal:<28} {flag}")
    goals = [met for _, _, _, met in found if met is not None]
    record("demo_run", {what: measured for what, measured, _, _ in found}, engine=True,
           goal=f"the workflow in <= {GOAL_MINUTES:.0f} min with >= {GOAL_PASSED} passed; >= {GOAL_CACHE:.0%} of "
           "prompt tokens from the engines' caches", met=all(goals) if goals else None)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
