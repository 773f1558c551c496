"""Runs inside the sandbox (network off, the host's packages read-only): evalplus 0.3.1 scores one samples file.

Shipped into the sandbox as a file by :mod:`aiev.scoring.plus`, next to ``args.json``, ``data.jsonl`` and
``samples.jsonl``; it imports nothing from aiev. evalplus reads its data-path override when it is imported, so the
environment is set first. Its console output goes to stderr; stdout carries one JSON line: each sample's verdicts.
"""

import contextlib
import json
import os
import sys

with open("args.json", encoding="utf-8") as fh:
    args = json.load(fh)
os.environ[args["override_env"]] = os.path.abspath("data.jsonl")
os.environ["EVALPLUS_MAX_MEMORY_BYTES"] = str(args["max_memory_bytes"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

with contextlib.redirect_stdout(sys.stderr):
    from evalplus.evaluate import evaluate

    # returns None in 0.3.1; the verdicts are in samples_eval_results.json (fresh: this scratch directory is new)
    evaluate(
        args["suite"],
        samples=os.path.abspath("samples.jsonl"),
        parallel=args["workers"],
        min_time_limit=args["min_time_limit"],
        gt_time_limit_factor=args["gt_time_limit_factor"],
    )

with open("samples_eval_results.json", encoding="utf-8") as fh:
    results = json.load(fh)
verdicts = {task_id: [[r["base_status"], r["plus_status"]] for r in rows] for task_id, rows in results["eval"].items()}
print(json.dumps({"hash": results.get("hash"), "verdicts": verdicts}), flush=True)
sys.stderr.flush()
# evalplus 0.3.1 leaves a non-daemon "stuck run" watcher thread sleeping in 20 s steps: do not wait for it
os._exit(0)
