"""The scoring part's tests; :func:`score` and :func:`sample` run its step as the CLI does (the contract writes
the report)."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

from aiev.scoring.steps import STEPS
from aiev.steps import run_step


def score(cfg: dict[str, Any], *, suite: str, samples: Any, output: Any, data: str | None = None) -> dict[str, Any]:
    """``aiev benchmark score``."""
    args = Namespace(action="score", suite=suite, samples=samples, output=output, data=data)
    return run_step(STEPS[0], cfg, args)


def sample(cfg: dict[str, Any], *, suite: str, role: str, samples: Any, state_dir: Any, data: str | None = None,
           mode: str | None = None) -> dict[str, Any]:  # fmt: skip
    """``aiev benchmark generate`` (no report file)."""
    args = Namespace(action="generate", suite=suite, role=role, samples=samples, state_dir=state_dir, data=data,
                     mode=mode, output=None)  # fmt: skip
    return run_step(STEPS[0], cfg, args)
