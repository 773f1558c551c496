from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from benchmarks.shared_data import BENCHMARK_DATA

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = BENCHMARK_DATA
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tool_env() -> dict[str, str]:
    """Environment for subprocesses: this interpreter's bin dir first (aiev, snakemake)."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def which(name: str) -> str:
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with a locally trained tokenizer (tests/train/test_train.py), saved once per session."""
    pytest.importorskip("torch")
    pytest.importorskip("deepspeed")
    from tests.train.test_train import make_tiny_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-model")
    make_tiny_model(folder, tiny_tokenizer(folder))
    return folder


# ------------------------------------------------------------------------------------ skips under CI
#: The only reasons a test may skip when CI=true (regular expressions, one a line; `#` starts a comment). Any
#: other skip fails the run, listed with its reason: a green CI means what README promises was run.
SKIP_ALLOWLIST = REPO / "tests" / "skip-allowlist.txt"
_skips: list[tuple[str, str]] = []


def skip_allowlist() -> list[re.Pattern[str]]:
    lines = SKIP_ALLOWLIST.read_text(encoding="utf-8").splitlines()
    return [re.compile(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def unexpected_skips(skips: list[tuple[str, str]]) -> list[tuple[str, str]]:
    allowed = skip_allowlist()
    return [(node, reason) for node, reason in skips if not any(p.search(reason) for p in allowed)]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        _skips.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if os.environ.get("CI") != "true":
        return
    bad = unexpected_skips(_skips)
    if bad:
        terminalreporter.section("skips not on tests/skip-allowlist.txt (CI=true: they fail the run)", red=True)
        for node, reason in bad:
            terminalreporter.line(f"{node}: {reason}", red=True)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") == "true" and unexpected_skips(_skips) and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def tool_or_skip(name: str, problem: str) -> None:
    """Skip for a missing tool; where the tool is installed, its failure (``problem``) fails the test."""
    if shutil.which(name) is None:
        pytest.skip(f"{name} is not installed")
    pytest.fail(f"{name} is installed but fails: {problem}")


def bwrap_sandbox():
    """The bubblewrap sandbox, or the skip (tool missing) or failure (tool broken) of :func:`tool_or_skip`."""
    from aiev.sandbox import SandboxError, get_sandbox

    try:
        return get_sandbox("bwrap")
    except SandboxError as exc:
        tool_or_skip("bwrap", str(exc))
