"""Sandbox overhead and throughput.

    python benchmarks/sandbox.py [--backend auto] [--python PATH] [--n 60] [--seconds 10] [--workers CORES]

1. Per-execution latency, median of N sequential runs each: bare ``python3 -c pass`` (the very interpreter
   the sandbox offers), the sandbox running ``true`` (pure sandbox cost) and the sandbox running
   ``python3 -c pass`` (what one agent program pays at least). Goal: sandboxed <= 1.2x bare,
   with the memory cgroup (the run says whether it had one).
2. Throughput: as many concurrent runs as cores (threads calling ``sb.run``) for a fixed time, on a small
   CPU-bound program; runs/s and how busy the cores were, from the machine's /proc/stat (which includes
   anything else running: the background load is measured first and printed). Goal: sandboxed
   >= 0.95x bare at >= 95% of cores busy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import threading
import time
from typing import Any

from record import record

from aiev.interpreter import run_checked, run_program
from aiev.sandbox import Limits, get_sandbox
from aiev.sandbox.base import memory_by_cgroup
from aiev.sandbox.tracking import CgroupRoot

WORK = "s = 0\nfor i in range(300_000):\n    s += i * i\nprint(s)\n"


def median_ms(fn, n: int) -> float:
    fn()  # warm caches
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def cpu_stat() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])
    return total - idle, total


def throughput(one_run, workers: int, seconds: float) -> dict[str, Any]:
    count = [0]
    errors: list[str] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def loop() -> None:
        while time.monotonic() < stop:
            ok, why = one_run()
            with lock:
                count[0] += 1
                if not ok:
                    errors.append(why)

    busy0, total0 = cpu_stat()
    w0 = time.monotonic()
    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - w0
    busy1, total1 = cpu_stat()
    return {
        "runs": count[0],
        "runs_per_s": round(count[0] / wall, 2),
        "machine_busy_pct": round(100 * (busy1 - busy0) / max(1, total1 - total0), 1),
        "errors": errors[:3],
        "n_errors": len(errors),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--n", type=int, default=60, help="sequential runs per latency measurement")
    ap.add_argument("--seconds", type=float, default=10, help="duration of each throughput measurement")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--python", help="bwrap: the interpreter offered as python3 (default: this one's base)")
    ap.add_argument("--json", help="also write the numbers here")
    args = ap.parse_args()

    sb = get_sandbox(args.backend, python=args.python)
    python = getattr(sb, "python", "python3")  # bwrap offers this interpreter; apptainer its image's
    limits = Limits(timeout_s=30)

    def bare() -> None:
        subprocess.run([python, "-c", "pass"], check=True, capture_output=True)

    def sandboxed(cmd: list[str]):
        def go() -> None:
            res = sb.run({}, cmd, limits)
            assert res.exit_code == 0, res.stderr

        return go

    out: dict[str, Any] = {"backend": sb.name, "cores": os.cpu_count(), "python": python,
                           "memory_by_cgroup": memory_by_cgroup()}  # fmt: skip
    busy0, total0 = cpu_stat()
    time.sleep(2)
    busy1, total1 = cpu_stat()
    out["background_busy_pct"] = round(100 * (busy1 - busy0) / max(1, total1 - total0), 1)
    print(f"background load before measuring: {out['background_busy_pct']}% of cores busy", flush=True)
    out["bare_python_ms"] = round(median_ms(bare, args.n), 2)
    root = CgroupRoot.detect()
    if root is not None:  # what a process pays to enter a cgroup (here: the one it is in already), unsandboxed
        enter = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(root.parent / "cgroup.procs"), python, "-c",
                 "pass"]  # fmt: skip
        plain = ["/bin/sh", "-c", 'exec "$@"', "sh", python, "-c", "pass"]
        out["sh_python_ms"] = round(median_ms(lambda: subprocess.run(plain, check=True), args.n), 2)
        out["sh_enter_cgroup_python_ms"] = round(median_ms(lambda: subprocess.run(enter, check=True), args.n), 2)
        print(f"entering a cgroup (v{root.version}): sh + python3 -c pass {out['sh_python_ms']} ms, with "
              f"'echo $$ > cgroup.procs' first {out['sh_enter_cgroup_python_ms']} ms (the cost the spares take off "
              "a run's start)", flush=True)  # fmt: skip
    out["sandbox_true_ms"] = round(median_ms(sandboxed(["true"]), args.n), 2)
    out["sandbox_python_ms"] = round(median_ms(sandboxed(["python3", "-c", "pass"]), args.n), 2)
    out["overhead_ratio"] = round(out["sandbox_python_ms"] / out["bare_python_ms"], 3)
    # a dialogue's program as generation runs it: plain, and through the check-counting harness
    program = "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5\n"
    out["program_plain_ms"] = round(median_ms(lambda: run_program(sb, program, limits, None), args.n), 2)
    out["program_checked_ms"] = round(median_ms(lambda: run_checked(sb, program, 4, limits, None), args.n), 2)
    print(
        f"[{sb.name}] median of {args.n}: a 4-line program plain {out['program_plain_ms']} ms | counting its checks "
        f"{out['program_checked_ms']} ms (+{out['program_checked_ms'] - out['program_plain_ms']:.1f} ms)",
        flush=True,
    )
    print(
        f"[{sb.name}] median of {args.n}: bare python3 -c pass {out['bare_python_ms']} ms | "
        f"sandbox true {out['sandbox_true_ms']} ms | sandbox python3 -c pass {out['sandbox_python_ms']} ms | "
        f"ratio {out['overhead_ratio']}x (goal <= 1.2x: {'met' if out['overhead_ratio'] <= 1.2 else 'NOT met'}; "
        f"memory limit by cgroup: {out['memory_by_cgroup']})",
        flush=True,
    )

    def bare_work() -> tuple[bool, str]:
        p = subprocess.run([python, "-c", WORK], capture_output=True)
        return p.returncode == 0, p.stderr.decode()[-200:]

    def sandbox_work() -> tuple[bool, str]:
        res = sb.run({"main.py": WORK}, ["python3", "main.py"], limits)
        return res.exit_code == 0, res.stderr[-200:]

    out["throughput_bare"] = throughput(bare_work, args.workers, args.seconds)
    out["throughput_sandbox"] = throughput(sandbox_work, args.workers, args.seconds)
    for key in ("throughput_bare", "throughput_sandbox"):
        t = out[key]
        print(
            f"[{key}] {args.workers} workers x {args.seconds:g} s: {t['runs']} runs, {t['runs_per_s']} runs/s, "
            f"machine busy {t['machine_busy_pct']}%, "
            f"{t['n_errors']} errors",
            flush=True,
        )
    out["throughput_ratio"] = round(
        out["throughput_sandbox"]["runs_per_s"] / max(1e-9, out["throughput_bare"]["runs_per_s"]), 3
    )
    busy = out["throughput_sandbox"]["machine_busy_pct"]
    met = out["throughput_ratio"] >= 0.95 and busy >= 95
    print(
        f"sandboxed throughput = {out['throughput_ratio']} x bare at {busy}% busy (goal >= 0.95x at >= 95% busy: "
        f"{'met' if met else 'NOT met'})"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    latency = out["overhead_ratio"] <= 1.2
    record("sandbox", out, goal="sandboxed python3 -c pass <= 1.2x bare; throughput >= 0.95x bare at >= 95% busy",
           met=latency and met)  # fmt: skip


if __name__ == "__main__":
    main()
