"""The ``aiev`` command: one sub-command per pipeline step; every Snakemake rule calls one of them.

Each step takes ``--config`` (a YAML/JSON file or an inline JSON object, validated against the same schema
as the Snakefile's config, defaults filled) plus explicit input/output paths. Flags given on the command
line override the config's values, so every step also runs comfortably by hand.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from aiev import __version__
from aiev.config import ConfigError, load_config

log = logging.getLogger("aiev")

Handler = Callable[[argparse.Namespace], int]


def _override(section: dict[str, Any], args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            section[key] = value
    return section


def _config(args: argparse.Namespace, section: str, keys: list[str]) -> dict[str, Any]:
    """The step's config section, with command-line overrides applied and re-validated."""
    cfg = load_config(args.config)
    _override(cfg[section], args, keys)
    return load_config(cfg)[section]


# ------------------------------------------------------------------------------------------- seeds


def _seeds_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", required=True, help="seeds JSONL to write")
    p.add_argument("--report", required=True, help="JSON report: counts per source, every skipped row")


def _seeds(args: argparse.Namespace) -> int:
    from aiev import seeds

    section = _config(args, "seeds", [])
    report = seeds.run(section, args.output, args.report)
    for name, info in report["sources"].items():
        log.info(
            "source %s: %d seeds, %d rows skipped %s",
            name,
            info["kept"],
            info["skipped"],
            info["skipped_by_reason"] or "",
        )
    log.info("wrote %d seeds to %s", report["total"], args.output)
    return 0


# ------------------------------------------------------------------------------------------- dedup

_DEDUP_KEYS = ["threshold", "shingle_size", "num_perm", "min_tokens", "workers", "seed"]


def _dedup_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--report", required=True, help="JSON report: counts, every dropped row and its twin")
    p.add_argument("--threshold", type=float, help="Jaccard threshold (default from config: 0.7)")
    p.add_argument("--shingle-size", dest="shingle_size", type=int)
    p.add_argument("--num-perm", dest="num_perm", type=int)
    p.add_argument("--min-tokens", dest="min_tokens", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--seed", type=int)


def _dedup(args: argparse.Namespace) -> int:
    from aiev import dedup

    section = _config(args, "dedup", _DEDUP_KEYS)
    report = dedup.run(args.input, args.output, args.report, dedup.DedupParams.from_section(section))
    log.info(
        "dedup: %d in, %d kept, %d exact and %d near duplicates dropped",
        report["input"],
        report["kept"],
        report["dropped_exact"],
        report["dropped_near"],
    )
    return 0


# ----------------------------------------------------------------------------------------- batches


def _batches_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", required=True)
    p.add_argument("--outdir", required=True, help="directory to hold batch_K.jsonl files")
    p.add_argument("--report", required=True)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--seed", type=int)


def _batches(args: argparse.Namespace) -> int:
    from aiev import batches

    section = _config(args, "batches", ["batch_size", "seed"])
    report = batches.run(args.input, args.outdir, args.report, section)
    log.info("wrote %d batches of up to %d seeds to %s", report["batches"], report["batch_size"], args.outdir)
    return 0


# ---------------------------------------------------------------------------------------- generate


def _generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", required=True, help="batch_K.jsonl of seeds")
    p.add_argument("--batch-index", dest="batch_index", type=int, default=None)
    p.add_argument("--shard", type=int, default=0)
    p.add_argument("--shards", type=int, default=None, help="default: generate.shards")
    p.add_argument("--stage", choices=["teaching", "self-learning"], default="teaching")
    p.add_argument(
        "--state-dir",
        dest="state_dir",
        required=True,
        help="progress store and LLM cache (kept across failed runs: outside Snakemake's outputs)",
    )
    p.add_argument("--dialogues", required=True)
    p.add_argument("--rejects", required=True)
    p.add_argument("--report", required=True)
    p.add_argument("--max-rounds", dest="max_rounds", type=int)


def _generate(args: argparse.Namespace) -> int:
    from aiev import generate

    cfg = load_config(args.config)
    _override(cfg["generate"], args, ["max_rounds"])
    if os.environ.get("AIEV_LLM_BASE_URL"):  # set by `aiev serve ... -- aiev generate ...`
        endpoint = cfg["llm"]["teacher" if args.stage == "teaching" else "student"]
        endpoint["base_url"] = os.environ["AIEV_LLM_BASE_URL"]
        endpoint["model"] = os.environ.get("AIEV_LLM_MODEL", endpoint["model"])
        endpoint["api_key_env"] = None
    cfg = load_config(cfg)
    shards = args.shards or cfg["generate"]["shards"]
    info = generate.run(
        args.batch,
        cfg,
        shard=args.shard,
        shards=shards,
        state_dir=args.state_dir,
        dialogues=args.dialogues,
        rejects=args.rejects,
        report=args.report,
        stage=args.stage,
        batch=args.batch_index,
    )
    log.info(
        "shard %d/%d: %d passed, %d rejected, %d bad seeds",
        args.shard,
        shards,
        info["passed"],
        info["rejected"],
        len(info["bad_seeds"]),
    )
    return 0


def _merge_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard",
        nargs=3,
        action="append",
        required=True,
        metavar=("DIALOGUES", "REJECTS", "REPORT"),
        help="one shard's outputs; repeat in shard order",
    )
    p.add_argument("--dialogues", required=True)
    p.add_argument("--rejects", required=True)
    p.add_argument("--usage", required=True)
    p.add_argument("--report", required=True)


def _merge(args: argparse.Namespace) -> int:
    from aiev import generate

    cfg = load_config(args.config)
    info = generate.merge(
        [tuple(s) for s in args.shard],
        args.dialogues,
        args.rejects,
        args.usage,
        args.report,
        cfg["llm"]["prices"],
    )
    log.info("merged: %d passed, %d rejected", info["passed"], info["rejected"])
    return 0


# ------------------------------------------------------------------------------------------- serve


def _serve_args(p: argparse.ArgumentParser) -> None:
    from aiev.serve import ENGINES

    p.add_argument("--engine", choices=ENGINES, required=True)
    p.add_argument("--model", required=True, help="hub id, local directory, or GGUF file (llama-cpp)")
    p.add_argument("--name", help="the model name clients ask for (default: --model)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="default: a free port")
    p.add_argument("--command", dest="server_command", help="engine=command: server template with {host} {port} ...")
    p.add_argument("--arg", dest="extra", action="append", default=[], help="extra engine argument (repeatable)")
    p.add_argument("--startup-timeout", dest="startup_timeout", type=float, default=900.0)
    p.add_argument("--log", dest="server_log", help="file for the server's output")
    p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND: run it against the server, then stop")


def _serve(args: argparse.Namespace) -> int:
    from aiev.serve import ServeSpec, run_with_server

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    spec = ServeSpec(
        engine=args.engine, model=args.model, name=args.name, host=args.host, port=args.port,
        extra_args=tuple(args.extra), command=args.server_command, startup_timeout_s=args.startup_timeout,
    )  # fmt: skip
    return run_with_server(spec, cmd, args.server_log)


# ------------------------------------------------------------------------------------------ config


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", action="store_true", help="print the Markdown reference of every key instead")


def _config_cmd(args: argparse.Namespace) -> int:
    if args.reference:
        from aiev.config import reference_markdown

        sys.stdout.write(reference_markdown())
        return 0
    cfg = load_config(args.config)
    json.dump(cfg, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def _module_step(module: str) -> tuple[Callable[[argparse.ArgumentParser], None], Handler]:
    """A step whose arguments and handler live in its module (``add_args`` and ``main``)."""
    import importlib

    def add_args(p: argparse.ArgumentParser) -> None:
        importlib.import_module(module).add_args(p)

    def handler(args: argparse.Namespace) -> int:
        return importlib.import_module(module).main(args)

    return add_args, handler


# --------------------------------------------------------------------------------------------- main

# name -> (help, add arguments, run). Later steps add their row here.
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]] = {
    "seeds": ("read the configured seed sources into one normalised seeds.jsonl", _seeds_args, _seeds),
    "dedup": (
        "drop exact and near-duplicate seeds (MinHash LSH, verified by exact Jaccard)",
        _dedup_args,
        _dedup,
    ),
    "batches": (
        "cut the deduplicated seeds into batches (the workflow's checkpoint)",
        _batches_args,
        _batches,
    ),
    "sandbox": (
        "run a program in the code-interpreter sandbox (aiev sandbox run FILE.py)",
        *_module_step("aiev.sandbox.cli"),
    ),
    "generate": ("run the AIEV dialogues of one shard of a batch (resumable)", _generate_args, _generate),
    "merge-dialogues": ("merge a batch's shards into dialogues, rejects and usage", _merge_args, _merge),
    "decontaminate": (
        "remove entries whose code is too similar to benchmark code (exact Levenshtein)",
        *_module_step("aiev.decontam"),
    ),
    "split": ("split a batch 9:1 into train and test (test: entries with runnable tests)", *_module_step("aiev.split")),
    "format": ("format passing dialogues as code-interpreter SFT records", *_module_step("aiev.format")),
    "serve": ("serve a model (vLLM, llama.cpp, transformers) for the duration of a command", _serve_args, _serve),
    "config": ("validate a config and print it with every default filled in", _config_args, _config_cmd),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiev",
        description="AIEV-INSTRUCT pipeline steps. Each Snakemake rule runs one of these sub-commands.",
    )
    parser.add_argument("--version", action="version", version=f"aiev {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STEP", required=True)
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config",
            help="config: a YAML/JSON file or an inline JSON object (default: all schema defaults)",
        )
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
        add_args(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _, _, handler = COMMANDS[args.command]
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"aiev {args.command}: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError) as exc:  # SeedError, LLMError, EndpointUnreachable, ServeError
        if args.verbose:
            raise
        print(f"aiev {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
