"""The ``train`` step: check the train split, start the workers through the launcher, report.

The launcher (``scripts/launch_train.sh NODES PROCS -- WORKER_ARGS``) starts one torchrun per node; the workers
(:mod:`aiev.train.worker`) write the Hugging Face checkpoint and its ``metrics.json``. A train split with fewer
than ``train.min_records`` records is not trained: the output directory then holds ``skipped.json`` saying why,
and the report says the same (no crash, nothing lost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.io import SkipLog, read_jsonl, write_json

LAUNCHER = "scripts/launch_train.sh"


def count_records(paths: list[str]) -> int:
    return sum(1 for p in paths for _ in read_jsonl(p, SkipLog()))


@dataclass(frozen=True)
class TrainSettings:
    """What training reads: the ``train`` section and the ``format`` section (the special tokens)."""

    train: dict[str, Any]
    format: dict[str, Any]

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrainSettings:
        return cls(cfg["train"], cfg["format"])


def worker_args(settings: TrainSettings, sft: list[str], base_model: str, output: str, state_dir: str) -> list[str]:
    config = json.dumps({"train": settings.train, "format": settings.format}, sort_keys=True, separators=(",", ":"))
    args = ["--config", config]
    for path in sft:
        args += ["--sft", path]
    return [*args, "--base-model", base_model, "--output", output, "--state-dir", state_dir]


def link_checkpoint(base: str, out: Path) -> bool:
    """A batch that was not trained keeps the checkpoint it would have continued from: when that is an earlier
    student of the same run (a folder beside ``out``'s batch), its files are hard-linked into ``out`` (no copy,
    no space), so whatever reads this batch's student reads its own declared folder, never another batch's
    behind a pointer. False (``skipped.json`` then names the model) for a base model elsewhere or a filesystem
    without hard links."""
    src = Path(base)
    run_root = out.resolve().parent.parent
    if not (src / "config.json").is_file() or not src.resolve().is_relative_to(run_root):
        return False
    try:
        # not its training record (metrics.json, skipped.json) nor Snakemake's marker (.snakemake_timestamp)
        own = ("skipped.json", "metrics.json")
        for f in sorted(p for p in src.rglob("*") if p.is_file() and p.name not in own and not p.name.startswith(".")):
            target = out / f.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.unlink(missing_ok=True)
            os.link(f, target)
    except OSError:  # another filesystem: leave the pointer alone
        for f in out.rglob("*"):
            if f.is_file():
                f.unlink()
        return False
    return True


def run(settings: TrainSettings, paths: Any) -> dict[str, Any]:
    """The ``train`` step (``paths``: ``sft``, ``output``, ``state_dir``, ``base_model``, ``previous``,
    ``launcher``). ``previous``: the student of the batch before (incremental training) — used unless it was
    skipped."""
    section = settings.train
    sft, output, state_dir, previous = paths.sft, paths.output, paths.state_dir, paths.previous
    base = paths.base_model or section["base_model"]
    if previous and (Path(previous) / "config.json").exists():
        base = previous
    elif previous and (Path(previous) / "skipped.json").exists():  # not trained: go on from what it would have
        base = json.loads((Path(previous) / "skipped.json").read_text(encoding="utf-8"))["base_model"]
    n = count_records(sft)
    info: dict[str, Any] = {"sft": sft, "records": n, "base_model": base, "output": output}
    if n < section["min_records"]:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        reason = f"{n} SFT record(s), fewer than train.min_records = {section['min_records']}: not trained"
        info["linked"] = link_checkpoint(base, out)
        write_json(out / "skipped.json", {"reason": reason, **info})
        info.update(trained=False, reason=reason)
        return info
    argv = [paths.launcher or LAUNCHER, str(section["nodes"]), str(section["procs_per_node"]), "--"]
    argv += worker_args(settings, sft, base, output, state_dir)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # one thread per process unless the site says otherwise
    env.setdefault("AIEV_PYTHON", sys.executable)  # the workers run with this interpreter (its venv)
    started = time.monotonic()
    done = subprocess.run(argv, env=env)
    if done.returncode != 0:
        raise RuntimeError(
            f"training failed (launcher exit {done.returncode}); its checkpoints stay in {state_dir}: re-run to resume"
        )
    metrics = json.loads((Path(output) / "metrics.json").read_text(encoding="utf-8"))
    info.update(trained=True, **{k: metrics[k] for k in ("steps", "world_size", "train_seconds", "tokens_per_second")})
    info["final_loss"] = metrics["loss"][-1]["loss"] if metrics["loss"] else None
    info["wall_seconds"] = round(time.monotonic() - started, 3)  # the launch, start-up and save included
    return info
