"""The bubblewrap backend (laptops, CI): namespaces, read-only system binds, a tmpfs scratch, rlimits.

Two modes, picked by the host's effective uid:

* **root mode** (euid 0, e.g. CI containers): bwrap itself runs as root without a user namespace, so it can
  bind anything; the program is then dropped by ``setpriv`` to an unprivileged host uid of its own
  (``uid_base + slot``, one slot per concurrent run, held by a lock file). RLIMIT_NPROC is ignored for uid 0,
  but applies to that uid, and a per-run uid keeps concurrent runs from sharing one process budget.
* **user mode** (any other uid): bwrap runs unprivileged in a new user namespace (``--unshare-all``,
  ``--disable-userns``); RLIMIT_NPROC, set on the sandbox's init inside it, counts that namespace only.

The rlimits are set with prlimit(2) on the sandbox init while it waits on ``--block-fd`` (see
``_limit_and_release``), so no extra exec is needed.

Either way: no network (a new, empty network namespace), new pid/ipc/uts/cgroup namespaces, a seccomp filter
(no new user namespaces, no io_uring/bpf/perf/keyrings), no capabilities, ``--die-with-parent``,
``--new-session``, a cleared environment, and only /usr (+ /bin, /lib* links), a few /etc files, the
interpreter's prefix and the optional install prefix (all read-only) visible from the host. Scratch, /tmp and
/dev/shm are size-capped tmpfs that vanish with the sandbox.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import resource
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from aiev.sandbox.base import (
    INSTALL_DISK_MB,
    PREFIX,
    PREFIX_HOST,
    RLIMIT_IDS,
    SCRATCH,
    WHEELS,
    ExecResult,
    Limits,
    Sandbox,
    SandboxError,
    checked_prefix,
    disk_cap_exceeded,
    execute,
    parent_dirs,
    rlimits,
    sandbox_env,
)
from aiev.sandbox.tracking import Run, runtime_dir

log = logging.getLogger(__name__)

INSTALL_HINT = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap) or apptainer"
#: Root mode: the program's host uid is UID_BASE + slot (far above any real or subordinate uid range).
UID_BASE = 2_000_000_000
SLOTS = 4096
#: In user mode the program's uid inside the namespace.
INNER_UID = 1000
MAX_FILES = 512

#: /etc is a fresh directory holding only these (each one is a mount: every entry costs ~0.2 ms per run).
_ETC = ["alternatives", "ld.so.cache", "localtime", "ssl", "php"]
#: Toolchains whose configuration lives in /etc (the MultiPL-E suites): the JDK's security and logging files.
_ETC += sorted(p.name for p in Path("/etc").glob("java-*-openjdk"))
_ETC_NET = ["ca-certificates", "resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf", "services"]
_ROOT_LINKS = ["bin", "sbin", "lib", "lib32", "lib64", "libx32"]
#: Where nothing else may be mounted.
_RESERVED = ["/sandbox", "/tmp", "/dev", "/proc", "/etc", "/opt/prefix", "/opt/prefix-host", "/opt/wheels"]
#: The install phase's command: seed the capped tmpfs from the host prefix, install, and copy back on success
#: only (a failed or over-cap install leaves the dialogue's prefix as it was).
_INSTALL_SH = (
    f'cp -R {PREFIX_HOST}/. {PREFIX}/ || exit 121; "$@"; rc=$?; '
    f"if [ $rc -eq 0 ]; then find {PREFIX_HOST} -mindepth 1 -delete && cp -R {PREFIX}/. {PREFIX_HOST}/ || rc=122; fi; "
    "exit $rc"
)


# ------------------------------------------------------------------------------------------ seccomp

_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
# name -> (x86_64, aarch64)
_SYSCALLS = {
    "clone": (56, 220),
    "unshare": (272, 97),
    "clone3": (435, 435),
    "setns": (308, 268),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
}
_DENIED = ["setns", "io_uring_setup", "io_uring_enter", "io_uring_register", "bpf", "perf_event_open"]
_DENIED += ["userfaultfd", "keyctl", "add_key", "request_key"]
_CLONE_NEWUSER = 0x10000000
_ALLOW, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38


def seccomp_filter(machine: str | None = None) -> bytes | None:
    """A classic-BPF seccomp program (for ``bwrap --seccomp``), or None on an architecture we do not know.

    Denied with EPERM: creating a user namespace (clone/unshare with CLONE_NEWUSER), setns, io_uring, bpf,
    perf_event_open, userfaultfd and the keyring calls; every foreign ABI (i386, x32). clone3 gets ENOSYS
    so that libc falls back to clone, whose flags a filter can read.
    """
    machine = machine or os.uname().machine
    if machine not in _AUDIT_ARCH:
        return None
    col = 0 if machine == "x86_64" else 1
    nr = {name: numbers[col] for name, numbers in _SYSCALLS.items()}
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    prog: list[tuple[int, int, int, int]] = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, _AUDIT_ARCH[machine]),
        (ret, 0, 0, _EPERM),
        (ld, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":
        prog += [(jge, 0, 1, 0x40000000), (ret, 0, 0, _EPERM)]  # the x32 ABI
    prog += [(jeq, 0, 1, nr["clone3"]), (ret, 0, 0, _ENOSYS)]
    for name in _DENIED:
        prog += [(jeq, 0, 1, nr[name]), (ret, 0, 0, _EPERM)]
    for name in ("clone", "unshare"):
        prog += [
            (jeq, 0, 4, nr[name]),
            (ld, 0, 0, 16),  # low 32 bits of args[0]: the flags of both calls
            (jset, 0, 1, _CLONE_NEWUSER),
            (ret, 0, 0, _EPERM),
            (ret, 0, 0, _ALLOW),
            (ld, 0, 0, 0),
        ]
    prog.append((ret, 0, 0, _ALLOW))
    return b"".join(struct.pack("=HBBI", code, jt, jf, k) for code, jt, jf, k in prog)


# ------------------------------------------------------------------------------------------ helpers


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name)  # close-on-exec; pass_fds makes it visible to bwrap only
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _interpreter(python: str | None) -> tuple[str, str]:
    """(executable, install prefix) of the Python the sandbox offers as ``python3``."""
    if python is None:
        exe = Path(sys.base_prefix) / "bin" / "python3"
        if exe.is_file():
            return str(exe), sys.base_prefix
        python = "python3"
    found = shutil.which(python)
    if found is None:
        raise SandboxError(f"sandbox interpreter {python!r} not found")
    try:
        out = subprocess.run(
            [found, "-I", "-c", "import sys; print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxError(f"sandbox interpreter {found} does not run: {exc}") from exc
    return found, out.stdout.strip()


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@contextlib.contextmanager
def _uid_slot(base: int) -> Iterator[int]:
    """Hold one of SLOTS per-run uids (a flock'd file per slot; works across threads and processes)."""
    try:
        lock_dir = runtime_dir()
    except PermissionError as exc:
        raise SandboxError(str(exc)) from exc
    for slot in range(SLOTS):  # lowest free slot: as many lock files as the peak concurrency
        fd = os.open(lock_dir / f"{slot}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield base + slot
        finally:
            os.close(fd)
        return
    raise SandboxError(f"all {SLOTS} sandbox uid slots are busy")


def _chown_tree(path: Path, uid: int) -> None:
    """Give an install prefix to this run's uid (root mode: earlier installs ran under other uids).

    The tree was written by sandboxed code: never follow its symlinks (os.walk does not, lchown does not).
    No sandboxed process is alive at this point, so nothing can swap entries under our feet.
    """
    for root, dirs, files in os.walk(path):
        for name in [".", *dirs, *files]:
            entry = os.path.join(root, name)
            with contextlib.suppress(FileNotFoundError):
                if os.lstat(entry).st_uid != uid:
                    os.lchown(entry, uid, uid)


def _read_info(fd: int, deadline: float) -> dict | None:
    """bwrap's --info-fd JSON (written by the outer bwrap before any sandboxed code can run)."""
    buf = b""
    while True:
        wait = deadline - time.monotonic()
        if wait <= 0 or not select.select([fd], [], [], wait)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            return None
        buf += chunk
        with contextlib.suppress(ValueError):
            return json.loads(buf)


def _limit_and_release(info_fd: int, block_fd: int, limits: Limits):
    """on_start hook: set the rlimits of the sandbox init, blocked on --block-fd, then let it go on.

    The init forks the program after the block, so the program inherits them; no prlimit exec is needed.
    Set from outside on a process already inside the user namespace (user mode), RLIMIT_NPROC still counts
    that namespace only. Until the byte is written the sandbox waits: on any failure it is killed while
    still blocked (the caller closes ``block_fd`` only once the sandbox is gone), never run unlimited.
    """

    def hook(proc: subprocess.Popen[bytes], deadline: float, run: Run) -> None:
        info = _read_info(info_fd, deadline)
        if info is None:
            return  # bwrap failed before starting its child (stderr says why), or the deadline passed
        pid = int(info["child-pid"])
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        if str(pid) not in children:
            raise SandboxError(f"bwrap reported child {pid}, not among its children {children}")
        run.add(pid)  # tracked: if this job dies now, its reaper kills the init (and with it the namespace)
        for name, value in rlimits(limits, address_space=run.cgroup is None).items():
            resource.prlimit(pid, RLIMIT_IDS[name], value)
        os.write(block_fd, b"1")

    return hook


def _kill_sandbox(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the pid-namespace init (bwrap's child): the kernel then kills and reaps everything inside
    before bwrap sees it exit, so once bwrap is gone no sandboxed process is left."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        children = []
    for pid in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


# ------------------------------------------------------------------------------------------ backend


class BwrapSandbox(Sandbox):
    """bubblewrap; see the module docstring and docs/sandbox.md."""

    name = "bwrap"

    def __init__(
        self,
        *,
        python: str | None = None,
        install_network: bool = False,
        install_disk_mb: int = INSTALL_DISK_MB,
        index_url: str | None = None,
        find_links: str | Path | None = None,
        bwrap: str = "bwrap",
        uid_base: int = UID_BASE,
        probe: bool = True,
    ) -> None:
        super().__init__(
            install_network=install_network, install_disk_mb=install_disk_mb, index_url=index_url, find_links=find_links
        )
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxError(f"bwrap not found on PATH: {INSTALL_HINT}")
        self.bwrap = found
        self.root_mode = os.geteuid() == 0
        self.uid_base = uid_base
        if self.root_mode and shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin") is None:
            raise SandboxError("setpriv (util-linux) not found under /usr/bin: bwrap's root mode needs it")
        self.python, self.python_prefix = _interpreter(python)
        for reserved in _RESERVED:
            if _under(self.python_prefix, reserved):
                raise SandboxError(f"interpreter prefix {self.python_prefix} is inside {reserved}")
        helptext = subprocess.run([self.bwrap, "--help"], capture_output=True, text=True).stdout
        self._disable_userns = "--disable-userns" in helptext
        self.seccomp = seccomp_filter()
        if self.seccomp is None:
            log.warning("no seccomp filter for %s: the sandbox runs without one", os.uname().machine)
        if probe:
            self._probe()

    # -- public ------------------------------------------------------------------------------------

    def _run(
        self, entries: list[tuple[PurePosixPath, bytes]], command: list[str], limits: Limits, prefix: Path | None
    ) -> ExecResult:
        binds = [("--ro-bind", str(prefix), PREFIX)] if prefix else []
        return self._exec(entries, command, limits, binds=binds, network=False, prefix=bool(binds))

    def install(self, specs: Sequence[str], prefix: str | Path, limits: Limits) -> ExecResult:
        argv = self.install_command(specs)
        prefix_path = checked_prefix(prefix, create=True)
        assert prefix_path is not None
        # The packages go to a tmpfs of install_disk_mb: a hard cap on what one dialogue's installs may write.
        binds = [("--bind", str(prefix_path), PREFIX_HOST)]
        binds.append(("--size", str(self.install_disk_mb << 20), "--perms", "0777", "--tmpfs", PREFIX))
        if self.find_links is not None:
            # File by file under a directory bwrap creates: the wheelhouse directory itself may be private
            # to the host user (pytest's 0700 tmp dirs), which root mode's unprivileged uid cannot enter.
            binds.append(("--perms", "0755", "--dir", WHEELS))
            for wheel in sorted(self.find_links.iterdir()):
                if wheel.is_file():
                    binds.append(("--ro-bind", str(wheel), f"{WHEELS}/{wheel.name}"))
        chown = (lambda uid: _chown_tree(prefix_path, uid)) if self.root_mode else None
        argv = ["sh", "-c", _INSTALL_SH, "sh", *argv]
        res = self._exec([], argv, limits, binds=binds, network=self.install_network, prefix=False, before=chown)
        return disk_cap_exceeded(res, self.install_disk_mb)

    # -- internals ---------------------------------------------------------------------------------

    def _probe(self) -> None:
        res = self.run({}, ["python3", "-c", "pass"], Limits(timeout_s=60))
        if res.exit_code != 0:
            raise SandboxError(
                f"bwrap is installed but a trivial sandboxed run failed (exit {res.exit_code}): "
                f"{res.stderr.strip()[-2000:]}\n(user namespaces disabled? see docs/sandbox.md)"
            )

    def _exec(
        self,
        entries: list[tuple[PurePosixPath, bytes]],
        command: list[str],
        limits: Limits,
        *,
        binds: list[tuple[str, ...]],
        network: bool,
        prefix: bool,
        before=None,
    ) -> ExecResult:
        if len(entries) > MAX_FILES:
            raise SandboxError(f"too many scratch files ({len(entries)} > {MAX_FILES})")
        slot = _uid_slot(self.uid_base) if self.root_mode else contextlib.nullcontext(INNER_UID)
        fds: list[int] = []  # handed to bwrap
        own: list[int] = []  # our ends of the info and block pipes
        try:
            with slot as uid:
                if before is not None:
                    before(uid)
                argv = self.argv(uid, entries, command, limits, binds=binds, network=network, prefix=prefix, fds=fds)
                info_r, info_w = os.pipe()
                block_r, block_w = os.pipe()
                own += [info_r, block_w]
                fds += [info_w, block_r]
                argv[1:1] = ["--info-fd", str(info_w), "--block-fd", str(block_r)]
                hook = _limit_and_release(info_r, block_w, limits)
                return execute(argv, limits, backend=self.name, pass_fds=fds, kill=_kill_sandbox, on_start=hook)
        finally:
            for fd in fds + own:
                os.close(fd)

    def argv(
        self,
        uid: int,
        entries: list[tuple[PurePosixPath, bytes]],
        command: list[str],
        limits: Limits,
        *,
        binds: list[tuple[str, ...]],
        network: bool,
        prefix: bool,
        fds: list[int],
    ) -> list[str]:
        """The full bwrap command line; opens the memfds it references and appends them to ``fds``."""

        def data(name: str, content: bytes) -> str:
            fds.append(_memfd(name, content))
            return str(fds[-1])

        a = [self.bwrap]
        if self.root_mode:
            a += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
            a += [] if network else ["--unshare-net"]
        else:
            a += ["--unshare-all", "--unshare-user", "--uid", str(uid), "--gid", str(uid)]
            a += ["--share-net"] if network else []
            a += ["--disable-userns"] if self._disable_userns else []
        a += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
        a += ["--ro-bind", "/usr", "/usr"]
        for name in _ROOT_LINKS:
            host = Path("/") / name
            if host.is_symlink():
                a += ["--symlink", os.readlink(host), str(host)]
            elif host.is_dir():
                a += ["--ro-bind", str(host), str(host)]
        a += ["--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/opt"]
        for name in _ETC + (_ETC_NET if network else []):
            a += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        passwd = f"root:x:0:0::/root:/usr/sbin/nologin\nsandbox:x:{uid}:{uid}::{SCRATCH}:/bin/sh\n"
        group = f"root:x:0:\nsandbox:x:{uid}:\n"
        a += ["--ro-bind-data", data("passwd", passwd.encode()), "/etc/passwd"]
        a += ["--ro-bind-data", data("group", group.encode()), "/etc/group"]
        if not _under(self.python_prefix, "/usr"):
            for parent in reversed(Path(self.python_prefix).parents[:-1]):
                a += ["--perms", "0755", "--dir", str(parent)]
            a += ["--ro-bind", self.python_prefix, self.python_prefix]
        a += ["--proc", "/proc", "--dev", "/dev"]
        # Files count against one budget of memory_mb: scratch 1/2, /tmp 1/4, /dev/shm 1/4.
        mib = limits.memory_mb << 20
        a += ["--size", str(max(mib // 4, 8 << 20)), "--perms", "1777", "--tmpfs", "/dev/shm"]
        a += ["--size", str(max(mib // 4, 8 << 20)), "--perms", "1777", "--tmpfs", "/tmp"]
        a += ["--size", str(max(mib // 2, 8 << 20)), "--perms", "0777", "--tmpfs", SCRATCH]
        for directory in parent_dirs([path for path, _ in entries]):
            a += ["--perms", "0777", "--dir", f"{SCRATCH}/{directory}"]
        for path, content in entries:
            a += ["--perms", "0666", "--file", data(path.name, content), f"{SCRATCH}/{path}"]
        for bind in binds:
            a += bind
        a += ["--chdir", SCRATCH, "--clearenv"]
        path_dirs = [] if _under(self.python_prefix, "/usr") else [f"{self.python_prefix}/bin"]
        path_dirs += ["/usr/local/bin", "/usr/bin", "/bin"]
        for key, value in sandbox_env(path_dirs, prefix=prefix).items():
            a += ["--setenv", key, value]
        if self.seccomp is not None:
            a += ["--seccomp", data("seccomp", self.seccomp)]
        a += ["--cap-drop", "ALL"]
        inner: list[str] = []
        if self.root_mode:
            a += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
            inner = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
            inner += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
        return [*a, "--", *inner, *command]
