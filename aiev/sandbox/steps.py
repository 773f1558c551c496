"""``aiev sandbox run FILE.py``: run one Python file in the sandbox and print the result as one JSON object;
``aiev sandbox image DEF SIF``: build an Apptainer image (the workflow's sandbox_image rule).

Stdout carries exactly one JSON object (exit_code, stdout, stderr, timed_out, truncated, duration_s,
backend) and the exit status is 0 whenever the sandbox worked, whatever the program did. Only a failure of
the sandbox itself (no backend, bad config, unreadable file) exits non-zero, with the reason on stderr.
Defaults come from the config's ``sandbox`` section; flags override them.

``image`` builds and inspects the image through spython (:func:`aiev.sandbox.apptainer.build_image`), checks
that it carries its definition file's labels, and prints the inspection's summary as one JSON object.
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
    image = sub.add_parser("image", help="build an Apptainer image from its definition file, then inspect it")
    image.add_argument("definition", metavar="DEF", help="the definition file (containers/*.def)")
    image.add_argument("image", metavar="SIF", help="the image to write (replaced if it exists)")
    image.add_argument("--apptainer", default="apptainer", help="the apptainer binary (default: from PATH)")


def run(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.sandbox_command == "image":
        return build(args)
    from aiev.sandbox import from_config

    path = Path(args.file)
    code = path.read_bytes()
    sandbox, limits, _ = from_config(cfg["sandbox"])
    result = sandbox.run({path.name: code}, ["python3", path.name], limits).to_dict()
    print(json.dumps(result))
    return result


def build(args: argparse.Namespace) -> dict[str, Any]:
    from aiev.sandbox.apptainer import build_image

    attributes = build_image(args.definition, args.image, apptainer=args.apptainer)
    summary = {"image": args.image, "definition": args.definition, "labels": attributes.get("labels") or {}}
    summary["test"] = attributes.get("test") or ""
    print(json.dumps(summary))
    return summary


STEPS = [
    Step(
        "sandbox",
        "run a program in the code-interpreter sandbox (aiev sandbox run FILE.py), build its images",
        add_args,
        run,
    )
]
