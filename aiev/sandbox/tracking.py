"""No sandboxed process outlives the job that started it, whatever ends the job (SIGKILL included).

Three layers, all in this module and used by every backend through :func:`aiev.sandbox.base.execute`:

1. **Every run is tracked from its first instruction.** Where a cgroup hierarchy with the memory controller can
   be written (cgroup v1, or v2 with the controller delegated), each run gets a cgroup of its own under the job's
   (``aiev-<pid>-<start>``, beside the job's own cgroup), and the run's first process enters it before it execs
   the backend (``/bin/sh -c 'echo $$ > cgroup.procs && exec bwrap ...'``): every process of the run is born
   inside, so none can be missed. Cgroups are reused by later runs of the job once empty. Entering a cgroup
   costs a process ~14 ms (writing ``cgroup.procs`` waits for the kernel's RCU grace period, measured on cgroup
   v1 with Linux 6.18), so each free cgroup of the pool holds a *spare*: a shell that entered it in advance,
   beside the runs, and waits for the command it will exec (its stdout and stderr are the run's; the files the
   backend needs are re-opened from ``/proc/<job>/fd``). A run takes a free cgroup with its spare and, when no
   free one is left, a new one starts entering for the next run. Spares are started by one thread of the
   job's that never ends (a sandbox dies with the thread that forked it, and a spare serves another thread's
   run). Without a spare (the first run, an unusual environment) the run's first process enters itself, as
   above. Elsewhere the backend's pids (and bwrap's sandbox init) are recorded with their start times as soon as
   they are known.
2. **A reaper.** With the job's first run, a small process is started in a session of its own, holding the read
   end of a pipe whose write end only the job holds. However the job ends, the pipe closes; the reaper then kills
   every process of the job's runs (the members of its cgroups, or the recorded pids and their descendants),
   removes the cgroups and the records, and exits.
3. **A sweep on start.** Records live in a per-user runtime directory, one directory per job named by the job's
   pid and start time (never by a process name); the next job that starts a sandbox cleans up after every job
   that is gone (the reaper killed as well, say).

The same cgroup carries the memory limit (``memory.limit_in_bytes`` + ``memsw`` in v1, ``memory.max`` +
``memory.swap.max=0`` in v2) and reports the kernel's OOM kills; without a cgroup the address-space limit
(RLIMIT_AS) is the fallback. ``AIEV_SANDBOX_CGROUP=off`` forces the fallback (tests use it to compare).

Known gap, without cgroups only: a pid is recorded right after the backend starts, so a kill within the few
hundred microseconds between its start and the record can leave a process the reaper does not know of.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import itertools
import logging
import os
import queue
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LEFTOVER_WAIT_S = 2.0  # how long a finished run waits for its last processes to die after SIGKILL
#: The environment a sandbox backend starts with (the backend clears it for the sandboxed program).
BACKEND_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
#: A spare: enter the cgroup ($0), read the command up to the end of stdin, run it (it ends with an exec). An
#: empty command (the job ended without using the spare) exits.
SPARE_SCRIPT = 'echo $$ > "$0" || exit 111; IFS= read -r -d "" cmd; [ -n "$cmd" ] || exit 0; eval "$cmd"'

_CG_V1_MEMORY = Path("/sys/fs/cgroup/memory")
_CG_V2_ROOTS = (Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/unified"))


# ------------------------------------------------------------------------------------- processes


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def alive(pid: int, start: int) -> bool:
    return start_time(pid) == start


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError):
            out += [int(k) for k in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (parents before children), from /proc/*/task/*/children."""
    found: list[int] = []
    todo = [pid]
    while todo:
        new = [k for k in children(todo.pop(0)) if k not in found]
        found += new
        todo += new
    return found


def gone(pid: int, start: int | None = None) -> bool:
    """Has the process exited: no such pid, a zombie, or (given its ``start`` time) the pid now another's?"""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return fields[0] == "Z" or (start is not None and int(fields[19]) != start)
    except (OSError, IndexError, ValueError):
        return True


def kill_recorded(pid: int, start: int) -> None:
    """SIGKILL a recorded process (only if its start time is still ``start``) and every descendant under it."""
    if not alive(pid, start):
        return
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGSTOP)  # stopped processes cannot fork while their tree is read
        todo += [c for c in children(p) if c not in seen]
    for p in seen:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, signal.SIGKILL)


def runtime_dir() -> Path:
    """Per-user, node-local runtime directory (``/run/aiev-sandbox-UID``, else under the temp directory)."""
    run = Path("/run")
    root = run if os.access(run, os.W_OK) else Path(tempfile.gettempdir())
    path = root / f"aiev-sandbox-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    if path.stat().st_uid != os.geteuid():
        raise PermissionError(f"{path} is not owned by uid {os.geteuid()}")
    return path


# ----------------------------------------------------------------------------------------- cgroups


@dataclass(frozen=True)
class CgroupRoot:
    """Where a job's run cgroups are made: ``parent/aiev-<pid>-<start>/run-N``."""

    version: int  # 1 or 2
    parent: Path  # the job's own cgroup directory in the memory hierarchy

    @classmethod
    def detect(cls) -> CgroupRoot | None:
        if os.environ.get("AIEV_SANDBOX_CGROUP", "").lower() in ("off", "0", "no", "false"):
            return None
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        for line in lines:  # v1: "N:memory:/path"
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                parent = _CG_V1_MEMORY / path.lstrip("/")
                if cls._usable(parent, "memory.limit_in_bytes"):
                    return cls(1, parent)
        for line in lines:  # v2: "0::/path", the memory controller enabled for our children
            if line.startswith("0::"):
                for root in _CG_V2_ROOTS:
                    parent = root / line[3:].lstrip("/")
                    try:
                        enabled = (parent / "cgroup.subtree_control").read_text().split()
                    except OSError:
                        continue
                    if "memory" in enabled and cls._usable(parent, "memory.max"):
                        return cls(2, parent)
        return None

    @staticmethod
    def _usable(parent: Path, limit_file: str) -> bool:
        probe = parent / f"aiev-probe-{os.getpid()}-{threading.get_ident()}"
        try:
            probe.mkdir()
        except OSError:
            return False
        try:
            return (probe / limit_file).exists() and os.access(probe / "cgroup.procs", os.W_OK)
        finally:
            with contextlib.suppress(OSError):
                probe.rmdir()


class Spare:
    """A shell already inside a run cgroup, waiting for the command it will exec (see the module docstring)."""

    def __init__(self, procs: Path) -> None:
        self.procs = procs
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", SPARE_SCRIPT, str(procs)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=BACKEND_ENV,
            start_new_session=True,
        )  # fmt: skip

    def start(self, argv: list[str], pass_fds: tuple[int, ...]) -> subprocess.Popen[bytes] | None:
        """Hand the spare ``argv`` to exec, with ``pass_fds`` at the same numbers; None (and the spare stopped)
        unless it is inside its cgroup now: still entering, failed to, or gone."""
        if (
            self.proc.poll() is not None
            or self.proc.stdin is None
            or self.proc.pid not in cgroup_pids(self.procs.parent)
        ):
            self.stop()
            return None
        # (bash adds SHLVL=0 to the backend's environment on exec: both backends clear it for the program)
        lines = ["exec 0</dev/null"]
        for fd in pass_fds:
            writes = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
            lines.append(f"exec {fd}{'>' if writes else '<'}/proc/{os.getpid()}/fd/{fd}")
        lines.append("exec " + shlex.join(argv))
        try:
            self.proc.stdin.write(("\n".join(lines) + "\n").encode())
            self.proc.stdin.close()
        except OSError:
            self.stop()
            return None
        return self.proc

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            with contextlib.suppress(OSError):
                pipe and pipe.close()  # type: ignore[func-returns-value]


class RunCgroup:
    """A cgroup that runs take one at a time: its procs file, its memory limit (set per run), its OOM kills, and
    while it is free, its spare (a process that entered it in advance for the next run)."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version
        path.mkdir(exist_ok=True)
        self.spare: Spare | None = None

    def prepare(self) -> None:
        """Start the spare of the next run that takes this cgroup (empty, so nothing of a run is killed)."""
        try:
            self.spare = Spare(self.procs)
        except OSError as exc:  # no bash: runs enter their cgroup themselves
            log.warning("no spare process for sandbox cgroups (%s)", exc)
            self.spare = None

    def configure(self, memory_bytes: int) -> int:
        """Set this run's memory limit (swap included); returns the OOM-kill count so far."""
        if self.version == 1:
            memsw = self.path / "memory.memsw.limit_in_bytes"
            with contextlib.suppress(OSError):  # memsw may never be below the limit: lift it, set both
                memsw.write_text("-1")
            (self.path / "memory.limit_in_bytes").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting on this kernel: RAM alone is limited
                memsw.write_text(str(memory_bytes))
        else:
            (self.path / "memory.max").write_text(str(memory_bytes))
            with contextlib.suppress(OSError):
                (self.path / "memory.swap.max").write_text("0")
        return self.oom_kills()

    @property
    def procs(self) -> Path:
        return self.path / "cgroup.procs"

    def oom_kills(self) -> int:
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            for line in (self.path / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def empty(self, wait_s: float = 0.0) -> bool:
        """Kill whatever is left in it; True once nothing is (then the next run may take it).

        ``wait_s``: how long to wait for the killed processes to be gone (SIGKILL is delivered, not done, when
        ``kill`` returns)."""
        deadline = time.monotonic() + wait_s
        while True:
            pids = cgroup_pids(self.path)
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


def cgroup_pids(path: Path) -> list[int]:
    try:
        return [int(p) for p in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def remove_cgroup(path: Path, timeout_s: float = 5.0) -> None:
    """Kill every process in a cgroup (and in its children), then remove it."""
    if not path.is_dir():
        return
    for sub in [p for p in path.iterdir() if p.is_dir()]:
        remove_cgroup(sub, timeout_s)
    with contextlib.suppress(OSError):
        (path / "cgroup.kill").write_text("1")  # v2 (kernel >= 5.14): the whole cgroup at once
    deadline = time.monotonic() + timeout_s
    while True:
        pids = cgroup_pids(path)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove cgroup %s: %s", path, exc)
                return
        time.sleep(0.01)


# ------------------------------------------------------------------------------------ job records


def cleanup_job(record: Path) -> None:
    """Kill every process of a job's runs and remove its cgroups and records (idempotent, race-tolerant)."""
    if not record.is_dir():
        return
    with contextlib.suppress(OSError):
        for line in (record / "cgroup").read_text().splitlines():
            if line.strip():
                remove_cgroup(Path(line.strip()))
    for run in record.glob("run-*"):
        with contextlib.suppress(OSError):
            for line in run.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    pid, start = (int(x) for x in line.split())
                    kill_recorded(pid, start)
        with contextlib.suppress(OSError):
            run.unlink()
    for name in ("cgroup",):
        with contextlib.suppress(OSError):
            (record / name).unlink()
    with contextlib.suppress(OSError):
        record.rmdir()


def sweep(jobs: Path) -> int:
    """Clean up after every job whose process is gone (its pid dead, or reused by another process)."""
    n = 0
    for record in jobs.glob("*-*"):
        try:
            pid, start = (int(x) for x in record.name.split("-"))
        except ValueError:
            continue
        if not alive(pid, start):
            log.warning("cleaning up sandbox leftovers of job %d (gone)", pid)
            cleanup_job(record)
            n += 1
    return n


class Run:
    """One sandbox run: its cgroup, or (where there is none) its record of pids."""

    def __init__(self, tracker: JobTracker, n: int, memory_bytes: int) -> None:
        self.tracker = tracker
        self.cgroup = tracker.take_cgroup()
        self._oom_before = self.cgroup.configure(memory_bytes) if self.cgroup is not None else 0
        # With a cgroup its members are the record (the clean-up kills them all); without one, the pids are written.
        self.file = None if self.cgroup is not None else tracker.record / f"run-{n}"
        self._fh = open(self.file, "a", encoding="ascii") if self.file else None  # noqa: SIM115 (closed in finish)
        self._pids: list[tuple[int, int]] = []

    def wrap(self, argv: list[str]) -> list[str]:
        """The command that enters the run's cgroup, then execs ``argv`` (same pid: nothing is born outside)."""
        if self.cgroup is None:
            return argv
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup.procs), *argv]

    def spawn(self, argv: list[str], pass_fds: tuple[int, ...], env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        """Start ``argv``: the spare of the run's cgroup execs it where there is one (it is inside already),
        else a new process enters the cgroup, then execs it. Its stdout and stderr are pipes, stdin /dev/null."""
        spare = self.cgroup.spare if self.cgroup is not None else None
        if self.cgroup is not None:
            self.cgroup.spare = None
        if spare is not None and env is None:
            proc = spare.start(argv, pass_fds)
            if proc is not None:
                return proc
        elif spare is not None:
            spare.stop()
        return subprocess.Popen(
            self.wrap(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=pass_fds, env=env if env is not None else BACKEND_ENV, start_new_session=True,
        )  # fmt: skip

    def add(self, pid: int) -> None:
        start = start_time(pid) if self._fh is not None else None
        if self._fh is not None and start is not None:
            self._fh.write(f"{pid} {start}\n")
            self._fh.flush()
            self._pids.append((pid, start))

    def finish(self) -> bool:
        """Kill whatever of the run is left and wait (up to ``LEFTOVER_WAIT_S``) until it is gone; free its
        cgroup or remove its record; True when OOM-killed.

        A sandbox's own process can exit a moment before the processes it leaves behind do (bwrap's monitor
        returns the program's status while its pid-namespace init is still tearing the namespace down), so
        "the run returned" must wait here for "nothing of the run is left"."""
        oom = False
        if self.cgroup is not None:
            emptied = self.cgroup.empty(wait_s=LEFTOVER_WAIT_S)
            oom = self.cgroup.oom_kills() > self._oom_before
            if emptied:
                self.tracker.give_back(self.cgroup)
            else:
                log.warning("sandbox cgroup %s not empty %.0f s after SIGKILL: retired", self.cgroup.path,
                            LEFTOVER_WAIT_S)  # fmt: skip
        if self._fh is not None and self.file is not None:
            for pid, start in self._pids:
                kill_recorded(pid, start)
            deadline = time.monotonic() + LEFTOVER_WAIT_S
            while not all(gone(pid, start) for pid, start in self._pids) and time.monotonic() < deadline:
                time.sleep(0.002)
            self._fh.close()
            with contextlib.suppress(OSError):
                self.file.unlink()
        return oom


class JobTracker:
    """The process's tracker (one per process; see the module docstring)."""

    _instance: JobTracker | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        start = start_time(self.pid)
        assert start is not None
        jobs = runtime_dir() / "jobs"
        jobs.mkdir(mode=0o700, exist_ok=True)
        sweep(jobs)
        self.record = jobs / f"{self.pid}-{start}"
        self.record.mkdir(mode=0o700, exist_ok=True)
        self.root = CgroupRoot.detect()
        self.cgroup_dir: Path | None = None
        if self.root is not None:
            path = self.root.parent / f"aiev-{self.pid}-{start}"
            try:
                path.mkdir(exist_ok=True)
                (self.record / "cgroup").write_text(f"{path}\n")
                self.cgroup_dir = path
            except OSError as exc:
                log.warning("no sandbox cgroup (%s): memory falls back to RLIMIT_AS", exc)
                self.root = None
        self._n = itertools.count()
        self._free: collections.deque[RunCgroup] = collections.deque()  # the longest free first
        self._slots = itertools.count()
        self._pool_lock = threading.Lock()
        # Spares are started by one thread that lives as long as the job: a sandbox started with
        # --die-with-parent is killed when the *thread* that forked it exits (PR_SET_PDEATHSIG), and a spare is
        # used by a run of another thread, which may outlive the thread the spare came from.
        self._to_prepare: queue.SimpleQueue[RunCgroup] = queue.SimpleQueue()
        if self.cgroup_dir is not None:
            threading.Thread(target=self._prepare_spares, name="aiev-sandbox-spares", daemon=True).start()
        self.reaper = self._start_reaper()

    @classmethod
    def get(cls) -> JobTracker:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():  # a forked child tracks its own runs
                cls._instance = cls()
            return cls._instance

    @property
    def memory_by_cgroup(self) -> bool:
        return self.cgroup_dir is not None

    def begin(self, memory_bytes: int) -> Run:
        return Run(self, next(self._n), memory_bytes)

    def take_cgroup(self) -> RunCgroup | None:
        """A free cgroup (with its spare, where it has one); the last free one taken, another starts getting
        ready for the next run, so that its spare has entered it by then."""
        if self.cgroup_dir is None or self.root is None:
            return None
        with self._pool_lock:
            taken = self._free.popleft() if self._free else None
            ahead = not self._free
        if taken is None:
            taken = self._new_cgroup()
        if ahead:
            self._to_prepare.put(self._new_cgroup())
        return taken

    def _prepare_spares(self) -> None:
        while True:
            cgroup = self._to_prepare.get()
            cgroup.prepare()
            with self._pool_lock:
                self._free.append(cgroup)

    def _new_cgroup(self) -> RunCgroup:
        return RunCgroup(self.cgroup_dir / f"slot-{next(self._slots)}", self.root.version)  # type: ignore[operator,union-attr]

    def give_back(self, cgroup: RunCgroup) -> None:
        """A cgroup whose run is over goes back to the pool once empty, with a new spare; one whose last processes
        are still exiting is retired (the job's clean-up removes it) rather than waited for."""
        if cgroup.empty():
            self._to_prepare.put(cgroup)

    def _start_reaper(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys; from aiev.sandbox.tracking import reap; reap(sys.argv[1])",
             str(self.record)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
            env={"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        )  # fmt: skip


def reap(record: str) -> None:
    """The reaper's body: wait until the job's end closes our stdin, then clean up after it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a job's group is signalled as one: outlive it by a moment
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(65536):
            pass
    cleanup_job(Path(record))
