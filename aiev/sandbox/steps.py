"""``aiev sandbox run FILE.py``: run one Python file in the sandbox and print the result as one JSON object.

Stdout carries exactly one JSON object (exit_code, stdout, stderr, timed_out, truncated, duration_s,
backend) and the exit status is 0 whenever the sandbox worked, whatever the program did. Only a failure of
the sandbox itself (no backend, bad config, unreadable file) exits non-zero, with the reason on stderr.
Defaults come from the config's ``sandbox`` section; flags override them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from aiev.steps import Step, override


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run FILE.py with python3 in the sandbox; print one JSON result")
    run.add_argument("file", metavar="FILE.py", help="the program (copied alone into an empty scratch dir)")
    override(run, "--timeout", key="sandbox.timeout_s", type=float, metavar="SECONDS", help="wall-clock limit")
    override(run, "--memory-mb", key="sandbox.memory_mb", type=int, metavar="MB", help="memory limit")
    override(run, "--max-procs", key="sandbox.max_procs", type=int, metavar="N", help="processes+threads limit")
    override(run, "--max-output-bytes", key="sandbox.max_output_bytes", type=int, metavar="N")
    override(run, "--backend", key="sandbox.backend", choices=["auto", "bwrap", "apptainer"])
    override(run, "--image", key="sandbox.image", help="apptainer image")


def run(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from aiev.sandbox import from_config

    path = Path(args.file)
    code = path.read_bytes()
    sandbox, limits, _ = from_config(cfg["sandbox"])
    result = sandbox.run({path.name: code}, ["python3", path.name], limits).to_dict()
    print(json.dumps(result))
    return result


STEPS = [Step("sandbox", "run a program in the code-interpreter sandbox (aiev sandbox run FILE.py)", add_args, run)]
