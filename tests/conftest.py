from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCHMARKS = REPO.parent / "shared" / "data" / "benchmarks"
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
