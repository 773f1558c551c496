"""The ``aiev`` command: a registry of steps (:mod:`aiev.steps`); every Snakemake rule calls one of them.

Each step takes ``--config`` (a YAML/JSON file or an inline JSON object, validated against the same schema
as the Snakefile's config, defaults filled) plus explicit input/output paths. Flags that override a config key
are applied to the config in one place (:func:`aiev.config.with_overrides`) before the step runs, so every
step also runs comfortably by hand.

Exit status: 0 done, 1 the step failed (the reason on stderr), 2 a bad command line or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from aiev import __version__
from aiev.chat.steps import STEPS as CHAT
from aiev.config import ConfigError, load_config, with_overrides
from aiev.curate.steps import STEPS as CURATE
from aiev.doctor import STEPS as DOCTOR
from aiev.evaluate.steps import STEPS as EVALUATE
from aiev.generate.steps import STEPS as GENERATE
from aiev.io import record_reads
from aiev.llm.steps import STEPS as LLM
from aiev.report.steps import STEPS as REPORT
from aiev.sandbox.steps import STEPS as SANDBOX
from aiev.scoring.steps import STEPS as BENCHMARK
from aiev.seeds.steps import STEPS as SEEDS
from aiev.stage.steps import STEPS as STAGE
from aiev.steps import Step, overrides, run_step
from aiev.train.steps import STEPS as TRAIN

log = logging.getLogger("aiev")


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", action="store_true", help="print the Markdown reference of every key instead")


def _config_cmd(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    if args.reference:
        from aiev.config import reference_markdown

        sys.stdout.write(reference_markdown())
    else:
        json.dump(cfg, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return {}


CONFIG = [Step("config", "validate a config and print it with every default filled in", _config_args, _config_cmd)]

#: Every step, in pipeline order. A new part adds its package's STEPS here.
STEPS: dict[str, Step] = {
    s.name: s
    for s in [
        *SEEDS,
        *SANDBOX,
        *GENERATE,
        *CURATE,
        *TRAIN,
        *EVALUATE,
        *BENCHMARK,
        *STAGE,
        *REPORT,
        *LLM,
        *CHAT,
        *CONFIG,
        *DOCTOR,
    ]
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiev",
        description="AIEV-INSTRUCT pipeline steps. Each Snakemake rule runs one of these sub-commands.",
    )
    parser.add_argument("--version", action="version", version=f"aiev {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    for step in STEPS.values():
        p = sub.add_parser(step.name, help=step.help, description=step.help)
        p.add_argument(
            "--config",
            help="config: a YAML/JSON file or an inline JSON object (default: all schema defaults)",
        )
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        step.add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    record_reads(sys.argv if argv is None else ["aiev", *argv])
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log.setLevel(logging.DEBUG if args.verbose else logging.INFO)  # also where a host already set up logging
    step = STEPS[args.command]
    config = args.config
    if config is None and step.checkout_config and Path("Snakefile").is_file() and Path("config.yaml").is_file():
        config = "config.yaml"
        log.info("no --config: using config.yaml, the config snakemake reads in this checkout")
    try:
        cfg = with_overrides(load_config(config), overrides(args))
        report = run_step(step, cfg, args)
    except ConfigError as exc:
        print(f"aiev {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as exc:  # SeedError, LLMError, EndpointUnreachable, ServeError...
        if args.verbose:
            raise
        print(f"aiev {args.command}: error: {exc}", file=sys.stderr)
        return 1
    line = step.summary(report)
    if line:
        log.info("%s: %s", step.name, line)
    return step.exit_code(report)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
