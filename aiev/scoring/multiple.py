"""MultiPL-E (HumanEval translated to other languages): candidates compiled and run in the sandbox.

A task of ``humaneval-LANG.jsonl`` has a ``prompt`` (imports, the doc comment, the function's first line) and
``tests``; MultiPL-E's program is ``prompt + completion + tests`` (the completion ends the function body, cut at
the task's ``stop_tokens``), and it passes when it compiles and exits 0 (the tests are asserts). Each program is
built and run as one sandboxed job (network off, read-only host, memory and time caps) with the toolchain Debian
installs under /usr (the sandbox sees /usr only):

| language | Debian packages | build and run |
|---|---|---|
| js | nodejs | ``node main.js`` |
| cpp | g++ (C++17) | ``g++ -std=c++17 main.cpp && ./main`` (no ``-O``, as upstream) |
| java | openjdk-17-jdk-headless, libjavatuples-java | ``javac -encoding UTF8``, ``java -ea``, with javatuples |
| php | php-cli | ``php main.php`` |
| rs | rustc | ``rustc main.rs && ./main`` (a debug build, as upstream: overflow panics) |
| swift | none (Debian's ``swift`` is OpenStack Swift) | skipped under bubblewrap; in the image: swift.org's |

Under Apptainer the toolchains come from the suite's image (``benchmark.images.multipl-e``, built from
containers/multipl-e.def, Swift included), and whether it has them is asked inside it. A language whose toolchain
is missing is reported as skipped, with the reason, never scored as zero.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from aiev.scoring.samplefile import BenchmarkError, flaky, prepare_rows, read_tasks, run_all, sandbox_for, verdict
from aiev.suites import JAVATUPLES as JAVATUPLES  # benchmarks/multiple_upstream.py links it
from aiev.suites import MULTIPLE, MULTIPLE_PREFIX

#: How each language's program is built and run: the one language table's entries (aiev.suites.MULTIPLE).
LANGS = MULTIPLE
SUITES = tuple(f"{MULTIPLE_PREFIX}{code}" for code in MULTIPLE)


def _under_usr(tool: str) -> bool:
    """Whether a ``tool`` on this PATH resolves into /usr, the only tools the bubblewrap sandbox sees."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        found = shutil.which(tool, path=folder) if folder else None
        if found and os.path.realpath(found).startswith("/usr/"):
            return True
    return False


def toolchain_problem(lang: str) -> str | None:
    """Why ``lang`` cannot run under bubblewrap here (the sandbox sees the host's /usr only), or None."""
    spec = LANGS[lang]
    for tool in spec.tools:
        found = shutil.which(tool)
        if found is None:
            return f"{tool} is not installed ({spec.hint})"
        if not _under_usr(tool):  # the sandbox's PATH finds the one in /usr, whatever comes first here
            real = os.path.realpath(found)
            return f"{tool} is at {real}, outside /usr: the sandbox cannot see it (install the distribution's package)"
    for f in spec.needs_files:
        if not Path(f).exists():
            return f"{f} is missing (Debian: libjavatuples-java)"
    return None


def image_toolchain_problem(sandbox: Any, lang: str) -> str | None:
    """Why ``lang`` cannot run in the Apptainer image (asked inside it), or None."""
    from aiev.sandbox import Limits

    spec = LANGS[lang]
    checks = [f"command -v {t} >/dev/null || {{ echo {t}; exit 1; }}" for t in spec.tools]
    checks += [f"test -e {f} || {{ echo {f}; exit 1; }}" for f in spec.needs_files]
    res = sandbox.run({}, ["sh", "-c", "; ".join(checks)], Limits(60, 512, 64, 4096))
    if res.exit_code == 0:
        return None
    return f"{res.stdout.strip() or 'the toolchain'} is not in the sandbox image ({spec.hint})"


def data_file(lang: str, directory: str | None) -> Path:
    """``humaneval-LANG.jsonl[.gz]`` in the configured directory, or MultiPL-E from the Hugging Face hub."""
    if directory:
        for name in (f"humaneval-{lang}.jsonl", f"humaneval-{lang}.jsonl.gz"):
            if (Path(directory) / name).is_file():
                return Path(directory) / name
        raise BenchmarkError(f"benchmark.data.multipl_e: no humaneval-{lang}.jsonl[.gz] in {directory}")
    try:
        from datasets import load_dataset

        rows = load_dataset("nuprl/MultiPL-E", f"humaneval-{lang}", split="test")
    except Exception as exc:  # offline, no such config: say what to do
        raise BenchmarkError(
            f"no MultiPL-E data for {lang}: set benchmark.data.multipl_e to a directory of humaneval-LANG.jsonl "
            f"files, or run where the Hugging Face hub is reachable: {exc}"
        ) from exc
    out = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "aiev" / f"humaneval-{lang}.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows), encoding="utf-8")
    return out


def truncate(completion: str, stops: list[str]) -> str:
    """MultiPL-E's rule: the completion ends at the first stop token."""
    cut = min((i for i in (completion.find(s) for s in stops) if i >= 0), default=len(completion))
    return completion[:cut]


def program(task: dict[str, Any], completion: str) -> str:
    """What runs, as MultiPL-E builds it: the prompt, the completion cut at a stop token, a newline, the tests."""
    return task["prompt"] + truncate(completion, task.get("stop_tokens") or []) + "\n" + task["tests"]


def score(
    cfg: dict[str, Any], *, lang: str, samples: str | Path, limit: int | None = None,
    data: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Score ``samples`` (``task_id`` or ``name`` with ``completion``) of one MultiPL-E language."""
    from aiev.sandbox import Limits

    if lang not in LANGS:
        raise BenchmarkError(f"MultiPL-E language must be one of {', '.join(LANGS)}, not {lang!r}")
    section = cfg["benchmark"]
    start = time.monotonic()
    sandbox = sandbox_for(cfg, "multipl-e")
    apptainer = cfg["sandbox"]["backend"] == "apptainer"
    problem = image_toolchain_problem(sandbox, lang) if apptainer else toolchain_problem(lang)
    if problem is not None:
        return {"suite": f"multipl-e-{lang}", "language": lang, "skipped": problem, "n": 0, "pass@1": None}
    path = data_file(lang, data or section["data"]["multipl_e"])
    tasks = read_tasks(path)
    limit = limit if limit is not None else section["limit"]
    tasks = tasks[:limit] if limit is not None else tasks
    rows, info = prepare_rows(tasks, samples, fields=("completion",))
    spec = LANGS[lang]
    limits = Limits(section["multipl_e_timeout_s"], 2048, 256, 1 << 20)

    def run(task: dict[str, Any], row: dict[str, Any]) -> tuple[str, str]:
        files = {spec.file: program(task, row.get("completion", ""))}
        return verdict(sandbox.run(files, ["sh", "-c", spec.command], limits))

    verdicts, again = run_all(run, tasks, rows, section["workers"], section["rescore_failures"],
                              lambda row: bool(row["completion"].strip()))  # fmt: skip
    per_task = {t["task_id"]: v for t, (v, _) in zip(tasks, verdicts, strict=True)}
    n = len(per_task)
    report = {
        "suite": f"multipl-e-{lang}",
        "language": lang,
        "n": n,
        "pass@1": round(sum(v == "pass" for v in per_task.values()) / n, 6) if n else None,
        "per_task": per_task,
        "failures": {t["task_id"]: why for t, (v, why) in zip(tasks, verdicts, strict=True) if v != "pass"},
        "rescored": len(again),
        "flaky": flaky(per_task, again),
        **info,
        "samples": str(samples),
        "data": str(path),
        "limit": limit,
        "seconds": round(time.monotonic() - start, 3),
    }
    return report
