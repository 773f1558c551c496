"""What every backend shares: limits, results, the in-sandbox layout and the process runner.

A backend only builds an argv (bwrap or apptainer plus the program's command); :func:`execute` starts it in
a new session, reads stdout/stderr with a byte cap, enforces the wall-clock deadline and kills the whole
sandbox when it passes. Nothing here ever runs the program outside a sandbox.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import resource
import selectors
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from aiev.sandbox.tracking import JobTracker, Run, descendants, gone

#: Inside every sandbox: the scratch directory (cwd and HOME), the per-dialogue install prefix, the wheelhouse.
SCRATCH = "/sandbox"
PREFIX = "/opt/prefix"
WHEELS = "/opt/wheels"
#: Where bwrap's install phase sees the dialogue's prefix on the host (it installs into a size-capped tmpfs at
#: PREFIX, seeded from here, and copies the result back only when pip succeeded).
PREFIX_HOST = "/opt/prefix-host"
#: Default disk cap of a dialogue's install prefix (config sandbox.install.disk_mb).
INSTALL_DISK_MB = 1024

#: Bytes read from a pipe at a time.
_CHUNK = 1 << 16
#: After the sandbox is dead, how long to wait for the last bytes on its pipes.
_DRAIN_S = 2.0


class SandboxError(RuntimeError):
    """The sandbox itself cannot run (missing tool, bad image, bad arguments); never the program's failure."""


@dataclass(frozen=True)
class Limits:
    """Per-execution limits. ``max_output_bytes`` applies to stdout and to stderr separately."""

    timeout_s: float = 30
    memory_mb: int = 2048
    max_procs: int = 64
    max_output_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise SandboxError(f"Limits.timeout_s must be > 0, got {self.timeout_s!r}")
        for name in ("memory_mb", "max_procs", "max_output_bytes"):
            if int(getattr(self, name)) < 1:
                raise SandboxError(f"Limits.{name} must be >= 1, got {getattr(self, name)!r}")


@dataclass
class ExecResult:
    """One execution.

    ``exit_code``: the program's exit status; ``-N`` when it was killed by signal N (the sandbox reports a
    signal death as ``128 + N``, like a shell, so a program that itself exits with 129..192 reads as a
    signal too); ``None`` when the sandbox killed it at the deadline (then ``timed_out`` is true).
    ``oom_killed``: the kernel killed a process of the run for passing the memory limit of its cgroup
    (only where the memory limit is a cgroup's: see :mod:`aiev.sandbox.tracking`).
    """

    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    duration_s: float
    backend: str
    oom_killed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_files(files: Mapping[str, str | bytes]) -> list[tuple[PurePosixPath, bytes]]:
    """Validate the scratch files: relative paths without ``..``; returns (path, bytes) pairs."""
    out: list[tuple[PurePosixPath, bytes]] = []
    names = {PurePosixPath(name) for name in files}
    for name, content in files.items():
        path = PurePosixPath(name)
        if not name or path.is_absolute() or ".." in path.parts or path.parts in ((), (".",)) or "\0" in name:
            raise SandboxError(f"bad scratch file name {name!r}: must be a relative path without '..'")
        if any(parent in names for parent in path.parents):
            raise SandboxError(f"scratch file {name!r} is inside another scratch file")
        if isinstance(content, str):
            content = content.encode("utf-8")
        elif not isinstance(content, bytes | bytearray):
            raise SandboxError(f"scratch file {name!r}: content must be str or bytes")
        out.append((path, bytes(content)))
    return out


def parent_dirs(paths: Sequence[PurePosixPath]) -> list[PurePosixPath]:
    """Every directory the files need, parents first, without duplicates."""
    seen: dict[PurePosixPath, None] = {}
    for path in paths:
        for parent in reversed(path.parents[:-1]):  # parents[-1] is '.'
            seen.setdefault(parent, None)
    return list(seen)


def sandbox_env(path_dirs: Sequence[str], *, prefix: bool, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment of a sandboxed program: nothing is inherited from the host."""
    dirs = [f"{PREFIX}/bin"] if prefix else []
    dirs += [d for d in path_dirs if d not in dirs]
    env = {
        "PATH": ":".join(dirs),
        "HOME": SCRATCH,
        "TMPDIR": "/tmp",
        "USER": "sandbox",
        "LOGNAME": "sandbox",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
        # max_procs counts threads: BLAS/OpenMP pools sized to the host's cores would fail to start.
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "NUMEXPR_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
    }
    if prefix:
        env["PYTHONPATH"] = PREFIX
    env.update(extra or {})
    return env


def rlimits(limits: Limits, *, address_space: bool = True) -> dict[str, tuple[int, int]]:
    """(soft, hard) per resource, by prlimit's names. CPU is a backstop: the wall deadline kills first.

    ``address_space=False`` where a cgroup limits the memory (RLIMIT_AS is then the fallback no longer needed,
    and it would fail programs that reserve much more address space than they use)."""
    cpu = math.ceil(limits.timeout_s) + 1
    mem = limits.memory_mb << 20
    out = {"nproc": (limits.max_procs,) * 2, "as": (mem, mem), "cpu": (cpu, cpu + 1), "core": (0, 0)}
    if not address_space:
        del out["as"]
    return out


RLIMIT_IDS = {
    "nproc": resource.RLIMIT_NPROC,
    "as": resource.RLIMIT_AS,
    "cpu": resource.RLIMIT_CPU,
    "core": resource.RLIMIT_CORE,
}


def rlimit_argv(limits: Limits, *, address_space: bool = True) -> list[str]:
    """``prlimit`` (util-linux) run *inside* the sandbox, so RLIMIT_NPROC counts only the sandbox's processes.

    Set on the host before the user namespace exists, RLIMIT_NPROC would also become that namespace's ceiling
    for the host uid, i.e. concurrent sandboxes would share one budget.
    """
    pairs = rlimits(limits, address_space=address_space).items()
    return ["prlimit", *(f"--{name}={soft}:{hard}" for name, (soft, hard) in pairs), "--"]


def pip_argv(specs: Sequence[str], *, network: bool, index_url: str | None, find_links: bool) -> list[str]:
    """``python3 -m pip install --target PREFIX ...`` as run inside the install sandbox."""
    argv = ["python3", "-m", "pip", "install", "--target", PREFIX, "--no-cache-dir", "--no-input"]
    argv += ["--disable-pip-version-check", "--no-warn-script-location", "--progress-bar", "off"]
    if not network:
        argv.append("--no-index")  # fail at once with pip's own message instead of retrying a dead network
    elif index_url:
        argv += ["--index-url", index_url]
    if find_links:
        argv += ["--find-links", WHEELS]
    return [*argv, *specs]


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def exit_code_of(returncode: int) -> int:
    """Map the sandbox's status to the program's: 128+N (signal N inside) and -N (sandbox killed) -> -N."""
    if returncode < 0:
        return returncode
    if 128 < returncode <= 128 + 64:
        return -(returncode - 128)
    return returncode


class _Capture:
    """One output stream: keeps the first ``cap`` bytes, counts (and drops) the rest."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.chunks: list[bytes] = []
        self.kept = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap - self.kept
        if room > 0:
            piece = data[:room]
            self.chunks.append(piece)
            self.kept += len(piece)

    @property
    def truncated(self) -> bool:
        return self.total > self.cap

    def text(self) -> str:
        return decode(b"".join(self.chunks))


def execute(
    argv: Sequence[str],
    limits: Limits,
    *,
    backend: str,
    pass_fds: Sequence[int] = (),
    env: Mapping[str, str] | None = None,
    kill: Callable[[subprocess.Popen[bytes]], None] | None = None,
    on_start: Callable[[subprocess.Popen[bytes], float, Run], None] | None = None,
) -> ExecResult:
    """Run a sandbox command line to completion or to the deadline; never leaves a process behind.

    The run is tracked from its first instruction (:mod:`aiev.sandbox.tracking`): its processes are born in a
    cgroup of their own where one can be made (which also carries the memory limit), else their pids are
    recorded; if this job dies, its reaper kills them. ``on_start(proc, deadline, run)`` runs right after the
    spawn, before any output is read (bwrap uses it to set the rlimits of its blocked sandbox init and to
    record that init's pid).

    Output past the cap is read and dropped (the program is not blocked on a full pipe). At the deadline
    ``kill(proc)`` (default: SIGKILL to the sandbox's process group) ends the sandbox; the backend's
    namespaces then take every process inside with it.
    """
    start = time.monotonic()
    deadline = start + limits.timeout_s
    run = JobTracker.get().begin(limits.memory_mb << 20)
    try:
        try:
            proc = run.spawn(list(argv), tuple(pass_fds), dict(env) if env is not None else None)
        except OSError as exc:
            raise SandboxError(f"cannot start {argv[0]}: {exc}") from exc
        run.add(proc.pid)
        try:
            if on_start is not None:
                on_start(proc, deadline, run)
            result = _collect(proc, limits, deadline, start, backend, kill)
        except BaseException:  # e.g. KeyboardInterrupt in the caller: never leave the sandbox running
            _kill(proc, kill)
            raise
    finally:
        oom = run.finish()
    result.oom_killed = oom
    return result


def memory_by_cgroup() -> bool:
    """Is the memory limit of this process's runs a cgroup's (else RLIMIT_AS)?"""
    return JobTracker.get().memory_by_cgroup


def _collect(
    proc: subprocess.Popen[bytes],
    limits: Limits,
    deadline: float,
    start: float,
    backend: str,
    kill: Callable[[subprocess.Popen[bytes]], None] | None,
) -> ExecResult:
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Capture(limits.max_output_bytes), _Capture(limits.max_output_bytes)
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        drain_until: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if drain_until is None and now >= deadline and proc.poll() is None:
                timed_out = True
                _kill(proc, kill)
                drain_until = time.monotonic() + _DRAIN_S
            if drain_until is None and proc.poll() is not None:
                drain_until = now + _DRAIN_S  # sandbox gone: only the last buffered bytes remain
            if drain_until is not None and now >= drain_until:
                break
            wait = (drain_until if drain_until is not None else deadline) - now
            for key, _ in sel.select(timeout=max(0.0, min(wait, 0.5))):
                data = os.read(key.fd, _CHUNK)
                if data:
                    key.data.feed(data)
                else:
                    sel.unregister(key.fileobj)
    proc.stdout.close()
    proc.stderr.close()
    remaining = deadline - time.monotonic()
    try:
        returncode = proc.wait(timeout=max(0.1, remaining))
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill(proc, kill)
        returncode = proc.wait()
    return ExecResult(
        exit_code=None if timed_out else exit_code_of(returncode),
        stdout=out.text(),
        stderr=err.text(),
        timed_out=timed_out,
        truncated=out.truncated or err.truncated,
        duration_s=round(time.monotonic() - start, 6),
        backend=backend,
    )


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a command and all its descendants, and wait (up to 5 s) until none of them is left."""
    seen: set[int] = set()
    for _ in range(10):
        pids = set(descendants(proc.pid))
        for pid in [proc.pid, *pids]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if pids <= seen:
            break
        seen |= pids
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    end = time.monotonic() + 5
    while seen and time.monotonic() < end:
        seen = {p for p in seen if not gone(p)}
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[bytes], kill: Callable[[subprocess.Popen[bytes]], None] | None) -> None:
    if kill is not None:
        kill(proc)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired as exc:  # pragma: no cover - a kernel that will not reap
        raise SandboxError(f"sandbox process {proc.pid} survived SIGKILL for 10 s") from exc


class Sandbox(ABC):
    """A code-execution backend. Network is always off while a program runs."""

    name: str = "?"

    def __init__(
        self,
        *,
        install_network: bool = False,
        install_disk_mb: int = INSTALL_DISK_MB,
        index_url: str | None = None,
        find_links: str | Path | None = None,
    ) -> None:
        self.install_network = install_network
        if int(install_disk_mb) < 1:
            raise SandboxError(f"install_disk_mb must be >= 1, got {install_disk_mb!r}")
        self.install_disk_mb = int(install_disk_mb)
        self.index_url = index_url
        self.find_links = Path(find_links).resolve() if find_links else None
        if self.find_links is not None and not self.find_links.is_dir():
            raise SandboxError(f"find_links {self.find_links} is not a directory (a local wheelhouse)")

    def run(
        self,
        files: Mapping[str, str | bytes],
        command: Sequence[str],
        limits: Limits = Limits(),
        *,
        prefix: str | Path | None = None,
    ) -> ExecResult:
        """Run ``command`` in a fresh scratch dir holding ``files``; ``prefix`` (if any) is read-only."""
        entries = check_files(files)
        if not command:
            raise SandboxError("empty command")
        return self._run(entries, list(command), limits, checked_prefix(prefix))

    @abstractmethod
    def _run(
        self, entries: list[tuple[PurePosixPath, bytes]], command: list[str], limits: Limits, prefix: Path | None
    ) -> ExecResult:
        """The backend's run, on checked inputs."""

    @abstractmethod
    def install(self, specs: Sequence[str], prefix: str | Path, limits: Limits) -> ExecResult:
        """``pip install --target prefix specs`` in the sandbox; network only if ``install_network``."""

    def install_command(self, specs: Sequence[str]) -> list[str]:
        """The pip command of an install turn: specs checked, always ``--upgrade --target`` the prefix."""
        argv = pip_argv(
            checked_specs(specs),
            network=self.install_network,
            index_url=self.index_url,
            find_links=self.find_links is not None,
        )
        argv.insert(argv.index("--target"), "--upgrade")
        return argv

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.name}>"


def disk_cap_exceeded(result: ExecResult, disk_mb: int) -> ExecResult:
    """Say plainly that an install failed on the prefix's disk cap (pip reports only 'No space left')."""
    if result.exit_code != 0 and ("No space left on device" in result.stderr or "[Errno 28]" in result.stderr):
        result.stderr += (
            f"\naiev: the packages did not fit the install prefix's disk cap of {disk_mb} MB "
            "(sandbox.install.disk_mb); nothing was installed"
        )
    return result


def prefix_size(path: Path) -> int:
    """Bytes of the regular files under ``path`` (never following links)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def checked_prefix(prefix: str | Path | None, *, create: bool = False) -> Path | None:
    if prefix is None:
        return None
    path = Path(prefix).resolve()
    if create:
        path.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        raise SandboxError(f"install prefix {path} is not a directory")
    return path


def checked_specs(specs: Sequence[str]) -> list[str]:
    """Install specs must already have passed :func:`aiev.sandbox.parse_pip_install`'s rules."""
    from aiev.sandbox.install import PipInstallError, check_spec

    out = []
    for spec in specs:
        try:
            out.append(check_spec(spec))
        except PipInstallError as exc:
            raise SandboxError(str(exc)) from exc
    if not out:
        raise SandboxError("nothing to install")
    return out
