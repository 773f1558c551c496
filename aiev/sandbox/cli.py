"""``aiev sandbox run FILE.py``: run one Python file in the sandbox and print the result as one JSON object.

Stdout carries exactly one JSON object (exit_code, stdout, stderr, timed_out, truncated, duration_s,
backend) and the exit status is 0 whenever the sandbox worked, whatever the program did. Only a failure of
the sandbox itself (no backend, bad config, unreadable file) exits non-zero, with the reason on stderr.
Defaults come from the config's ``sandbox`` section; flags override them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sandbox_command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="run FILE.py with python3 in the sandbox; print one JSON result")
    run.add_argument("file", metavar="FILE.py", help="the program (copied alone into an empty scratch dir)")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="wall-clock limit (config: timeout_s)")
    run.add_argument("--memory-mb", dest="memory_mb", type=int, metavar="MB", help="address-space limit")
    run.add_argument("--max-procs", dest="max_procs", type=int, metavar="N", help="processes+threads limit")
    run.add_argument("--max-output-bytes", dest="max_output_bytes", type=int, metavar="N")
    run.add_argument("--backend", choices=["auto", "bwrap", "apptainer"], help="config: backend (auto)")
    run.add_argument("--image", help="apptainer image (config: image)")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    from aiev.config import load_config

    section = load_config(getattr(args, "config", None))["sandbox"]
    overrides = {
        "timeout_s": getattr(args, "timeout", None),
        "memory_mb": getattr(args, "memory_mb", None),
        "max_procs": getattr(args, "max_procs", None),
        "max_output_bytes": getattr(args, "max_output_bytes", None),
        "backend": getattr(args, "backend", None),
        "image": getattr(args, "image", None),
    }
    section.update({k: v for k, v in overrides.items() if v is not None})
    return section


def main(args: argparse.Namespace) -> int:
    from aiev.config import ConfigError
    from aiev.sandbox import SandboxError, from_config

    if getattr(args, "sandbox_command", "run") != "run":
        print(f"aiev sandbox: unknown command {args.sandbox_command!r}", file=sys.stderr)
        return 2
    try:
        cfg = _settings(args)
        path = Path(args.file)
        code = path.read_bytes()
        sandbox, limits, _ = from_config(cfg)
        result = sandbox.run({path.name: code}, ["python3", path.name], limits)
    except (ConfigError, SandboxError, OSError) as exc:
        print(f"aiev sandbox: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict()))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m aiev.sandbox.cli", description=__doc__)
    parser.add_argument("--config", help="YAML/JSON config file or inline JSON object")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    add_args(parser)
    return parser


if __name__ == "__main__":
    sys.exit(main(_parser().parse_args()))
