"""The sandbox, behaviour: every adversarial program is contained AND the host is checked to be unaffected.

The same suite runs against every backend available here: bwrap (skipped, with the reason, when missing) and
apptainer (skipped unless on PATH with a built image: AIEV_SANDBOX_IMAGE or results/sandbox/sandbox.sif).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zipfile
from pathlib import Path

import psutil
import pytest

from aiev.sandbox import DEFAULT_IMAGE, Limits, SandboxError, get_sandbox
from aiev.sandbox.base import memory_by_cgroup
from tests.sandbox.test_sandbox_units import RESULT_KEYS

REPO = Path(__file__).resolve().parents[2]
FAST = Limits(timeout_s=10, memory_mb=512, max_procs=32)
BOMB = "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)\n"


def _skip_reason(backend: str) -> str | None:
    from shutil import which

    if backend == "bwrap" and which("bwrap") is None:
        return "bwrap not installed (apt-get install bubblewrap)"
    if backend == "apptainer":
        if which("apptainer") is None:
            return "apptainer not on PATH"
        if not _image().is_file():
            return f"apptainer image {_image()} not built (apptainer build {_image()} containers/sandbox.def)"
    return None


def _image() -> Path:
    return Path(os.environ.get("AIEV_SANDBOX_IMAGE", REPO / DEFAULT_IMAGE))


@pytest.fixture(scope="module", params=["bwrap", "apptainer"])
def backend(request) -> str:
    reason = _skip_reason(request.param)
    if reason:
        pytest.skip(reason)
    return request.param


@pytest.fixture(scope="module")
def sb(backend):
    try:
        return get_sandbox(backend, image=_image())
    except SandboxError as exc:  # installed but unusable: our command line or the host is broken, a failure
        pytest.fail(f"{backend} is installed but unusable: {exc}")


def run_py(sb, code: str, limits: Limits = FAST, name: str = "main.py", **kw):
    return sb.run({name: textwrap.dedent(code)}, ["python3", name], limits, **kw)


def procs_with(marker: str, python_only: bool = False) -> list[int]:
    """Host pids whose command line contains ``marker`` (``python_only``: run by python, not the sandbox)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            argv0 = os.path.basename(cmdline.split(b"\0")[0])
            if marker.encode() in cmdline and (not python_only or argv0.startswith(b"python")):
                found.append(int(entry))
    return found


def host_ipv4() -> list[str]:
    return [a.address for addrs in psutil.net_if_addrs().values() for a in addrs if a.family == socket.AF_INET]


# ------------------------------------------------------------------------------------- basics


def test_runs_and_reports(sb, backend):
    res = run_py(sb, "import sys\nprint('hello')\nprint('oops', file=sys.stderr)\nsys.exit(3)\n")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "hello\n", "oops\n")
    assert not res.timed_out and not res.truncated
    assert res.backend == backend and 0 < res.duration_s < 10
    assert set(res.to_dict()) == RESULT_KEYS


def test_exit_statuses(sb):
    assert run_py(sb, "raise ValueError('x')").exit_code == 1
    assert run_py(sb, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)").exit_code == -9
    assert run_py(sb, "import os\nos.abort()").exit_code == -6


def test_files_cwd_and_fresh_scratch(sb):
    files = {
        "main.py": "import pkg.mod, os\nprint(pkg.mod.X, open('data.bin','rb').read(), os.getcwd())\n"
        "open('left.txt', 'w').write('x')",
        "pkg/__init__.py": "",
        "pkg/mod.py": "X = 42\n",
        "data.bin": b"\x00\x01",
    }
    res = sb.run(files, ["python3", "main.py"], FAST)
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "42 b'\\x00\\x01' /sandbox\n"
    res = run_py(sb, "import os\nprint(sorted(os.listdir('.')), os.path.exists('/tmp/left.txt'))")
    assert res.stdout == "['main.py'] False\n"


def test_rejects_bad_file_names(sb):
    for name in ["../x.py", "/etc/x", "", "a/../../b"]:
        with pytest.raises(SandboxError):
            sb.run({name: "x"}, ["python3", "-c", "pass"], FAST)


def test_output_is_decoded_with_replacement(sb):
    res = run_py(sb, "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe \\xc3\\xa9')")
    assert res.stdout == "ok \ufffd\ufffd é"


def test_unprivileged_inside(sb):
    res = run_py(
        sb,
        """
        import os
        caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm', 'CapBnd'))]
        print(os.getuid(), os.geteuid(), set(caps))
        """,
    )
    uid, euid, caps = res.stdout.split(maxsplit=2)
    assert uid != "0" and euid != "0", res.stdout
    assert caps.strip() == "{'0000000000000000'}", res.stdout


def test_limits_are_in_force_inside(sb):
    res = run_py(
        sb,
        """
        import resource as r
        print(*(r.getrlimit(x) for x in (r.RLIMIT_NPROC, r.RLIMIT_AS, r.RLIMIT_CPU, r.RLIMIT_CORE)))
        """,
        Limits(timeout_s=7.5, memory_mb=300, max_procs=12),
    )
    # Where a cgroup holds the memory limit, the address space is not capped (RLIMIT_AS is the fallback).
    mem = "(-1, -1)" if memory_by_cgroup() else f"({300 << 20}, {300 << 20})"
    assert res.stdout == f"(12, 12) {mem} (9, 10) (0, 0)\n", res.stdout + res.stderr


def test_deadline_during_startup_still_kills(sb):
    res = run_py(sb, BOMB, Limits(timeout_s=0.003))
    assert res.timed_out and res.exit_code is None


# ------------------------------------------------------------------------------------- network


def test_tcp_to_host_listener_fails(sb):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    targets = sorted(set(["127.0.0.1", *host_ipv4()]))
    try:
        res = run_py(
            sb,
            f"""
            import socket
            for host in {targets!r}:
                s = socket.socket()
                s.settimeout(2)
                try:
                    s.connect((host, {port}))
                    print('CONNECTED', host)
                except OSError as exc:
                    print('failed', host, type(exc).__name__)
            """,
        )
        assert "CONNECTED" not in res.stdout
        assert res.stdout.count("failed") == len(targets), res.stdout + res.stderr
        with pytest.raises(TimeoutError):
            listener.accept()  # the host's listener saw nothing
    finally:
        listener.close()


def test_dns_fails(sb):
    res = run_py(
        sb,
        """
        import socket
        for name in ['pypi.org', 'example.com']:
            try:
                print('RESOLVED', socket.getaddrinfo(name, 443))
            except OSError as exc:
                print('no dns', type(exc).__name__)
        """,
    )
    assert "RESOLVED" not in res.stdout and res.stdout.count("no dns") == 2, res.stdout + res.stderr


# ------------------------------------------------------------------------------------- file system


def test_writes_outside_scratch_do_not_reach_host(sb, tmp_path):
    tag = uuid.uuid4().hex
    host_paths = [
        f"/etc/aiev-{tag}",
        f"/usr/aiev-{tag}",
        f"/usr/lib/aiev-{tag}",
        f"/tmp/aiev-{tag}",
        f"{Path.home()}/aiev-{tag}",
        f"/root/aiev-{tag}",
        f"/var/tmp/aiev-{tag}",
        f"{tmp_path}/aiev-{tag}",
        f"{REPO}/aiev-{tag}",
        f"{sys.base_prefix}/aiev-{tag}",
    ]
    res = run_py(
        sb,
        f"""
        for path in {host_paths!r}:
            try:
                with open(path, 'w') as fh:
                    fh.write('pwned')
                print('wrote', path)
            except OSError as exc:
                print('refused', path, type(exc).__name__)
        """,
    )
    assert res.exit_code == 0, res.stderr
    for path in host_paths:
        assert not Path(path).exists(), f"{path} appeared on the host"
    # /tmp inside is the sandbox's own tmpfs, so that write may succeed; system dirs must refuse.
    for path in host_paths[:3]:
        assert f"refused {path}" in res.stdout


def test_host_files_are_invisible(sb, tmp_path):
    tag, secret = uuid.uuid4().hex, f"the-secret-is-{uuid.uuid4().hex}"
    places = [Path(f"/tmp/aiev-{tag}.txt"), tmp_path / "secret.txt", Path.home() / f"aiev-{tag}.txt"]
    for place in places:
        place.write_text(secret)
    try:
        paths = [str(p) for p in places] + ["/etc/shadow", "/root/.bash_history", "/proc/1/environ"]
        res = run_py(
            sb,
            f"""
            for path in {paths!r}:
                try:
                    print('READ', path, open(path).read())
                except OSError as exc:
                    print('denied', path, type(exc).__name__)
            """,
        )
        assert secret not in res.stdout + res.stderr
        for place in places:
            assert f"denied {place}" in res.stdout
    finally:
        for place in places:
            place.unlink()


def test_env_secret_absent(sb, monkeypatch):
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    monkeypatch.setenv("AIEV_TEST_SECRET", secret)
    res = run_py(sb, "import os\nprint(dict(os.environ))\nprint(open('/proc/self/environ','rb').read())")
    assert res.exit_code == 0
    assert secret not in res.stdout and "AIEV_TEST_SECRET" not in res.stdout


# ------------------------------------------------------------------------------------- resources


def test_fork_bomb_contained(sb):
    marker = f"bomb_{uuid.uuid4().hex}"
    limits = Limits(timeout_s=3, memory_mb=256, max_procs=32)
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], len(procs_with(marker, python_only=True)))
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.monotonic()
    try:
        res = run_py(
            sb,
            """
            import os, time
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
            """,
            limits,
            name=f"{marker}.py",
        )
    finally:
        stop.set()
        watcher.join()
    assert res.timed_out and res.exit_code is None
    assert time.monotonic() - start < limits.timeout_s + 5
    assert 0 < peak[0] <= limits.max_procs, f"saw {peak[0]} bomb processes on the host"
    assert procs_with(marker) == []
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_fork_bomb_does_not_starve_a_concurrent_run(sb):
    limits = Limits(timeout_s=4, memory_mb=256, max_procs=32)
    worker = "import subprocess\nps = [subprocess.Popen(['sleep', '0.2']) for _ in range(8)]\n"
    worker += "print(sum(p.wait() for p in ps))"
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("bomb", run_py(sb, BOMB, limits)))
    t.start()
    time.sleep(1.0)  # the bomb is at its ceiling by now
    ok = run_py(sb, worker, limits)
    t.join()
    assert results["bomb"].timed_out
    assert ok.exit_code == 0 and ok.stdout == "0\n", ok.stderr


def test_memory_bomb_fails(sb):
    before = psutil.virtual_memory().available
    res = run_py(
        sb,
        """
        import sys
        try:
            huge = bytearray(10 << 30)
        except MemoryError:
            print('one-shot MemoryError')
        chunks = []
        try:
            while True:
                chunks.append(bytearray(32 << 20))
        except MemoryError:
            print('grew to', len(chunks) * 32, 'MB')
            sys.exit(7)
        """,
        Limits(timeout_s=10, memory_mb=256),
    )
    if memory_by_cgroup():  # the kernel kills the run when it passes its cgroup's limit
        assert res.oom_killed and res.exit_code == -9, res
    else:  # RLIMIT_AS: allocations fail inside the program
        assert res.exit_code == 7 and "one-shot MemoryError" in res.stdout, res.stdout + res.stderr
        assert int(res.stdout.split("grew to ")[1].split()[0]) <= 256
    assert psutil.virtual_memory().available > before - (512 << 20)


def test_tmpfs_is_capped(sb, backend):
    if backend != "bwrap":
        pytest.skip("tmpfs sizes are bwrap's; apptainer's are the site's sessiondir limit")
    res = run_py(
        sb,
        """
        block = b'x' * (1 << 20)
        for where in ['/tmp/fill', '/dev/shm/fill', 'fill']:
            n = 0
            try:
                with open(where, 'wb') as fh:
                    while n < 4096:
                        fh.write(block)
                        fh.flush()
                        n += 1
            except OSError as exc:
                print(where, 'full after', n, 'MB', type(exc).__name__)
        """,
        Limits(timeout_s=20, memory_mb=128),
    )
    if res.oom_killed:  # tmpfs pages count against the run's memory cgroup: one budget of memory_mb either way
        assert memory_by_cgroup() and res.exit_code == -9
        return
    assert res.stdout.count("full after") == 3, res.stdout + res.stderr
    sizes = [int(line.split("full after ")[1].split()[0]) for line in res.stdout.splitlines()]
    assert sum(sizes) <= 128 + 3


def test_cpu_loop_killed_at_deadline(sb):
    start = time.monotonic()
    res = run_py(sb, "print('spinning', flush=True)\nwhile True:\n    pass\n", Limits(timeout_s=1.5))
    took = time.monotonic() - start
    assert res.timed_out and res.exit_code is None
    assert res.stdout == "spinning\n"
    assert 1.4 < took < 4 and 1.4 < res.duration_s < 4


def test_sleep_past_timeout(sb):
    res = run_py(sb, "import time\ntime.sleep(100)", Limits(timeout_s=1))
    assert res.timed_out and res.exit_code is None and res.duration_s < 3


def test_background_processes_do_not_outlive_the_run(sb):
    marker = uuid.uuid4().hex
    digits = str(uuid.uuid4().int)[:12]
    code = f"""
        import os, subprocess, time
        pid = os.fork()
        if pid == 0:                      # classic double fork into a new session
            os.setsid()
            if os.fork() == 0:
                os.execvp('python3', ['python3', '-c', 'import time\\nwhile True: time.sleep(0.05)', '{marker}'])
            os._exit(0)
        os.waitpid(pid, 0)
        subprocess.Popen(['sleep', '1000.{digits}'], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.Popen(['python3', '-c', 'import time; time.sleep(1000)', '{marker}'],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)
        print('parent done')
        """
    res = run_py(sb, code)
    assert res.exit_code == 0 and res.stdout == "parent done\n" and not res.timed_out, res.stderr
    assert res.duration_s < 5
    assert procs_with(marker) == []
    assert procs_with(f"1000.{digits}") == []


def test_daemon_in_install_phase_stops_writing_to_the_prefix(sb, backend, tmp_path):
    """The install phase is the one time a host directory is writable: a daemon a package's build step
    leaves behind must be dead when install returns (same runner and namespaces as install())."""
    if backend != "bwrap":
        pytest.skip("drives bwrap's internal install path directly")
    from aiev.sandbox.base import PREFIX
    from aiev.sandbox.bwrap import _chown_tree

    prefix = tmp_path / "prefix"
    prefix.mkdir()
    code = f"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for i in range(10**6):
            with open('{PREFIX}/beat.txt', 'w') as fh:
                fh.write(str(i))
            time.sleep(0.02)
    os._exit(0)
time.sleep(0.3)
"""
    chown = (lambda uid: _chown_tree(prefix, uid)) if sb.root_mode else None
    res = sb._exec(
        [],
        ["python3", "-c", code],
        FAST,
        binds=[("--bind", str(prefix), PREFIX)],
        network=False,
        prefix=False,
        before=chown,
    )
    assert res.exit_code == 0, res.stderr
    beat = prefix / "beat.txt"
    assert beat.exists()
    first = beat.read_text()
    time.sleep(0.3)
    assert beat.read_text() == first, "a process from the install sandbox is still writing"


def test_huge_stdout_is_truncated_promptly(sb):
    me = psutil.Process()
    rss = me.memory_info().rss
    start = time.monotonic()
    res = run_py(
        sb,
        """
        import sys
        block = b'x' * (1 << 20)
        for _ in range(100):
            sys.stdout.buffer.write(block)
        sys.stderr.write('e' * (3 << 20))
        print('done', file=sys.stderr)
        """,
        Limits(timeout_s=30),
    )
    assert res.exit_code == 0 and not res.timed_out
    assert res.truncated
    assert len(res.stdout) == FAST.max_output_bytes == len(res.stderr)
    assert time.monotonic() - start < 10
    assert me.memory_info().rss - rss < 64 << 20


def test_killing_the_parent(sb):
    sentinel = subprocess.Popen(["sleep", "30"])
    marker = uuid.uuid4().hex
    try:
        res = run_py(
            sb,
            f"""
            import os, signal, subprocess
            child = subprocess.Popen(['python3', '-c', 'import time; time.sleep(1000)', '{marker}'])
            print('ppid', os.getppid(), flush=True)
            for target in (os.getppid(), 1, -1):
                try:
                    os.kill(target, signal.SIGKILL)
                    print('sent', target, flush=True)
                except OSError as exc:
                    print('denied', target, exc.errno, flush=True)
            print('alive')
            """,
        )
        # Whatever happened inside, the result is a result and says so.
        assert res.timed_out or isinstance(res.exit_code, int)
        assert res.stdout.startswith("ppid ")
        assert sentinel.poll() is None, "kill(-1) inside reached a host process"
        assert procs_with(marker) == []
    finally:
        sentinel.kill()
        sentinel.wait()


def test_no_new_user_namespaces(sb, backend):
    res = run_py(
        sb,
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print('unshare', libc.unshare(0x10000000), os.strerror(ctypes.get_errno()))
        """,
    )
    assert res.stdout.startswith("unshare -1"), res.stdout + res.stderr


# ------------------------------------------------------------------------------------- install phase


def tiny_wheel(folder: Path, name: str = "aievtinypkg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": "def plus(a, b):\n    return a + b\n",
        f"{name}-1.0.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{name}-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{n},,\n" for n in files) + f"{name}-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
        z.writestr(f"{name}-1.0.dist-info/RECORD", record)
    return whl


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wheelhouse")
    tiny_wheel(folder)
    return folder


def test_install_offline_from_wheelhouse_is_per_prefix_and_read_only(backend, wheelhouse, tmp_path):
    sb = get_sandbox(backend, image=_image(), find_links=wheelhouse)
    mine, other = tmp_path / "dialogue-a", tmp_path / "dialogue-b"
    res = sb.install(["aievtinypkg==1.0"], mine, Limits(timeout_s=120))
    assert res.exit_code == 0, res.stdout + res.stderr
    assert (mine / "aievtinypkg" / "__init__.py").is_file()
    use = "import aievtinypkg\nprint(aievtinypkg.plus(2, 3))\n"
    assert run_py(sb, use, prefix=mine).stdout == "5\n"
    other.mkdir()
    for prefix in (other, None):
        res = run_py(sb, use, prefix=prefix)
        assert res.exit_code == 1 and "ModuleNotFoundError" in res.stderr
    before = sorted(p.relative_to(mine) for p in mine.rglob("*"))
    res = run_py(
        sb,
        """
        import os
        for path in ['/opt/prefix/evil.py', '/opt/prefix/aievtinypkg/__init__.py']:
            try:
                open(path, 'a').write('x = 1\\n')
                print('wrote', path)
            except OSError as exc:
                print('read-only', type(exc).__name__)
        """,
        prefix=mine,
    )
    assert res.stdout.count("read-only") == 2, res.stdout + res.stderr
    assert sorted(p.relative_to(mine) for p in mine.rglob("*")) == before
    assert (mine / "aievtinypkg" / "__init__.py").read_text().startswith("def plus")
    # a second install into the same prefix keeps working (root mode: another run uid owns the files)
    res = sb.install(["aievtinypkg"], mine, Limits(timeout_s=120))
    assert res.exit_code == 0, res.stdout + res.stderr


def test_install_without_network_or_wheelhouse_fails_cleanly(sb, tmp_path):
    res = sb.install(["aievtinypkg"], tmp_path / "p", Limits(timeout_s=120))
    assert res.exit_code not in (0, None) and not res.timed_out
    assert "No matching distribution found for aievtinypkg" in res.stderr, res.stderr


def test_install_refuses_unsafe_specs(sb, tmp_path):
    for bad in (["numpy; rm -rf /"], ["--index-url=http://evil", "x"], ["pkg @ https://evil/x.whl"], []):
        with pytest.raises(SandboxError):
            sb.install(bad, tmp_path / "p", FAST)


# ------------------------------------------------------------------------------------- bwrap user mode


@pytest.mark.skipif(os.geteuid() != 0, reason="already unprivileged: the whole suite ran in user mode")
def test_bwrap_user_mode_as_unprivileged_host_user(backend):
    """Root here runs bwrap in root mode; check the laptop path (bwrap unprivileged) too, as `nobody`."""
    if backend != "bwrap":
        pytest.skip("bwrap only")
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("needs /usr/bin/python3 readable by nobody")
    script = textwrap.dedent(
        """
        import json, sys, threading
        sys.path.insert(0, sys.argv[1])
        from aiev.sandbox.base import Limits
        from aiev.sandbox.bwrap import BwrapSandbox
        sb = BwrapSandbox(python='/usr/bin/python3')
        assert not sb.root_mode
        probe = sb.run({'m.py': 'import os, socket\\nprint(os.getuid())\\nsocket.create_connection(("127.0.0.1", 9))'},
                       ['python3', 'm.py'], Limits(timeout_s=10))
        bomb = sys.argv[3]
        lim = Limits(timeout_s=3, max_procs=16, memory_mb=256)
        out = {}
        name = 'bomb_' + sys.argv[2] + '.py'
        t = threading.Thread(target=lambda: out.setdefault('bomb', sb.run({name: bomb}, ['python3', name], lim)))
        t.start()
        import os, time; time.sleep(1)
        def bombs():
            n = 0
            for pid in filter(str.isdigit, os.listdir('/proc')):
                try:
                    argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
                except OSError:
                    continue
                n += argv[0].startswith(b'python') and name.encode() in argv
            return n
        peak = bombs()
        work = 'import subprocess\\nprint(sum(subprocess.Popen(["true"]).wait() for _ in range(8)))'
        ok = sb.run({'w.py': work}, ['python3', 'w.py'], lim)
        t.join()
        result = {'probe': probe.to_dict(), 'bomb': out['bomb'].to_dict(), 'ok': ok.to_dict()}
        print(json.dumps(result | {'peak': peak, 'left': bombs()}))
        """
    )
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
            str(REPO),
            uuid.uuid4().hex,
            BOMB,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        cwd="/",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["probe"]["stdout"] == "1000\n" and "ConnectionRefusedError" in out["probe"]["stderr"]
    assert out["bomb"]["timed_out"] and 0 < out["peak"] <= 16 and out["left"] == 0, out
    assert out["ok"]["exit_code"] == 0 and out["ok"]["stdout"] == "0\n", out["ok"]


def big_wheel(folder: Path, mb: int) -> Path:
    """A wheel holding ``mb`` MB of incompressible data (what an install writes, not what it downloads)."""
    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / "aievbigpkg-1.0-py3-none-any.whl"
    files = {
        "aievbigpkg/__init__.py": b"SIZE = 1\n",
        "aievbigpkg/blob.bin": os.urandom(mb << 20),
        "aievbigpkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: aievbigpkg\nVersion: 1.0\n",
        "aievbigpkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\nTag: py3-none-any",
    }
    record = "".join(f"{n},,\n" for n in files) + "aievbigpkg-1.0.dist-info/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
        z.writestr("aievbigpkg-1.0.dist-info/RECORD", record)
    return whl


def test_install_past_the_disk_cap_fails_clearly_and_installs_nothing(backend, tmp_path):
    wheels = tmp_path / "wheels"
    big_wheel(wheels, 12)
    tiny_wheel(wheels)
    sb = get_sandbox(backend, image=_image(), find_links=wheels, install_disk_mb=8)
    prefix = tmp_path / "prefix"
    assert sb.install(["aievtinypkg"], prefix, Limits(timeout_s=120, memory_mb=1024)).exit_code == 0
    before = sorted(p.relative_to(prefix) for p in prefix.rglob("*"))
    res = sb.install(["aievbigpkg"], prefix, Limits(timeout_s=120, memory_mb=1024))
    assert res.exit_code not in (0, None)
    assert "disk cap of 8 MB (sandbox.install.disk_mb)" in res.stderr, res.stderr
    assert sorted(p.relative_to(prefix) for p in prefix.rglob("*")) == before  # the earlier install is intact
    roomy = get_sandbox(backend, image=_image(), find_links=wheels, install_disk_mb=64)
    res = roomy.install(["aievbigpkg"], prefix, Limits(timeout_s=120, memory_mb=1024))
    assert res.exit_code == 0, res.stderr
    assert (prefix / "aievbigpkg" / "blob.bin").stat().st_size == 12 << 20
    assert (prefix / "aievtinypkg" / "__init__.py").is_file()  # installs accumulate in the dialogue's prefix
