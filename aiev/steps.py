"""The step contract: every ``aiev <step>`` is one :class:`Step`, and ``aiev/cli.py`` is only their registry.

A step declares its flags (``add_args``) and runs as ``run(config, args) -> report``: ``config`` is the whole
validated config with the command line's overrides already applied, ``args`` holds the paths. Overridable
flags are declared with :func:`override`, which names the dotted config key the flag sets (``--threshold`` ->
``decontam.threshold``); the CLI collects them and applies them in one place (:func:`aiev.config.with_overrides`),
so a flag and the config file can never disagree about a default. The report a step returns is the same
object the contract writes to the file the step names (``Step.report``: the flag's destination, ``report`` for
``--report``); ``summary`` turns it into the one log line a person reads. A step that fails after counting what it
did raises :class:`StepFailed` with its report: the contract writes the report (a failed job's file, which
Snakemake removes; the state it keeps is what a re-run resumes) and the cause goes on as the step's error.

Inside a part, the work has one shape too: ``run(settings, paths) -> report``, where ``settings`` is what the
step built once from the config (a typed object, or the one validated section the work reads) and ``paths`` the
step's files (the parsed arguments).

Each stage package holds a ``steps.py`` with its steps and imports nothing heavy at module level, so that
``aiev --help`` stays fast; the work is imported inside ``run``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_PREFIX = "override:"

Report = dict[str, Any]


@dataclass(frozen=True)
class Step:
    name: str
    help: str
    add_args: Callable[[argparse.ArgumentParser], None]
    run: Callable[[dict[str, Any], argparse.Namespace], Report]
    summary: Callable[[Report], str] = field(default=lambda report: "")
    #: Steps whose failures are reported by the step itself (exit status in the report): the CLI returns it.
    exit_code: Callable[[Report], int] = field(default=lambda report: 0)
    #: Without ``--config``, in a checkout (a Snakefile beside it), read ``config.yaml`` as snakemake does,
    #: instead of the schema's defaults (``aiev doctor``: check the run that ``snakemake`` would start).
    checkout_config: bool = False
    #: The argument that names the report file the contract writes (None: the step writes no report).
    report: str | None = None


class StepFailed(RuntimeError):
    """A step failed, but its report says how far it got: the contract writes ``report``, then ``cause`` is the
    step's error."""

    def __init__(self, report: Report, cause: Exception) -> None:
        super().__init__(str(cause))
        self.report = report
        self.cause = cause


def run_step(step: Step, config: dict[str, Any], args: argparse.Namespace) -> Report:
    """Run ``step`` and write its report where ``step.report`` says, also when it fails with :class:`StepFailed`."""
    from aiev.io import write_json

    target = getattr(args, step.report, None) if step.report else None
    try:
        report = step.run(config, args)
    except StepFailed as failed:
        if target:
            write_json(target, failed.report)
        raise failed.cause from None
    if target:
        write_json(target, report)
    return report


def override(parser: argparse.ArgumentParser, *flags: str, key: str, **kwargs: Any) -> None:
    """A flag that overrides the config key ``key`` (dotted: ``section.name``); unset means 'from config'."""
    kwargs["help"] = f"{kwargs['help']} (config: {key})" if kwargs.get("help") else f"default from config: {key}"
    if "choices" not in kwargs:
        kwargs.setdefault("metavar", key.rsplit(".", 1)[-1].upper())
    parser.add_argument(*flags, dest=_PREFIX + key, default=None, **kwargs)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line set (flags declared with :func:`override`)."""
    return {k.removeprefix(_PREFIX): v for k, v in vars(args).items() if k.startswith(_PREFIX) and v is not None}
