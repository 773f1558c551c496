"""How much of the demo's prompts the engine serves from its prompt cache, by request order.

    python benchmarks/engine_cache.py [--seeds 24] [--config config.yaml]

Runs the embedded default's generation twice at once on the same seeds (the first ``--seeds`` of its stdlib
source), each job under ``aiev serve`` with its own llama.cpp engine (one thread each, both cores busy), as the
demo's shards run, in the demo's order (``llm.order: prefix``: 1 in flight, 8 dialogues at once, the waiting
request that shares the longest beginning with the last prompt sent goes next):

- ``context``: the engine reuses only what its one context holds (``--prompt_states_mb 0``);
- ``states``: the engine also saves the context before a request drops it and starts a request from the saved
  state that serves most of it (aiev.llm.llama_server.PromptStates, the default).

The cache figures are the engine's own counters (``GET /aiev/counters``, as each shard's report holds them under
``this_run.engine_cache``); the times come from its log (llama-cpp-python, verbose: ``prompt eval time = ... / N
tokens`` per request, and the decoding runs). Goal: >= 85% of prompt tokens served from the cache. Needs the
demo's engine (``make .venv/.demo-stamp``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import record  # noqa: E402

from aiev.config import load_config, with_overrides  # noqa: E402
from aiev.seeds.sources import collect_seeds  # noqa: E402

ORDER = {"llm.order": "prefix", "llm.concurrency": 1, "generate.concurrent_dialogues": 8}
#: Engine arguments added to the config's, per variant.
VARIANTS = {"context": ["--prompt_states_mb", "0"], "states": []}
EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
DECODE = re.compile(r"\beval time =\s*([\d.]+) ms /\s*(\d+) runs")


def engine_times(log: str) -> dict[str, float]:
    """The engine's seconds of prompt evaluation and of decoding, from its verbose log (its counters, which the
    cache figures come from, do not time)."""
    evals = [(float(ms), int(n)) for ms, n in EVAL.findall(log)]
    decodes = [(float(ms), int(n)) for ms, n in DECODE.findall(log)]
    return {
        "prompt_eval_s": sum(ms for ms, _ in evals) / 1000,
        "decode_tokens": sum(n for _, n in decodes),
        "decode_s": sum(ms for ms, _ in decodes) / 1000,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    args = ap.parse_args()
    base = load_config(args.config)
    base["seeds"]["sources"][0]["count"] = args.seeds
    seeds, _ = collect_seeds(base["seeds"])
    work = Path(tempfile.mkdtemp(prefix="aiev-engine-cache-"))
    batch = work / "batch.jsonl"
    batch.write_text("".join(json.dumps(s) + "\n" for s in seeds[: args.seeds]))
    jobs = {}
    for name, engine_args in VARIANTS.items():
        cfg = with_overrides(base, ORDER)
        serve = cfg["llm"]["teacher"]["serve"]
        serve["args"] = [*(serve.get("args") or []), *engine_args]
        text = json.dumps({k: cfg[k] for k in ("llm", "generate", "sandbox")})
        out = work / name
        out.mkdir()
        cmd = ["aiev", "serve", "--role", "teacher", "--config", text, "--",
               "aiev", "generate", "--config", text, "--batch", str(batch), "--batch-index", "0", "--shard", "0",
               "--shards", "1", "--stage", "teaching", "--state-dir", str(out / "state"),
               "--dialogues", str(out / "dialogues.jsonl"), "--rejects", str(out / "rejects.jsonl"),
               "--report", str(out / "report.json")]  # fmt: skip
        with open(out / "job.log", "w") as log:  # the child holds its own copy of the descriptor
            jobs[name] = (subprocess.Popen(cmd, stderr=log, stdout=log, cwd=ROOT), time.monotonic(), out)
    ended: dict[str, float] = {}
    while len(ended) < len(jobs):  # each job's own wall time, whichever ends first
        for name, (proc, _, _) in jobs.items():
            if name not in ended and proc.poll() is not None:
                ended[name] = time.monotonic()
        time.sleep(0.5)
    rows = {}
    for name, (proc, t0, out) in jobs.items():
        if proc.returncode != 0:
            sys.exit(f"{name}: the job failed; see {out / 'job.log'}")
        report = json.loads((out / "report.json").read_text())
        cache = report["this_run"]["engine_cache"]
        rows[name] = engine_times((out / "job.log").read_text()) | {
            "requests": cache["requests"],
            "prompt_tokens_cached": cache["prompt_tokens_cached"],
            "prompt_tokens_evaluated": cache["prompt_tokens_evaluated"],
            "cached_share": cache["prompt_tokens_cached"] / max(1, cache["prompt_tokens"]),
            "states_restored": cache.get("states_restored", 0),
            "wall_s": ended[name] - t0,
            "passed": report["passed"],
            "order": report["this_run"].get("order", {}),
        }
    print(f"{len(seeds[: args.seeds])} seeds, one engine per variant, both at once ({work})")
    print("| engine | requests | prompt tokens cached / evaluated | cached | prompt eval s | decode tokens | "
          "decode s | wall s | passed | goal |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['requests']} | {r['prompt_tokens_cached']:,} / {r['prompt_tokens_evaluated']:,} | "
              f"{r['cached_share']:.0%} | {r['prompt_eval_s']:.0f} | {r['decode_tokens']:,} | {r['decode_s']:.0f} | "
              f"{r['wall_s']:.0f} | {r['passed']} | >= 85% cached |")  # fmt: skip
    print(json.dumps(rows, indent=1))
    figures = {name: {k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items() if k != "order"}
               for name, r in rows.items()}  # fmt: skip
    record("engine_cache", figures, engine=True, goal=">= 85% of prompt tokens from the cache (states, the default)",
           met=rows["states"]["cached_share"] >= 0.85)  # fmt: skip


if __name__ == "__main__":
    main()
