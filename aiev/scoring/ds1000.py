"""DS-1000 (1,000 data-science problems over seven libraries), each answer tested in the sandbox.

A problem's ``prompt`` ends where the answer goes (``BEGIN SOLUTION`` / ``<code>``); its ``code_context`` defines
``test_execution(solution)`` (and for some ``test_string(solution)``), which insert the answer into the problem's
context, run it and compare the result. DS-1000's own scorer (``test_ds1000.py``) builds one program per problem:
the context, ``code = <the answer>``, ``test_execution(code)``, and ``test_string(code)`` where defined; the
problem passes when that program exits 0 within 120 s. Here that program is one sandboxed run (network off,
read-only host, memory, process and time caps), with the answer cut the way DS-1000 cuts it (``</code>``,
``END SOLUTION``, a closing fence).

**The libraries.** The verdicts depend on the library versions (DS-1000 pins its environment; ``envs/ds1000.txt``
lists the versions we install). Under bubblewrap the sandbox sees the packages of ``benchmark.ds1000_env`` (a
directory made by ``pip install --target``, read-only inside), or this environment's own when it is unset; under
Apptainer, those of the suite's image (``benchmark.images.ds1000``, containers/ds1000.def). Before scoring, a
probe in the sandbox imports each library (and what its problems need besides: seaborn for Matplotlib) and records
its version; the problems of a library that does not import
are reported as skipped, with the reason, never scored as failures, and the overall figure says over how many
problems it was taken. The report carries the versions, so a number is never read without them.

**The network.** 15 problems load a data set (seaborn's ``load_dataset``, scikit-learn's
``fetch_california_housing``), which downloads it; the sandbox has no network, so they fail unless
``benchmark.ds1000_data_home`` holds those files (fetched once on a login node, docs/scoring.md). The report
lists the failures that tried the network (``network_failures``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import time
from pathlib import Path
from typing import Any

from aiev.scoring.samplefile import (
    BenchmarkError,
    flaky,
    prepare_rows,
    read_tasks,
    run_all,
    sandbox_for,
    verdict,
)
from aiev.suites import DS1000_SUITE

SUITE = DS1000_SUITE
#: DS-1000's library names and the module each imports.
LIBRARIES = {
    "Pandas": "pandas",
    "Numpy": "numpy",
    "Matplotlib": "matplotlib",
    "Sklearn": "sklearn",
    "Scipy": "scipy",
    "Pytorch": "torch",
    "Tensorflow": "tensorflow",
}
#: What a library's problems import besides the library itself: DS-1000's Matplotlib problems use seaborn. A
#: library counts as available only when these import too (else its problems would fail, not be skipped).
ALSO_NEEDS = {"Matplotlib": ["seaborn"]}


def modules(lib: str) -> list[str]:
    """The modules the problems of ``lib`` need, the library's own first."""
    return [LIBRARIES[lib], *ALSO_NEEDS.get(lib, [])]


#: DS-1000's published check of its scorer: Codex-002's answers score this overall (test_ds1000.py's README).
CODEX002_OVERALL = 0.388

PROBE = """
import importlib, json, sys
out = {}
for lib, modules in json.loads(sys.argv[1]).items():
    try:
        out[lib] = {"version": [importlib.import_module(m) for m in modules][0].__version__}
    except BaseException as exc:
        out[lib] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
print(json.dumps(out))
"""


def data_file(configured: str | None) -> Path:
    """The DS-1000 file (``ds1000.jsonl[.gz]``, the simplified format): the configured one, or the Hugging Face
    hub's ``xlangai/DS-1000`` (downloaded once, where the hub is reachable)."""
    if configured:
        path = Path(configured)
        if not path.is_file():
            raise BenchmarkError(f"benchmark.data.ds1000: {path} does not exist")
        return path
    try:
        from datasets import load_dataset

        rows = load_dataset("xlangai/DS-1000", split="test")
    except Exception as exc:  # offline: say what to do
        raise BenchmarkError(
            "no DS-1000 data: set benchmark.data.ds1000 to a local ds1000.jsonl[.gz], or run where the Hugging Face "
            f"hub is reachable (a login node) once: {exc}"
        ) from exc
    out = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aiev" / "ds1000.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows), encoding="utf-8")
    return out


def tasks_of(path: Path) -> list[dict[str, Any]]:
    """DS-1000's problems with ``task_id`` = ``ds1000/<problem_id>``."""
    tasks = read_tasks(path)
    for t in tasks:
        t["task_id"] = f"ds1000/{t['metadata']['problem_id']}"
    return tasks


def postprocess(answer: str) -> str:
    """DS-1000's cut of an answer: up to ``</code>``, a closing fence or ``END SOLUTION``, markers removed."""
    code = answer.split("</code>")[0]
    code = code.replace("```python", "")
    code = code.split("```")[0]
    code = code.split("\nEND SOLUTION")[0]
    return code.replace("<code>", "")


def program(task: dict[str, Any], answer: str) -> str:
    """The program DS-1000 runs for one answer."""
    context = task["code_context"]
    tail = "test_string(code)\n" if "test_string(" in context else ""
    return f"{context}\ncode = {postprocess(answer)!r}\ntest_execution(code)\n{tail}"


#: What a program that tried the network prints (the sandbox has none): seaborn's and scikit-learn's downloads.
NETWORK_ERRORS = ("URLError", "Temporary failure in name resolution", "Name or service not known")


def tried_network(verdict: str, why: str) -> bool:
    return verdict == "fail" and any(e in why for e in NETWORK_ERRORS)


def data_home_files(configured: str | None) -> dict[str, bytes]:
    """The files of ``benchmark.ds1000_data_home``, a directory laid out like a home directory (seaborn 0.13's
    cache ``.cache/seaborn/NAME.csv``, scikit-learn's ``scikit_learn_data/``; scripts/ds1000-data-home.py fills it
    where there is internet), shipped into the home of each program that loads a data set: there
    ``seaborn.load_dataset`` and ``sklearn.datasets.fetch_*`` find their files instead of downloading them."""
    if not configured:
        return {}
    root = Path(configured)
    if not root.is_dir():
        raise BenchmarkError(f"benchmark.ds1000_data_home: {root} is not a directory")
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*")) if f.is_file()}


def environment(configured: str | None) -> Path:
    """The packages the sandbox sees (read-only): ``benchmark.ds1000_env``, or this environment's own."""
    if configured:
        path = Path(configured)
        if not path.is_dir():
            raise BenchmarkError(
                f"benchmark.ds1000_env: {path} is not a directory (make it with "
                f"`pip install --target {path} -r envs/ds1000.txt`)"
            )
        return path.resolve()
    return Path(sysconfig.get_paths()["purelib"])


def probe(sandbox: Any, env: Path | None, limits: Any) -> dict[str, dict[str, str]]:
    """Each library's version as the sandboxed programs see it, or why it does not import."""
    needs = json.dumps({lib: modules(lib) for lib in LIBRARIES})
    res = sandbox.run({"probe.py": PROBE}, ["python3", "probe.py", needs], limits, prefix=env)
    if res.exit_code != 0 or res.timed_out:
        raise BenchmarkError(f"the DS-1000 library probe failed in the sandbox: exit {res.exit_code}\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def score(
    cfg: dict[str, Any], *, samples: str | Path, limit: int | None = None, data: str | None = None
) -> dict[str, Any]:
    """Score ``samples`` (``task_id`` ``ds1000/N`` with ``completion``, the answer) on DS-1000."""
    from aiev.sandbox import Limits

    section = cfg["benchmark"]
    start = time.monotonic()
    path = data_file(data or section["data"]["ds1000"])
    tasks = tasks_of(path)
    limit = limit if limit is not None else section["limit"]
    tasks = tasks[:limit] if limit is not None else tasks
    rows, info = prepare_rows(tasks, samples, fields=("completion", "solution"))
    sandbox = sandbox_for(cfg, "ds1000")
    in_image = cfg["sandbox"]["backend"] == "apptainer" and section["images"].get("ds1000")
    env = None if in_image else environment(section["ds1000_env"])  # the image has the libraries itself
    limits = Limits(section["ds1000_timeout_s"], section["ds1000_memory_mb"], section["max_procs"], 1 << 20)
    versions = probe(sandbox, env, Limits(120, section["ds1000_memory_mb"], section["max_procs"], 1 << 20))
    missing = {lib: v["error"] for lib, v in versions.items() if "error" in v}
    home = data_home_files(section["ds1000_data_home"])

    def run(task: dict[str, Any], row: dict[str, Any]) -> tuple[str, str]:
        lib = task["metadata"]["library"]
        if lib in missing:
            return "skipped", f"needs {', '.join(modules(lib))}, which do not all import: {missing[lib]}"
        answer = row.get("completion", row.get("solution", ""))
        needs_data = "load_dataset(" in task["code_context"] or "fetch_" in task["code_context"]
        files = {**(home if needs_data else {}), "main.py": program(task, answer)}
        return verdict(sandbox.run(files, ["python3", "main.py"], limits, prefix=env))

    def has_code(row: dict[str, Any]) -> bool:
        return bool(postprocess(row.get("completion", row.get("solution", ""))).strip())

    verdicts, again = run_all(run, tasks, rows, section["workers"], section["rescore_failures"], has_code)
    per_task = {t["task_id"]: v for t, (v, _) in zip(tasks, verdicts, strict=True)}
    by_lib: dict[str, dict[str, Any]] = {}
    for t, (v, _) in zip(tasks, verdicts, strict=True):
        lib = by_lib.setdefault(t["metadata"]["library"], {"n": 0, "passed": 0, "skipped": 0})
        lib["n"] += 1
        lib["passed"] += v == "pass"
        lib["skipped"] += v == "skipped"
    for name, lib in by_lib.items():
        scored = lib["n"] - lib["skipped"]
        lib["pass@1"] = round(lib["passed"] / scored, 6) if scored else None
        lib["version"] = versions.get(name, {}).get("version")
        if lib["skipped"]:
            lib["skipped_because"] = missing[name]
    scored = sum(v != "skipped" for v in per_task.values())
    report = {
        "suite": SUITE,
        "n": len(per_task),
        "scored": scored,
        "pass@1": round(sum(v == "pass" for v in per_task.values()) / scored, 6) if scored else None,
        "complete": scored == len(per_task),
        "per_library": dict(sorted(by_lib.items())),
        "per_task": per_task,
        "failures": {t["task_id"]: why for t, (v, why) in zip(tasks, verdicts, strict=True) if v == "fail"},
        "rescored": len(again),
        "flaky": flaky(per_task, again),
        "skipped_libraries": missing,
        "network_failures": [t for t, (v, why) in zip(per_task, verdicts, strict=True) if tried_network(v, why)],
        "versions": versions,
        **info,
        "samples": str(samples),
        "data": str(path),
        "data_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "environment": str(env) if env else f"image {section['images']['ds1000']}",
        "limit": limit,
        "seconds": round(time.monotonic() - start, 3),
    }
    return report
