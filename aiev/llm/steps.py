"""The serving step: ``aiev serve`` (used as a prefix by the rules whose model is served inside the job)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from aiev.steps import Step

ROLES = ("teacher", "student")


def _serve_args(p: argparse.ArgumentParser) -> None:
    from aiev.llm.serve import ENGINES

    p.add_argument("--role", choices=ROLES, help="serve llm.ROLE.serve from --config (the workflow's form)")
    p.add_argument("--engine", choices=ENGINES, help="engine (overrides the config's)")
    p.add_argument("--model", help="hub id, local directory, GGUF file, or pypi:MODULE (overrides the config's)")
    p.add_argument("--name", help="the model name clients ask for (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="default: a free port")
    p.add_argument("--command", dest="server_command", help="engine=command: server template with {host} {port} ...")
    p.add_argument("--arg", dest="extra", action="append", default=None, help="extra engine argument (repeatable)")
    p.add_argument("--startup-timeout", dest="startup_timeout", type=float)
    p.add_argument("--chat-template", dest="chat_template", help="llama-cpp chat format name, or vllm template")
    p.add_argument("--log", dest="server_log", help="file for the server's output")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND: run it against the server, then stop")


def _serve(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.llm.serve import ServeError, ServeSpec, run_with_server, spec_from_config

    if args.role is not None:
        section = cfg["llm"][args.role].get("serve")
        if not section:
            raise ServeError(f"--role {args.role}: llm.{args.role}.serve is not set in the config")
        spec = spec_from_config(section, cfg["llm"][args.role].get("chat_template"), model=args.model)
    elif args.engine and args.model:
        spec = ServeSpec(engine=args.engine, model=args.model)
    else:
        raise ServeError("give --role ROLE (with --config), or --engine and --model")
    flags = {
        "engine": args.engine, "model": args.model, "name": args.name, "host": args.host, "port": args.port,
        "command": args.server_command, "startup_timeout_s": args.startup_timeout, "chat_template": args.chat_template,
        "extra_args": tuple(args.extra) if args.extra is not None else None,
    }  # fmt: skip
    spec = dataclasses.replace(spec, **{k: v for k, v in flags.items() if v is not None})
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    return {"exit_code": run_with_server(spec, cmd, args.server_log, role=args.role)}


STEPS = [
    Step("serve", "serve a model (vLLM, llama.cpp, transformers) for the duration of a command", _serve_args, _serve,
         exit_code=lambda r: r["exit_code"]),
]  # fmt: skip
