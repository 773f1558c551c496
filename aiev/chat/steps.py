"""The interpreter's step: ``aiev chat`` (by hand; no rule runs it)."""

from __future__ import annotations

import argparse
from typing import Any

from aiev.steps import Step


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="a trained student's checkpoint, served for the session (llm.student.serve)")
    p.add_argument("--endpoint", help="an OpenAI-compatible server already running (its /v1 URL), instead of --model")
    p.add_argument("--model-name", dest="model_name", help="with --endpoint: the name it serves the model under")
    p.add_argument(
        "--tokenizer",
        help="the student's tokenizer directory, for its bos/eos texts (default: --model; with --endpoint, none)",
    )
    p.add_argument("--prompt", help="one user turn, then exit (default: read turns from stdin until EOF or /exit)")
    p.add_argument("--rounds", type=int, help="executions per user turn at most (default: generate.max_rounds)")
    p.add_argument("--no-exec", dest="no_exec", action="store_true", help="show what would run; run nothing")
    p.add_argument("--transcript", help="write the conversation, every execution and refusal, as JSON here")
    p.add_argument("--server-log", dest="server_log", help="with --model: the server's output goes here")


def _chat(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.chat import loop

    if args.rounds is not None and args.rounds < 0:
        raise ValueError("--rounds must be >= 0")
    return loop.run(cfg, args)


STEPS = [
    Step("chat", "talk to a trained student; its pip installs and programs run in the sandbox", _chat_args, _chat,
         lambda r: f"{r['turns']} turns, {r['executions']} executions, {r['refusals']} refused"),
]  # fmt: skip
