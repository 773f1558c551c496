"""The step contract: every ``aiev <step>`` is one :class:`Step`, and ``aiev/cli.py`` is only their registry.

A step declares its flags (``add_args``) and runs as ``run(config, args) -> report``: ``config`` is the whole
validated config with the command line's overrides already applied, ``args`` holds the paths. Overridable
flags are declared with :func:`override`, which names the dotted config key the flag sets (``--threshold`` ->
``decontam.threshold``); the CLI collects them and applies them in one place (:func:`aiev.config.with_overrides`),
so a flag and the config file can never disagree about a default. The report a step returns is the same
object it wrote to its ``--report`` file; ``summary`` turns it into the one log line a person reads.

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


def override(parser: argparse.ArgumentParser, *flags: str, key: str, **kwargs: Any) -> None:
    """A flag that overrides the config key ``key`` (dotted: ``section.name``); unset means 'from config'."""
    kwargs["help"] = f"{kwargs['help']} (config: {key})" if kwargs.get("help") else f"default from config: {key}"
    if "choices" not in kwargs:
        kwargs.setdefault("metavar", key.rsplit(".", 1)[-1].upper())
    parser.add_argument(*flags, dest=_PREFIX + key, default=None, **kwargs)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line set (flags declared with :func:`override`)."""
    return {k.removeprefix(_PREFIX): v for k, v in vars(args).items() if k.startswith(_PREFIX) and v is not None}
