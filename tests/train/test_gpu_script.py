"""benchmarks/gpu.sh, the one prepared GPU run, kept from rotting between GPU runs: its CPU twin (the tests'
tiny model, a short sequence) runs every phase for real here and writes gpu.json with the fields the GPU run
writes; a budget too short for any phase still leaves a gpu.json that says so; the helpers that the script's
JSON rests on (a phase's record, FLOPs per token, MFU) are checked on their own; and the worker's GPU-only
choices (its GPU taken before the NCCL process group, ZeRO-2, gradient checkpointing, the profiler) where a CPU
can show them."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tests.generate.test_dialogue import bwrap_or_skip
from tests.train.test_train import write_sft

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu.sh"
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_bench  # noqa: E402

PHASES = ["install", "env", "fixtures", "probe_zero3", "train_zero3", "profile", "serve_evaluate", "probe_zero2"]
TOP = {"phases", "device", "budget_seconds", "started", "sequence_length", "peak_tflops", "env", "model",
       "probe_zero3", "train_zero3", "profile", "serve_evaluate", "probe_zero2", "wall_seconds",
       "finished"}  # fmt: skip
TRAIN = {"launcher", "zero_stage", "dtype", "device", "gpu", "micro_batch_size", "gradient_accumulation_steps",
         "sequence_length", "parameters", "steps", "warmup_steps", "timed_steps", "tokens_per_second",
         "step_seconds_mean", "step_seconds_median", "peak_gpu_memory_mb", "peak_gpu_reserved_mb", "peak_rss_mb",
         "flops_per_token", "train_seconds", "save_seconds", "worker_wall_seconds", "launch_wall_seconds",
         "final_loss", "step_seconds_all", "student", "student_files", "mfu", "mfu_vs_measured_matmul",
         "mfu_with_attention", "model_tflops_per_second"}  # fmt: skip
PROBE_RUN = {"micro_batch", "fits", "step_seconds", "step_seconds_min", "tokens_per_second", "peak_gpu_memory_mb",
             "peak_gpu_reserved_mb", "loss", "mfu", "mfu_vs_measured_matmul", "mfu_with_attention",
             "model_tflops_per_second"}  # fmt: skip
PROFILE = {"steps", "wall_seconds_per_step", "phases", "device_seconds_per_step", "device_busy", "kernel_launches",
           "communication", "top_kernels", "top_ops"}  # fmt: skip


def run_script(tmp: Path, env: dict, budget: int, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    out = tmp / "out"
    cmd = ["bash", str(SCRIPT), "--device", "cpu", "--out", str(out), "--work", str(tmp / "work"),
           "--budget", str(budget)]  # fmt: skip
    env = dict(env, AIEV_PYTHON=sys.executable, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp)
    doc = json.loads((out / "gpu.json").read_text()) if (out / "gpu.json").exists() else {}
    return done, doc


@pytest.mark.train
def test_the_cpu_twin_runs_every_phase_and_writes_the_gpu_runs_fields(tmp_path, tool_env):
    pytest.importorskip("deepspeed")
    bwrap_or_skip()  # aiev evaluate runs the student's programs in the sandbox
    done, doc = run_script(tmp_path, tool_env, budget=600, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    statuses = {name: p["status"] for name, p in doc["phases"].items()}
    assert statuses == dict.fromkeys(PHASES, "ok") | {"install": "skipped"}, json.dumps(doc["phases"], indent=1)
    assert set(doc) == TOP
    assert doc["device"] == "cpu" and doc["peak_tflops"]["bf16_dense"] == 989.4

    model = doc["model"]
    assert model["architecture"] == "llama" and model["vocab_with_special_tokens"] == model["vocab_size"] + 4
    assert model["sft_record_tokens_min"] > doc["sequence_length"]  # every record fills the sequence

    for stage in (3, 2):
        probe = doc[f"probe_zero{stage}"]
        assert probe["zero_stage"] == stage and probe["largest_fit"] == 4 and probe["stopped"] is None
        assert [r["micro_batch"] for r in probe["runs"]] == [1, 2, 4]
        for r in probe["runs"]:
            assert set(r) == PROBE_RUN and r["fits"] and r["tokens_per_second"] > 0 and r["mfu"] is None
        assert probe["best"] in probe["runs"]

    train = doc["train_zero3"]
    assert set(train) == TRAIN
    assert train["zero_stage"] == 3 and train["micro_batch_size"] == 4  # the largest that fitted
    assert train["tokens_per_second"] > 0 and train["step_seconds_median"] > 0 and train["timed_steps"] == 4
    assert len(train["step_seconds_all"]) == train["steps"] == 2 + 4 + 1 + 2  # warm-up, timed, profiler's, profiled
    assert train["parameters"] > 0 and train["flops_per_token"]["6N"] == 6 * train["parameters"]
    assert train["mfu"] is None and train["model_tflops_per_second"] > 0  # no peak on a CPU
    assert {"model.safetensors", "config.json", "tokenizer.json", "metrics.json"} <= set(train["student_files"])

    profile = doc["profile"]
    assert set(profile) == PROFILE and profile["steps"] == 2
    assert set(profile["phases"]) == {"forward", "backward", "optimizer_step"}
    assert all(p["seconds_per_step"] > 0 for p in profile["phases"].values())
    assert profile["top_ops"] and profile["top_kernels"] == [] and profile["device_busy"] is None

    served = doc["serve_evaluate"]
    ev = served["evaluate"]
    assert ev["n"] == 4 and ev["pass_at_1"] is not None and 0 <= ev["pass_at_1"] <= 1 and ev["wall_seconds"] > 0
    assert served["serving"]["sequential"]["tokens_per_second"] > 0
    assert served["serving"]["concurrent"]["completion_tokens"] > 0

    log = tmp_path / "out" / "gpu.log"
    assert log.stat().st_size < 200_000 and "== serve_evaluate" in log.read_text()
    # results/: the measurement record the script writes beside gpu.json
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu.json", "gpu.log", "results"]
    assert "train_zero3:" in done.stdout  # the digest at the end, for the device run's output


def test_a_budget_too_short_skips_the_phases_and_says_so(tmp_path, tool_env):
    done, doc = run_script(tmp_path, tool_env, budget=20, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    phases = doc["phases"]
    for name in ("env", "fixtures", "probe_zero3", "train_zero3", "probe_zero2"):
        assert phases[name]["status"] == "skipped" and "budget" in phases[name]["note"], name
    assert phases["serve_evaluate"]["status"] == "skipped" and "no trained student" in phases["serve_evaluate"]["note"]
    assert doc["device"] == "cpu" and "wall_seconds" in doc


def test_a_failed_or_timed_out_phase_is_recorded_with_its_error_and_last_lines(tmp_path):
    log = tmp_path / "p.log"
    log.write_text("loading\n" * 30 + "Traceback (most recent call last):\nRuntimeError: NCCL error: unhandled\n")
    doc = tmp_path / "gpu.json"
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"runs": [1]}))

    def record(*args: str) -> dict:
        argv = ["record", "--json", str(doc), *args]
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_bench.py"), *argv], check=True)
        return json.loads(doc.read_text())

    d = record("--phase", "train_zero3", "--rc", "1", "--seconds", "12.5", "--log", str(log))
    p = d["phases"]["train_zero3"]
    assert p["status"] == "failed" and p["rc"] == 1 and p["seconds"] == 12.5
    assert "RuntimeError: NCCL error" in p["error"] and p["log_tail"].endswith("NCCL error: unhandled")
    assert len(p["log_tail"].splitlines()) == gpu_bench.TAIL_LINES
    d = record("--phase", "probe_zero3", "--rc", "124", "--log", str(log), "--result", str(result))
    assert d["phases"]["probe_zero3"]["status"] == "timeout" and d["probe_zero3"] == {"runs": [1]}
    d = record("--phase", "train_zero3", "--status", "keep", "--rc", "1", "--result", str(result))
    assert d["phases"]["train_zero3"]["status"] == "failed" and d["train_zero3"] == {"runs": [1]}  # kept
    d = record("--phase", "-", "--set", "wall_seconds=42", "--set", 'device="cuda"')
    assert d["wall_seconds"] == 42 and d["device"] == "cuda" and "-" not in d["phases"]


def test_flops_per_token_and_mfu():
    layers = (["sliding_attention"] * 5 + ["full_attention"]) * 3  # Gemma-3-270M's
    gemma = types.SimpleNamespace(num_attention_heads=4, head_dim=256, hidden_size=640, num_hidden_layers=18,
                                  sliding_window=512, layer_types=layers)  # fmt: skip
    f = gpu_bench.flops_per_token(gemma, 5120)
    f |= gpu_bench.flops_per_token_from(f, 268_098_176)
    # x3 for forward and backward; 3 full layers at half the context on average, 15 sliding ones at the window's;
    # QK^T and AV, 2 FLOPs a multiply-add, over 4 heads x 256
    full = 3 * 3 * 2 * 2 * (5120 + 1) / 2 * 1024
    window = 3 * 15 * 2 * 2 * gpu_bench._mean_window(5120, 512) * 1024
    assert f["attention"] == round(full + window) and f["6N"] == 6 * 268_098_176
    assert 0.1 < f["attention"] / f["6N"] < 0.15  # attention adds about an eighth at 5120 for this model
    assert gpu_bench._mean_window(4, 2) == (1 + 2 + 2 + 2) / 4
    m = gpu_bench.mfu(100_000.0, f, "cuda")
    assert m["mfu"] == round(6 * 268_098_176 * 1e5 / 989.4e12, 4) and m["mfu_vs_measured_matmul"] > m["mfu"]
    assert m["mfu_with_attention"] > m["mfu"]
    assert gpu_bench.mfu(100_000.0, f, "cpu")["mfu"] is None


def test_a_gpu_rank_takes_its_gpu_before_the_nccl_process_group(monkeypatch):
    """NCCL's communicator (and a barrier before any collective) uses the current GPU: a rank that joins the process
    group first would use GPU 0 on every rank of a node. ``start`` makes LOCAL_RANK's GPU current first."""
    import torch

    from aiev.train import worker

    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    fake = types.SimpleNamespace(init_distributed=lambda **kw: calls.append(("init_distributed", kw["dist_backend"])))
    monkeypatch.setitem(sys.modules, "deepspeed", fake)
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("DS_ACCELERATOR", "")
    monkeypatch.delenv("DS_ACCELERATOR")
    section = {"device": "auto", "bf16": "auto", "dist_timeout_s": 60}
    assert worker.start(section) == (True, "auto: this GPU computes bf16 natively")
    assert calls == [("set_device", 3), ("init_distributed", "nccl")]
    assert section["bf16"] is True
    import os

    assert os.environ["DS_ACCELERATOR"] == "cuda"


def test_ds_config_of_each_zero_stage():
    from aiev.config import load_config
    from aiev.train.worker import ds_config

    section = load_config({})["train"]
    assert section["zero_stage"] == 3 and section["gradient_checkpointing"] is False and section["profile_steps"] == 0
    z3 = ds_config(section, 4, 10)["zero_optimization"]
    assert z3["stage"] == 3 and z3["stage3_gather_16bit_weights_on_model_save"] is True
    z2 = ds_config(dict(section, zero_stage=2), 4, 10)["zero_optimization"]
    assert z2["stage"] == 2 and not any(k.startswith("stage3") for k in z2)
    assert ds_config(section, 4, 10)["train_batch_size"] == 8 * 4 * 4


@pytest.mark.train
def test_gradient_checkpointing_and_the_profiler_under_zero3(tiny_model, tmp_path, tool_env):
    """One process: ZeRO-3 with gradient checkpointing trains (the loss is finite), and the last two steps are
    profiled after one warm-up step: metrics.json's ``profile`` holds their phases and operators."""
    sft = write_sft(tmp_path / "sft.jsonl", 2)
    cfg = {"train": {"procs_per_node": 1, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
                     "max_seq_len": 256, "max_steps": 5, "bf16": False, "save_every_steps": 0,
                     "scheduler": "constant", "warmup_ratio": 0.0, "epochs": 50, "gradient_checkpointing": True,
                     "profile_steps": 2}}  # fmt: skip
    cmd = [sys.executable, "-m", "aiev", "train", "--config", json.dumps(cfg), "--sft", str(sft), "--base-model",
           str(tiny_model), "--output", str(tmp_path / "student"), "--state-dir", str(tmp_path / "state"),
           "--report", str(tmp_path / "report.json"), "--launcher",
           str(REPO / "scripts" / "launch_train.sh")]  # fmt: skip
    done = subprocess.run(cmd, env=dict(tool_env, OMP_NUM_THREADS="1"), capture_output=True, text=True, cwd=REPO,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    m = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert m["gradient_checkpointing"] is True and m["zero_stage"] == 3 and m["parameters"] > 0
    assert all(h["loss"] == h["loss"] and h["tokens"] > 0 for h in m["loss"])  # finite (not NaN), tokens counted
    assert [h.get("profiled", False) for h in m["loss"]] == [False, False, True, True, True]  # warm-up + 2
    assert m["profile"]["steps"] == 2 and m["profile"]["phases"]["backward"]["seconds_per_step"] > 0
    # the forward runs again inside the backward: the attention kernel is called twice per layer and step
    sdpa = [o for o in m["profile"]["top_ops"] if "scaled_dot_product" in o["name"] and "backward" not in o["name"]]
    assert sdpa and sdpa[0]["calls_per_step"] == 4
    assert m["peak_gpu_memory_mb"] is None and m["save_seconds"] >= 0
