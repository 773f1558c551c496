"""What every benchmark script ends with: its figures, as data, in ``benchmarks/results/NAME.json``.

    from record import record
    record("dedup", {"wall_s": 33.0, ...}, goal="<= 60 s wall", met=True)

Each record holds the figures, the goal and whether it was met, the command that made it, the date, the machine
(CPU model, cores, memory, kernel; the llama.cpp CPU variant where the figures depend on it) and the git commit.
``make measurements`` renders docs/measurements.md from these files (benchmarks/render.py).
``AIEV_BENCHMARK_RESULTS`` writes them elsewhere (the tests do).

From a shell script: ``python benchmarks/record.py NAME --figures FILE.json [--goal ...] [--met yes|no]`` (e.g.
benchmarks/gpu.sh, whose gpu.json becomes the figures, its field names kept).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def results_dir() -> Path:
    return Path(os.environ.get("AIEV_BENCHMARK_RESULTS") or RESULTS)


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def engine_variant() -> str | None:
    """The llama.cpp CPU variant the portable build loads on this CPU (None without the engine)."""
    try:
        sys.path.insert(0, str(REPO))
        from aiev.llm import llama_server

        return llama_server.choose(llama_server.lib_dir()).get("variant") or "linked-in"
    except (ImportError, OSError, SystemExit):
        return None


def machine(*, engine: bool = False) -> dict[str, Any]:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    out: dict[str, Any] = {"cpu": _cpu_model(), "cores": cores, "memory_gib": _memory_gib(),
                           "kernel": f"{platform.system()} {platform.release()}",
                           "python": platform.python_version()}  # fmt: skip
    with contextlib.suppress(OSError):  # what else kept the cores busy (1-minute average)
        out["load_average"] = round(os.getloadavg()[0], 2)
    if engine:
        out["llama_cpp_variant"] = engine_variant()
    return out


def commit() -> str | None:
    """The checkout's commit (short), ``+dirty`` when tracked files differ from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return None
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results", ":!docs")
    return f"{head}+dirty" if dirty else head


def command(argv: list[str] | None = None) -> str:
    argv = sys.argv if argv is None else argv
    script = Path(argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO)
    return shlex.join(["python", str(script), *argv[1:]])


def record(name: str, figures: dict[str, Any], *, goal: str | None = None, met: bool | None = None,
           cmd: str | None = None, script: str | None = None, engine: bool = False,
           extra_machine: dict[str, Any] | None = None, notes: str | None = None) -> Path:  # fmt: skip
    """Write ``benchmarks/results/NAME.json`` and return its path. ``figures``: label -> value (nested dicts are
    rendered with dotted labels); ``goal``: the goal in words; ``met``: whether these figures meet it."""
    doc: dict[str, Any] = {
        "name": name,
        "script": script or command().split()[1],
        "command": cmd or command(),
        "source": "measured",
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": machine(engine=engine) | (extra_machine or {}),
        "commit": commit(),
        "goal": goal,
        "met": met,
        "figures": figures,
    }
    if notes:
        doc["notes"] = notes
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(f"recorded: {path}", file=sys.stderr)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--figures", required=True, type=Path, help="a JSON file: the figures")
    ap.add_argument("--goal")
    ap.add_argument("--met", choices=("yes", "no"))
    ap.add_argument("--command", required=True, help="the command that made the figures")
    ap.add_argument("--script", required=True)
    ap.add_argument("--gpu", help="the GPU, for the machine field")
    args = ap.parse_args()
    figures = json.loads(args.figures.read_text(encoding="utf-8"))
    met = None if args.met is None else args.met == "yes"
    record(args.name, figures, goal=args.goal, met=met, cmd=args.command, script=args.script,
           extra_machine={"gpu": args.gpu} if args.gpu else None)  # fmt: skip


if __name__ == "__main__":
    main()
