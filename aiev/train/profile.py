"""A compact summary of ``torch.profiler`` over a worker's last ``train.profile_steps`` steps (metrics.json's
``profile``): where a step's time goes, small enough to read and to quote.

- ``phases``: seconds per step in forward, backward and the optimizer step (``engine.step``: with ZeRO also the
  gradient reduction and the update), each closed by a device synchronisation, and their shares of the wall time;
- ``device_busy``: the GPU's kernel time over the wall time (well under 1: the GPU waits on the host, e.g. on
  kernel launches; a small model is hard to feed);
- ``kernel_launches``: kernels run on the device and launch calls made by the host, per step;
- ``communication``: the share of device time in collective kernels (NCCL: ZeRO-3's all-gathers of parameters,
  its reduce-scatters of gradients), or on a CPU the share of operator time in collectives (gloo);
- ``top_kernels`` (device kernels by time; empty on a CPU) and ``top_ops`` (operators by their own device time,
  on a CPU by their own CPU time).
"""

from __future__ import annotations

import re
from typing import Any

# collectives by their kernels' and c10d's names (not aten::broadcast_tensors, an ordinary operator)
COLLECTIVE = re.compile(r"nccl|all_?gather|reduce_?scatter|all_?reduce|c10d::|gloo", re.IGNORECASE)
LAUNCH = re.compile(r"^(cudaLaunchKernel|cuLaunchKernel|cudaLaunchKernelExC|cudaGraphLaunch|hipLaunchKernel)")
NAME_CHARS = 100


def profiler(cuda: bool, steps: int) -> Any:
    """The profiler context: the host's operators, and the GPU's kernels where there is one; one step (each step
    ends with ``prof.step()``) warms it up, the next ``steps`` are recorded."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    return profile(activities=activities, schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
                   record_shapes=False, with_stack=False, acc_events=True)  # fmt: skip


def _short(name: str) -> str:
    return name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 3] + "..."


def _self_device_us(avg: Any) -> float:
    for attr in ("self_device_time_total", "self_cuda_time_total"):
        if hasattr(avg, attr):
            return float(getattr(avg, attr))
    return 0.0


def summarize(
    prof: Any, *, steps: int, wall_s: float, phases: dict[str, float], cuda: bool, top: int = 10
) -> dict[str, Any]:
    from torch.autograd import DeviceType

    steps = max(steps, 1)
    events = prof.events()
    kernels: dict[str, list[float]] = {}
    launches = 0
    for ev in events:
        if ev.device_type == DeviceType.CPU:
            launches += bool(LAUNCH.match(ev.name))
            continue
        if getattr(ev, "is_user_annotation", False) or ev.name.startswith(("aiev.", "ProfilerStep")):
            continue  # record_function ranges shown on the GPU's timeline, not kernels
        row = kernels.setdefault(ev.name, [0, 0.0])
        row[0] += 1
        row[1] += ev.time_range.elapsed_us()
    device_us = sum(us for _, us in kernels.values())
    # operators (not our own record_function ranges: their "self" time is the Python between operators)
    ops = [
        a
        for a in prof.key_averages()
        if a.device_type == DeviceType.CPU and not a.key.startswith(("aiev.", "ProfilerStep"))
    ]
    if cuda:
        op_time = {a.key: _self_device_us(a) for a in ops}
        comm_us = sum(us for name, (_, us) in kernels.items() if COLLECTIVE.search(name))
        comm_share = comm_us / device_us if device_us else None
    else:
        op_time = {a.key: float(a.self_cpu_time_total) for a in ops}
        busy = sum(op_time.values())
        comm_share = sum(t for k, t in op_time.items() if COLLECTIVE.search(k)) / busy if busy else None
    calls = {a.key: int(a.count) for a in ops}
    op_total = sum(op_time.values()) or 1.0
    ranked = sorted(kernels.items(), key=lambda kv: -kv[1][1])[:top]
    return {
        "steps": steps,
        "wall_seconds_per_step": round(wall_s / steps, 4),
        "phases": {
            name: {"seconds_per_step": round(s / steps, 4), "share": round(s / wall_s, 4) if wall_s else None}
            for name, s in phases.items()
        },
        "device_seconds_per_step": round(device_us / 1e6 / steps, 4) if cuda else None,
        "device_busy": round(device_us / 1e6 / wall_s, 4) if cuda and wall_s else None,
        "kernel_launches": {
            "device_kernels_per_step": round(sum(int(n) for n, _ in kernels.values()) / steps, 1) if cuda else None,
            "host_launch_calls_per_step": round(launches / steps, 1),
        },
        "communication": {
            "share": round(comm_share, 4) if comm_share is not None else None,
            "of": "device kernel time" if cuda else "operator CPU time",
        },
        "top_kernels": [
            {
                "name": _short(name),
                "calls_per_step": round(n / steps, 1),
                "ms_per_step": round(us / 1e3 / steps, 3),
                "share": round(us / device_us, 4) if device_us else None,
            }
            for name, (n, us) in ranked
        ],
        "top_ops": [
            {
                "name": _short(k),
                "calls_per_step": round(calls[k] / steps, 1),
                "self_ms_per_step": round(t / 1e3 / steps, 3),
                "share": round(t / op_total, 4),
            }
            for k, t in sorted(op_time.items(), key=lambda kv: -kv[1])[:top]
        ],
    }
