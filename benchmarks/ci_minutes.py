"""The minutes of the tests, read from the output of README's test command (``make test``, as ``.ci/run`` runs it).

    make test 2>&1 | tee test.log      # or CI's log of .ci/run
    python benchmarks/ci_minutes.py test.log

``scripts/run-tests.sh`` runs the pytest sessions at once (the rest, and the SLURM tests in two sessions beside
it) and prints their output one after another, each SLURM session under a ``== the SLURM tests (...)`` header.
This prints each session's own wall time (pytest's closing ``in N s`` line) and the pytest part's wall time,
the longest of them, beside the goal: at most 15 minutes, the real-engine tests included.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from record import record

GOAL_MINUTES = 15.0
SUMMARY = re.compile(r"^=*\s*(?P<counts>(?:\d+ \w+(?:, )?)+) in (?P<secs>[\d.]+)s\b", re.M)
HEADER = re.compile(r"^== the SLURM tests \((?P<name>[^)]*)\)", re.M)


def sessions(text: str) -> list[tuple[str, str, float]]:
    """(session, its counts, seconds) for each pytest session in the log, in the order printed."""
    cuts = [(0, "the rest")] + [(m.start(), f"SLURM: {m.group('name')}") for m in HEADER.finditer(text)]
    out = []
    for (start, name), (end, _) in zip(cuts, [*cuts[1:], (len(text), "")], strict=True):
        found = SUMMARY.findall(text[start:end])
        if found:
            counts, secs = found[-1]
            out.append((name, counts.rstrip(", "), float(secs)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log", type=Path)
    args = ap.parse_args()
    found = sessions(args.log.read_text(encoding="utf-8", errors="replace"))
    if not found:
        sys.exit(f"{args.log}: no pytest summary line (the output of `make test`?)")
    width = max(len(name) for name, _, _ in found) + 2
    for name, counts, secs in found:
        print(f"{name:<{width}}{secs / 60:6.1f} min  {counts}")
    wall = max(secs for _, _, secs in found)
    met = "yes" if wall <= GOAL_MINUTES * 60 else "NO"
    print(f"{'pytest (sessions at once)':<{width}}{wall / 60:6.1f} min  goal <= {GOAL_MINUTES:g} min: {met}")
    figures = {f"{name} (min)": round(secs / 60, 1) for name, _, secs in found}
    figures |= {f"{name} (counts)": counts for name, counts, _ in found}
    figures["pytest, sessions at once (min)"] = round(wall / 60, 1)
    record("ci_minutes", figures, goal=f"the pytest part in <= {GOAL_MINUTES:g} min", met=met == "yes")


if __name__ == "__main__":
    main()
