"""The Apptainer backend (HPC): the image from ``containers/sandbox.def``, fully contained, no network.

    apptainer exec --containall --cleanenv --no-home --net --network none --writable-tmpfs
        --bind SCRATCH:/sandbox [--bind PREFIX:/opt/prefix:ro] --pwd /sandbox IMAGE
        /usr/bin/env -i K=V... prlimit --nproc=N --as=B --cpu=S:H --core=0 -- COMMAND...

The command line is built here (``argv``) and run by the same runner as bwrap, which owns the timeout and
the output caps (spython's ``Client.execute`` has no timeout and buffers all output: aiev does not depend on it).
``env -i`` sets the program's whole environment whatever the site's apptainer.conf adds; ``prlimit`` runs
inside the container's user namespace, where RLIMIT_NPROC counts the container's processes only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from aiev.sandbox.base import (
    INSTALL_DISK_MB,
    PREFIX,
    SCRATCH,
    WHEELS,
    ExecResult,
    Limits,
    Sandbox,
    SandboxError,
    checked_prefix,
    disk_cap_exceeded,
    execute,
    kill_tree,
    memory_by_cgroup,
    prefix_size,
    rlimit_argv,
    sandbox_env,
)

#: PATH inside the image (python:3.11-slim keeps python3 in /usr/local/bin).
IMAGE_PATH = ["/usr/local/bin", "/usr/bin", "/bin"]


class ApptainerSandbox(Sandbox):
    name = "apptainer"

    def __init__(
        self,
        *,
        image: str | Path,
        install_network: bool = False,
        install_disk_mb: int = INSTALL_DISK_MB,
        index_url: str | None = None,
        find_links: str | Path | None = None,
        apptainer: str = "apptainer",
        probe: bool = True,
    ) -> None:
        super().__init__(
            install_network=install_network, install_disk_mb=install_disk_mb, index_url=index_url, find_links=find_links
        )
        found = shutil.which(apptainer)
        if found is None:
            raise SandboxError("apptainer not found on PATH (use backend: bwrap, or install apptainer)")
        self.apptainer = found
        self.image = Path(image).resolve()
        if probe and not self.image.is_file():
            raise SandboxError(
                f"apptainer image {self.image} not found: build it with "
                f"`apptainer build {image} containers/sandbox.def` (the workflow's sandbox image rule does), "
                "or choose backend: bwrap"
            )
        if probe:
            res = self.run({}, ["python3", "-c", "pass"], Limits(timeout_s=120))
            if res.exit_code != 0:
                raise SandboxError(f"a trivial apptainer run failed (exit {res.exit_code}): {res.stderr[-2000:]}")

    def argv(
        self,
        scratch: Path,
        command: Sequence[str],
        limits: Limits,
        *,
        prefix: Path | None = None,
        writable_prefix: bool = False,
        network: bool = False,
        address_space: bool = True,
    ) -> list[str]:
        """The exact apptainer command line (unit-tested; nothing here touches the file system)."""
        for path in (scratch, prefix, self.find_links):
            if path is not None and ("," in str(path) or ":" in str(path)):
                raise SandboxError(f"apptainer cannot bind {path}: ',' and ':' separate its bind specs")
        a = [self.apptainer, "exec", "--containall", "--cleanenv", "--no-home"]
        if not network:
            a += ["--net", "--network", "none"]
        a += ["--writable-tmpfs", "--bind", f"{scratch}:{SCRATCH}"]
        if prefix is not None:
            a += ["--bind", f"{prefix}:{PREFIX}:{'rw' if writable_prefix else 'ro'}"]
        if writable_prefix and self.find_links is not None:
            a += ["--bind", f"{self.find_links}:{WHEELS}:ro"]
        if os.geteuid() == 0:
            a += ["--pids-limit", str(limits.max_procs)]  # RLIMIT_NPROC does not bind uid 0
        a += ["--pwd", SCRATCH, str(self.image)]
        env = sandbox_env(IMAGE_PATH, prefix=prefix is not None and not writable_prefix)
        a += ["/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items())]
        return [*a, *rlimit_argv(limits, address_space=address_space), *command]

    def _run(
        self, entries: list[tuple[PurePosixPath, bytes]], command: list[str], limits: Limits, prefix: Path | None
    ) -> ExecResult:
        with tempfile.TemporaryDirectory(prefix="aiev-sbx-") as tmp:
            scratch = Path(tmp)
            for path, content in entries:
                target = scratch.joinpath(*path.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
            argv = self.argv(scratch, command, limits, prefix=prefix, address_space=not memory_by_cgroup())
            return execute(argv, limits, backend=self.name, kill=kill_tree)

    def install(self, specs: Sequence[str], prefix: str | Path, limits: Limits) -> ExecResult:
        argv = self.install_command(specs)
        prefix_path = checked_prefix(prefix, create=True)
        with tempfile.TemporaryDirectory(prefix="aiev-sbx-") as tmp:
            cmd = self.argv(
                Path(tmp),
                argv,
                limits,
                prefix=prefix_path,
                writable_prefix=True,
                network=self.install_network,
                address_space=not memory_by_cgroup(),
            )
            res = execute(cmd, limits, backend=self.name, kill=kill_tree)
        # Apptainer binds the prefix itself: the cap is checked after the install (not a hard cap while pip runs).
        if res.exit_code == 0 and prefix_size(prefix_path) > self.install_disk_mb << 20:
            for entry in list(prefix_path.iterdir()):
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            res.exit_code = 1
            res.stderr += "\n[Errno 28] No space left on device"
        return disk_cap_exceeded(res, self.install_disk_mb)
