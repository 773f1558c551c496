"""No sandboxed process outlives its job: kill -9 of the job's process group at chosen moments, the reaper, the
sweep of a dead job's leftovers, and the cgroup memory limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aiev.sandbox import Limits, SandboxError, get_sandbox
from aiev.sandbox.tracking import CgroupRoot, JobTracker, alive, children, runtime_dir, start_time
from tests.conftest import tool_or_skip

REPO = Path(__file__).resolve().parents[2]

JOB = textwrap.dedent(
    """
    import sys
    from aiev.sandbox import Limits, get_sandbox
    sb = get_sandbox("bwrap")
    print("ready", flush=True)
    sb.run({"main.py": "import time\\ntime.sleep(120)  # AIEV-LEAK-MARKER\\n"}, ["python3", "main.py"],
           Limits(timeout_s=300))
    """
)


@pytest.fixture(scope="module")
def need_bwrap():
    try:
        get_sandbox("bwrap")
    except SandboxError as exc:
        tool_or_skip("bwrap", str(exc))


def tree(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of ``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        start = start_time(p)
        if start is not None:
            out.append((p, start))
            todo += children(p)
    return out


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(pred, timeout: float = 30.0, step: float = 0.002):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(step)
    raise AssertionError("timed out waiting")


def start_job(env_extra: dict[str, str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), **env_extra)
    return subprocess.Popen(
        [sys.executable, "-c", JOB], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True
    )


def bwraps_under(pid: int) -> list[int]:
    return [p for p, _ in tree(pid) if "bwrap" in cmdline(p).split(" ")[0]]


def assert_all_gone(procs: list[tuple[int, int]], within_s: float = 3.0) -> None:
    end = time.monotonic() + within_s
    left = procs
    while time.monotonic() < end:
        left = [(p, s) for p, s in procs if alive(p, s) and not _zombie(p)]
        if not left:
            return
        time.sleep(0.05)
    raise AssertionError(f"processes of the killed job still alive: {[(p, cmdline(p)) for p, _ in left]}")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


MODES = ["cgroup", "pids"]


def _mode_env(mode: str) -> dict[str, str]:
    if mode == "cgroup":
        if CgroupRoot.detect() is None:
            pytest.skip("no writable cgroup with the memory controller here")
        return {}
    return {"AIEV_SANDBOX_CGROUP": "off"}


@pytest.mark.parametrize("mode", MODES)
def test_kill_while_the_program_runs(need_bwrap, mode):
    """A regression check of the steady state: here bwrap's own --die-with-parent already ends the sandbox, so this
    passes without the tracking too; the start-up moment below is the one only the tracking covers."""
    job = start_job(_mode_env(mode))
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        wait_for(lambda: [p for p, _ in tree(job.pid) if _is_program(p)])
        procs = tree(job.pid)
        assert len(procs) >= 4  # the job, its reaper, bwrap, the sandbox init, the program
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        assert_all_gone(procs)
    finally:
        _force_kill(job)


@pytest.mark.parametrize("mode", ["cgroup"])
def test_kill_while_the_sandbox_is_starting(need_bwrap, mode):
    """The racy moment: bwrap's first process exists, the sandbox init is paused before its release.

    SIGSTOP holds the init there; kill -9 of the job's process group then kills the outer bwrap (it dies with its
    parent) and, without tracking, would leave the init stopped forever, as root, in fresh namespaces."""
    job = start_job(_mode_env(mode))
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "ready"
        inits = []

        def init_appeared():
            for outer in bwraps_under(job.pid):
                kids = [k for k in children(outer) if "bwrap" in cmdline(k).split(" ")[0]]
                if kids:
                    return outer, kids[0]
            return None

        _outer, init = wait_for(init_appeared, step=0.0005)
        os.kill(init, signal.SIGSTOP)
        inits.append((init, start_time(init)))
        procs = tree(job.pid)
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        assert_all_gone(procs + [(p, s) for p, s in inits if s is not None])
    finally:
        _force_kill(job)


def _is_program(pid: int) -> bool:
    return cmdline(pid).startswith("python3 main.py")


def _force_kill(job: subprocess.Popen[str]) -> None:
    with __import__("contextlib").suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)
    job.wait()


def test_the_next_start_cleans_up_after_a_dead_job(tmp_path):
    """A job and its reaper both gone (say, kill -9 of both): the next tracker kills what their record names."""
    victim = subprocess.Popen(["sleep", "60"], start_new_session=True)
    ghost = subprocess.Popen(["true"])
    ghost.wait()  # a pid that is gone: the owner of the record
    jobs = runtime_dir() / "jobs"
    jobs.mkdir(exist_ok=True)
    record = jobs / f"{ghost.pid}-1"
    record.mkdir()
    (record / "run-0").write_text(f"{victim.pid} {start_time(victim.pid)}\n")
    unrelated = subprocess.Popen(["sleep", "60"], start_new_session=True)
    (record / "run-1").write_text(f"{unrelated.pid} 12345\n")  # pid reused by another process: never killed
    try:
        JobTracker()
        assert victim.wait(timeout=5) == -signal.SIGKILL
        assert not record.exists()
        assert unrelated.poll() is None
    finally:
        for p in (victim, unrelated):
            p.kill()
            p.wait()


def test_memory_bomb_is_stopped_by_the_cgroup_limit(need_bwrap):
    if CgroupRoot.detect() is None:
        pytest.skip("no writable cgroup with the memory controller here")
    sb = get_sandbox("bwrap")
    bomb = "x = bytearray(1 << 30)\nx[:: 4096] = b'1' * len(x[:: 4096])\nprint('survived')\n"
    res = sb.run({"main.py": bomb}, ["python3", "main.py"], Limits(timeout_s=30, memory_mb=200))
    assert res.oom_killed and res.exit_code == -signal.SIGKILL and "survived" not in res.stdout
    # The same program within its limit runs: the limit is the cgroup's, not a smaller address-space cap.
    ok = "x = bytearray(100 << 20)\nx[:: 4096] = b'1' * len(x[:: 4096])\nprint('fine')\n"
    res = sb.run({"main.py": ok}, ["python3", "main.py"], Limits(timeout_s=30, memory_mb=200))
    assert (res.exit_code, res.stdout, res.oom_killed) == (0, "fine\n", False)


LEFTOVER = textwrap.dedent(
    """
    import subprocess, sys
    from aiev.sandbox.tracking import JobTracker, gone, start_time
    run = JobTracker.get().begin(256 << 20)
    # The run's first process leaves a child behind and exits, as a sandbox's monitor does when it returns the
    # program's status while its pid-namespace init is still tearing down (the init is recorded, as bwrap's is).
    first = subprocess.Popen(run.wrap(["/bin/sh", "-c", "sleep 300 & echo $!"]), stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
    run.add(first.pid)
    left = int(first.stdout.readline())
    start = start_time(left)
    run.add(left)
    first.wait()
    assert not gone(left, start)
    run.finish()
    print(gone(left, start), flush=True)
    """
)


@pytest.mark.parametrize("mode", MODES)
def test_a_finished_run_returns_only_once_nothing_of_it_is_left(mode):
    """What a run left behind is dead when ``finish`` returns, not merely sent SIGKILL: a caller that looks right
    after (a test, the next run reusing the cgroup) never finds it."""
    env = dict(os.environ, PYTHONPATH=str(REPO), **_mode_env(mode))
    out = subprocess.run([sys.executable, "-c", LEFTOVER], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout == "True\n"


SPARES = textwrap.dedent(
    """
    import json, signal, sys, time
    from aiev.sandbox import Limits, get_sandbox
    from aiev.sandbox import tracking
    from aiev.sandbox.tracking import JobTracker, cgroup_pids

    started = []
    start = tracking.Spare.start
    def recorded(self, argv, pass_fds):
        proc = start(self, argv, pass_fds)
        started.append(proc is not None)
        return proc
    tracking.Spare.start = recorded

    sb = get_sandbox("bwrap")
    program = "print(open('data.txt').read().upper())"
    first = sb.run({"main.py": program, "data.txt": "one"}, ["python3", "main.py"], Limits(timeout_s=30))
    tracker = JobTracker.get()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not tracker._free:  # the spares are started by a thread of their own
        time.sleep(0.01)
    free = list(tracker._free)
    # every free cgroup holds its spare, which entered it before any command reached it
    while time.monotonic() < deadline and not all(c.spare.proc.pid in cgroup_pids(c.path) for c in free):
        time.sleep(0.01)
    inside = [c.spare is not None and c.spare.proc.pid in cgroup_pids(c.path) for c in free]
    later = [sb.run({"main.py": program, "data.txt": word}, ["python3", "main.py"], Limits(timeout_s=30))
             for word in ("two", "three")]
    bomb = "x = bytearray(1 << 30)\\nx[:: 4096] = b'1' * len(x[:: 4096])\\nprint('survived')\\n"
    oom = sb.run({"main.py": bomb}, ["python3", "main.py"], Limits(timeout_s=30, memory_mb=200))
    print(json.dumps({"free": len(free), "inside": inside, "started": started,
                      "out": [r.stdout for r in [first, *later]], "codes": [r.exit_code for r in [first, *later]],
                      "oom": [oom.oom_killed, oom.exit_code == -signal.SIGKILL, "survived" in oom.stdout]}))
    """
)


def test_runs_start_from_spares_that_entered_their_cgroup_in_advance(need_bwrap):
    """After the job's first run every run is exec'd by a spare: a process that entered a free cgroup of the
    pool before the run asked for it (it is a member while it waits). The run's files reach the program through
    it, and the cgroup's memory limit holds for it."""
    if CgroupRoot.detect() is None:
        pytest.skip("no writable cgroup with the memory controller here")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", SPARES], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["free"] >= 1 and all(got["inside"])
    # each run after the job's first (get_sandbox's probe, or the first above), all by a spare
    assert len(got["started"]) >= 3 and all(got["started"])
    assert got["out"] == ["ONE\n", "TWO\n", "THREE\n"] and got["codes"] == [0, 0, 0]
    assert got["oom"] == [True, True, False]


@pytest.mark.parametrize("version", [1, 2])
def test_a_run_cgroups_limit_and_oom_count_in_each_cgroup_version(tmp_path, version):
    """The files each cgroup version uses for the memory limit (swap included) and the OOM-kill count, on a
    stand-in folder: where the memory controller is bound to cgroup v1, so a real v2 hierarchy with it cannot
    be mounted here (the kernel path of v2 runs on v2 machines: CgroupRoot.detect picks it there)."""
    from aiev.sandbox.tracking import RunCgroup

    cg = RunCgroup(tmp_path / "slot-0", version)
    events = "memory.oom_control" if version == 1 else "memory.events"
    (cg.path / events).write_text("oom 0\noom_kill 3\n" if version == 2 else "oom_kill_disable 0\noom_kill 3\n")
    assert cg.configure(200 << 20) == 3
    if version == 1:
        assert (cg.path / "memory.limit_in_bytes").read_text() == str(200 << 20)
        assert (cg.path / "memory.memsw.limit_in_bytes").read_text() == str(200 << 20)
        assert not (cg.path / "memory.max").exists()
    else:
        assert (cg.path / "memory.max").read_text() == str(200 << 20)
        assert (cg.path / "memory.swap.max").read_text() == "0"
        assert not (cg.path / "memory.limit_in_bytes").exists()
    assert cg.procs == cg.path / "cgroup.procs"


THREADS = textwrap.dedent(
    """
    import json, threading, time
    from aiev.sandbox import Limits, get_sandbox

    sb = get_sandbox("bwrap")
    first_done, may_end, results = threading.Event(), threading.Event(), []

    def first():  # a worker thread that runs programs, then ends while another thread's run goes on
        for _ in range(3):  # (the pool's cgroups are given back by this thread)
            sb.run({}, ["true"], Limits(timeout_s=30))
        first_done.set()
        may_end.wait()

    def second():
        results.append(sb.run({}, ["python3", "-c", "import time; time.sleep(1.5); print('done')"],
                              Limits(timeout_s=30)))

    a = threading.Thread(target=first)
    a.start()
    first_done.wait()
    time.sleep(0.5)  # the spares of the first run's making are ready
    b = threading.Thread(target=second)
    b.start()
    time.sleep(0.5)
    may_end.set()
    a.join()
    b.join()
    print(json.dumps([results[0].exit_code, results[0].stdout]))
    """
)


def test_a_run_outlives_the_thread_of_an_earlier_run(need_bwrap):
    """Worker threads come and go: a run must not die with the thread that ran the job's run before it (the
    sandbox is started with --die-with-parent, whose signal follows the thread that forked it; spares are forked
    by a thread of their own)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", THREADS], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == [0, "done\n"]
