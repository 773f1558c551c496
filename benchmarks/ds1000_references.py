"""DS-1000's reference answers scored by `aiev benchmark score --suite ds1000` (each problem's program in the
sandbox): the calibration of the scorer and of a library environment, per library, with the time it took.

    python benchmarks/ds1000_references.py [--data FILE] [--env DIR] [--workers 2] [--limit N]

FILE: ds1000.jsonl[.gz] (default ../shared/data/benchmarks/ds1000/ds1000.jsonl.gz). DIR: the libraries
(`pip install --target DIR -r envs/ds1000.txt`); default: this environment's. A correct scorer with DS-1000's
library versions passes (nearly) every reference; what fails is listed with its reason (a problem that needs the
network, which the sandbox does not give, fails). DS-1000's published check, Codex-002's answers scoring 0.388
overall, needs `data/codex002-answers.jsonl` of the DS-1000 repository: `--samples FILE` scores that instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from shared_data import BENCHMARK_DATA

REPO = Path(__file__).resolve().parents[1]
DATA = BENCHMARK_DATA / "ds1000" / "ds1000.jsonl.gz"
sys.path.insert(0, str(REPO))

from record import record  # noqa: E402

from aiev.config import load_config  # noqa: E402
from aiev.scoring import ds1000, scorers  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(DATA))
    ap.add_argument("--env", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--samples", default=None, help="score these answers (task_id ds1000/N or id N) instead")
    args = ap.parse_args()
    cfg = load_config({"benchmark": {"data": {"ds1000": args.data}, "ds1000_env": args.env, "workers": args.workers,
                                     "limit": args.limit}})  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        samples = Path(tmp) / "samples.jsonl"
        if args.samples:
            rows = [json.loads(x) for x in Path(args.samples).read_text().splitlines() if x.strip()]
            answers = [{"task_id": r["task_id"] if "task_id" in r else f"ds1000/{r['id']}",
                        "completion": r.get("completion", r.get("code", ""))} for r in rows]  # fmt: skip
        else:
            tasks = ds1000.tasks_of(Path(args.data))
            answers = [{"task_id": t["task_id"], "completion": t["reference_code"]} for t in tasks]
        samples.write_text("".join(json.dumps(a) + "\n" for a in answers))
        start = time.monotonic()
        report = scorers.run(cfg, SimpleNamespace(suite="ds1000", samples=samples, data=None))
        seconds = time.monotonic() - start
    print(f"{'library':<11} {'version':<12} {'n':>4} {'passed':>6} {'pass@1':>7}")
    for lib, r in report["per_library"].items():
        print(f"{lib:<11} {r['version'] or '-':<12} {r['n']:>4} {r['passed']:>6} {r['pass@1'] or 0:>7.3f}")
    print(f"overall: {report['pass@1']} over {report['scored']}/{report['n']} problems, {seconds:.0f} s, "
          f"{report['rescored']} failures scored twice, {len(report['flaky'])} changed")  # fmt: skip
    for task, why in report["failures"].items():
        print(f"  {task}: {why.strip().splitlines()[-1] if why.strip() else why}")
    figures = {"problems": report["n"], "scored": report["scored"], "pass@1": report["pass@1"],
               "failures": len(report["failures"]), "seconds": round(seconds), "workers": args.workers,
               "per_library": {lib: r["pass@1"] for lib, r in report["per_library"].items()}}  # fmt: skip
    record("ds1000_references", figures, goal="the references pass, but those that need the network")
    return 0


if __name__ == "__main__":
    sys.exit(main())
