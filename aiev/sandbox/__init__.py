"""The code interpreter: every program the agents write runs here, network off, with hard limits.

    from aiev.sandbox import Limits, get_sandbox
    sb = get_sandbox()                                  # apptainer if on PATH, else bwrap, else SandboxError
    res = sb.run({"main.py": code}, ["python3", "main.py"], Limits(timeout_s=10))
    sb.install(["numpy==2.1.0"], prefix, Limits(timeout_s=300))   # a dialogue's `pip install` turn
    sb.run(files, ["python3", "main.py"], prefix=prefix)          # ...seen by that dialogue's later runs

There is no unsandboxed fallback. See docs/sandbox.md for the threat model and what each backend does.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from aiev.sandbox.base import INSTALL_DISK_MB, ExecResult, Limits, Sandbox, SandboxError
from aiev.sandbox.install import PipInstallError, parse_pip_install

__all__ = [
    "DEFAULT_IMAGE",
    "ExecResult",
    "Limits",
    "PipInstallError",
    "Sandbox",
    "SandboxError",
    "execution_settings",
    "from_config",
    "get_sandbox",
    "limits_from_config",
    "parse_pip_install",
]

#: The image the workflow builds from containers/sandbox.def (config key sandbox.image).
DEFAULT_IMAGE = "results/sandbox/sandbox.sif"


def get_sandbox(
    backend: str = "auto",
    image: str | Path | None = None,
    install_network: bool = False,
    install_disk_mb: int = INSTALL_DISK_MB,
    index_url: str | None = None,
    find_links: str | Path | None = None,
    *,
    python: str | None = None,
) -> Sandbox:
    """A ready sandbox (bwrap is probed with one trivial run); SandboxError if none can be had.

    ``auto``: apptainer when it is on PATH, else bwrap. ``python`` (bwrap only): the interpreter offered as
    ``python3`` inside, default the one running this code (its base installation, not a virtualenv).
    """
    common = {"install_network": install_network, "install_disk_mb": install_disk_mb, "index_url": index_url,
              "find_links": find_links}  # fmt: skip
    if backend == "auto":
        backend = "apptainer" if shutil.which("apptainer") else "bwrap"
        if backend == "bwrap" and shutil.which("bwrap") is None:
            raise SandboxError(
                "no sandbox backend: neither apptainer nor bwrap is on PATH. Install bubblewrap "
                "(Debian/Ubuntu: apt-get install bubblewrap) or apptainer; programs never run unsandboxed."
            )
    if backend == "bwrap":
        from aiev.sandbox.bwrap import BwrapSandbox

        return BwrapSandbox(python=python, **common)
    if backend == "apptainer":
        from aiev.sandbox.apptainer import ApptainerSandbox

        return ApptainerSandbox(image=image or DEFAULT_IMAGE, **common)
    raise SandboxError(f"unknown sandbox backend {backend!r} (auto, bwrap or apptainer)")


def limits_from_config(section: dict) -> tuple[Limits, Limits]:
    """The run limits and the install limits of a config's ``sandbox`` section: the one place that builds them."""
    inst = section["install"]
    run = Limits(section["timeout_s"], section["memory_mb"], section["max_procs"], section["max_output_bytes"])
    install = Limits(inst["timeout_s"], section["memory_mb"], section["max_procs"], section["max_output_bytes"])
    return run, install


def from_config(section: dict) -> tuple[Sandbox, Limits, Limits]:
    """The sandbox, the run limits and the install limits that a config's ``sandbox`` section describes."""
    inst = section["install"]
    sandbox = get_sandbox(
        backend=section["backend"],
        image=section["image"],
        install_network=inst["network"],
        install_disk_mb=inst["disk_mb"],
        index_url=inst["index_url"],
        find_links=inst["find_links"],
    )
    return (sandbox, *limits_from_config(section))


def execution_settings(section: dict, limits: Limits | None = None) -> dict:
    """What decides a program's outcome in the sandbox, for a fingerprint: where it runs, the limits it runs under
    (``limits``, or the section's run limits) and how packages are installed (the ``install`` settings, whose
    time limit is the install limits')."""
    run = limits or limits_from_config(section)[0]
    return {"backend": section["backend"], "image": section["image"], **dataclasses.asdict(run),
            "install": dict(section["install"])}  # fmt: skip
