"""Time to score all of HumanEval+ and MBPP+ (canonical solutions) with `aiev benchmark score` (evalplus inside the
sandbox) against `evalplus.evaluate` called directly on the same samples, in the same run, same worker count.

    python benchmarks/evalplus_score.py [--suites humaneval mbpp] [--workers 2] [--data-dir DIR]

DIR holds HumanEvalPlus-v0.1.10.jsonl.gz and MbppPlus-v0.2.0.jsonl.gz (default ../shared/data/benchmarks/evalplus).

Prints one line per suite: seconds for each, the ratio, and whether their per-task verdicts agree (evalplus's time
limits depend on the machine's load, so a disagreement is reported, not hidden).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from record import record
from shared_data import BENCHMARK_DATA

REPO = Path(__file__).resolve().parents[1]
FILES = {"humaneval": "HumanEvalPlus-v0.1.10.jsonl.gz", "mbpp": "MbppPlus-v0.2.0.jsonl.gz"}
ENV = {"humaneval": "HUMANEVAL_OVERRIDE_PATH", "mbpp": "MBPP_OVERRIDE_PATH"}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suites", nargs="+", default=["humaneval", "mbpp"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data-dir", default=str(BENCHMARK_DATA / "evalplus"))
    args = ap.parse_args()
    figures: dict[str, dict] = {}
    for suite in args.suites:
        data = Path(args.data_dir) / FILES[suite]
        with gzip.open(data, "rt") as fh:
            tasks = [json.loads(x) for x in fh if x.strip()]
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            samples = tmp / "samples.jsonl"
            samples.write_text("".join(json.dumps({"task_id": t["task_id"], "solution": t["prompt"] +
                                                   t["canonical_solution"]}) + "\n" for t in tasks))  # fmt: skip
            cfg = json.dumps({"benchmark": {"workers": args.workers}})
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "aiev", "benchmark", "score", "--config", cfg, "--suite", suite,
                            "--samples", str(samples), "--output", str(tmp / "aiev.json"), "--data", str(data)],
                           check=True, capture_output=True)  # fmt: skip
            ours = time.perf_counter() - t0
            direct_dir = tmp / "direct"
            direct_dir.mkdir()
            (direct_dir / "samples.jsonl").write_text(samples.read_text())
            env = dict(os.environ, **{ENV[suite]: str(data)}, XDG_CACHE_HOME=str(direct_dir / "cache"),
                       EVALPLUS_MAX_MEMORY_BYTES=str(8 << 30))  # fmt: skip
            code = (f"import os; from evalplus.evaluate import evaluate; evaluate({suite!r}, samples='samples.jsonl', "
                    f"parallel={args.workers}); os._exit(0)")  # fmt: skip
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=direct_dir, env=env, check=True, capture_output=True)
            direct = time.perf_counter() - t0
            a = json.loads((tmp / "aiev.json").read_text())["per_task"]
            d = json.loads((direct_dir / "samples_eval_results.json").read_text())["eval"]
            dv = {k: {"base": v[0]["base_status"], "plus": "pass" if v[0]["base_status"] == v[0]["plus_status"] ==
                      "pass" else "fail"} for k, v in d.items()}  # fmt: skip
            differ = sorted(k for k in a if a[k] != dv[k])
            print(f"{suite}: {len(tasks)} tasks, aiev (sandboxed) {ours:.1f} s, evalplus directly {direct:.1f} s, "
                  f"ratio {ours / direct:.2f}; verdicts differ on {differ or 'none'}", flush=True)  # fmt: skip
            figures[suite] = {
                "tasks": len(tasks),
                "aiev_sandboxed_s": round(ours, 1),
                "evalplus_direct_s": round(direct, 1),
                "ratio": round(ours / direct, 2),
                "verdicts_differ": len(differ),
            }
    record("evalplus_score", figures | {"workers": args.workers},
           goal="no slower than evalplus.evaluate directly, the same verdicts",
           met=all(f["ratio"] <= 1.0 and not f["verdicts_differ"] for f in figures.values()))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
