"""MultiPL-E's own evaluators on our test completions: the verdicts our scorer must reproduce.

    python benchmarks/multiple_upstream.py --upstream DIR [--write]

DIR is a checkout of nuprl/MultiPL-E (or a folder holding the same paths): its per-language evaluators are run
here, unchanged, outside any container, with the local toolchains. Each case of
tests/data/benchmarks/multipl-e/upstream_verdicts.json (a completion of the committed 3-task excerpt: right, wrong,
or not building) is built into one program exactly as our scorer builds it (``aiev.scoring.multiple.program``),
handed to the upstream evaluator of its language, and its status printed beside our scorer's verdict. ``--write``
records the upstream statuses in that file (tests/scoring/test_multiple.py then checks that our scorer
agrees: ``OK`` is a pass, any other status a failure).

The evaluators used, by path in DIR:

- java, php: ``evaluation/src/eval_{java,php}.py`` with ``evaluation/src/safe_subprocess`` (``eval_script(path)``);
- cpp, rs: ``src/eval_{cpp,rust}.py``, the earlier scripts (their ``main()`` builds and runs every file of a
  ``datasets/`` folder next to them: ``g++ FILE`` / ``rustc FILE``, then the binary; exit 0 is ``OK``), run on a
  copy in a temporary tree;
- js: not recorded: the only stored evaluator (``src/eval_javascript.py``) passes ``"node FILE"`` as one program
  name without a shell, so it cannot start node on any machine.

Needs the toolchains of each language (``scripts/system-deps.sh test``), the sandbox for our side, and javatuples
where the upstream image has it (``/usr/multiple/javatuples-1.2.jar``: the script says how to link Debian's).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from record import record  # noqa: E402

from aiev.config import load_config  # noqa: E402
from aiev.scoring import multiple, scorers  # noqa: E402
from aiev.scoring.samplefile import read_tasks  # noqa: E402

CASES = ROOT / "tests" / "data" / "benchmarks" / "multipl-e" / "upstream_verdicts.json"
EXCERPT = CASES.parent
EVALUATORS = {
    "java": "evaluation/src/eval_java.py",
    "php": "evaluation/src/eval_php.py",
    "cpp": "src/eval_cpp.py",
    "rs": "src/eval_rust.py",
}
EVALUATORS_HELPER = "evaluation/src/safe_subprocess/__init__.py"
UPSTREAM_JAVATUPLES = "/usr/multiple/javatuples-1.2.jar"
JS_NOT_RECORDED = "the stored src/eval_javascript.py runs 'node FILE' as one program name without a shell"
#: the earlier scripts' datasets/ folder, and the language name they print
SCRIPT_RUNS = {"cpp": ("cpp-keep-code_davinci_001_temp_0.2", "C++", ".cpp"), "rs": ("rs", "Rust", ".rs")}
VERSION_COMMANDS = {"java": ["javac", "-version"], "php": ["php", "--version"], "cpp": ["g++", "--version"],
                    "rs": ["rustc", "--version"]}  # fmt: skip


def eval_script_statuses(upstream: Path, lang: str, programs: dict[str, str]) -> dict[str, str]:
    """java, php: the current evaluator's ``eval_script`` on each program, in a file of its own."""
    src = upstream / "evaluation" / "src"
    sys.path.insert(0, str(src))
    sys.modules.setdefault("generic_eval", types.SimpleNamespace(main=None))  # used by its __main__ only
    module = importlib.import_module(Path(EVALUATORS[lang]).stem)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, text in programs.items():
            path = Path(tmp) / f"{key}.{lang}"
            path.write_text(text, encoding="utf-8")
            out[key] = module.eval_script(path)["status"]
    return out


def script_statuses(upstream: Path, lang: str, programs: dict[str, str]) -> dict[str, str]:
    """cpp, rs: the earlier script's ``main()`` over a datasets/ folder holding only these programs."""
    folder, name, ext = SCRIPT_RUNS[lang]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "src").mkdir()
        script = Path(tmp) / "src" / Path(EVALUATORS[lang]).name
        shutil.copy(upstream / EVALUATORS[lang], script)
        data = Path(tmp) / "datasets" / folder
        data.mkdir(parents=True)
        for key, text in programs.items():
            (data / f"{key}{ext}").write_text(text, encoding="utf-8")
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    found = dict(re.findall(rf"^{re.escape(name)},(\w+),(\w+)$", run.stdout, re.M))
    missing = set(programs) - set(found)
    if missing:
        sys.exit(f"{lang}: the upstream script printed no status for {sorted(missing)}:\n{run.stdout}{run.stderr}")
    return found


def ours(lang: str, cases: list[dict], workdir: Path) -> list[str]:
    """Our scorer's verdict of each case, one suite run per set of cases that name each task once."""
    cfg = load_config({"benchmark": {"data": {"multipl_e": str(EXCERPT)}, "workers": 2}})
    verdicts: list[str | None] = [None] * len(cases)
    pending = list(range(len(cases)))
    while pending:
        batch, seen = [], set()
        for i in pending:
            if cases[i]["task"] not in seen:
                batch.append(i)
                seen.add(cases[i]["task"])
        samples = workdir / f"{lang}-{len(pending)}.jsonl"
        samples.write_text("".join(json.dumps({"name": cases[i]["task"], "completion": cases[i]["completion"]})
                                   + "\n" for i in batch))  # fmt: skip
        report = scorers.run(cfg, SimpleNamespace(suite=f"multipl-e-{lang}", samples=samples, data=None))
        for i in batch:
            verdicts[i] = report["per_task"][cases[i]["task"]]
        pending = [i for i in pending if i not in batch]
    return [v or "?" for v in verdicts]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--upstream", required=True, type=Path, help="a checkout of nuprl/MultiPL-E")
    ap.add_argument("--write", action="store_true", help=f"record the upstream statuses in {CASES}")
    ap.add_argument("--commit", action="append", default=[], metavar="PATH=SHA",
                    help="the upstream commit of an evaluator file, where DIR is not a git checkout")  # fmt: skip
    args = ap.parse_args()
    if not Path(UPSTREAM_JAVATUPLES).exists():
        sys.exit(f"java: the upstream evaluator compiles against {UPSTREAM_JAVATUPLES} (where its image puts the "
                 f"jar); link Debian's there first: mkdir -p {Path(UPSTREAM_JAVATUPLES).parent} && ln -s "
                 f"{multiple.JAVATUPLES} {UPSTREAM_JAVATUPLES}")  # fmt: skip
    doc = json.loads(CASES.read_text())
    tasks = {lang: {t["name"]: t for t in read_tasks(multiple.data_file(lang, str(EXCERPT)))} for lang in EVALUATORS}
    work = Path(tempfile.mkdtemp(prefix="aiev-multiple-upstream-"))
    print("| lang | task | kind | upstream status | ours | agree |")
    print("|---|---|---|---|---|---|")
    disagree = 0
    for lang in EVALUATORS:
        picked = [(i, c) for i, c in enumerate(doc["cases"]) if c["lang"] == lang]
        programs = {f"case_{i}": multiple.program(tasks[lang][c["task"]], c["completion"]) for i, c in picked}
        runner = script_statuses if lang in SCRIPT_RUNS else eval_script_statuses
        statuses = runner(args.upstream, lang, programs)
        mine = ours(lang, [c for _, c in picked], work)
        for (i, c), verdict in zip(picked, mine, strict=True):
            status = statuses[f"case_{i}"]
            agree = (status == "OK") == (verdict == "pass")
            disagree += not agree
            print(f"| {lang} | {c['task']} | {c['kind']} | {status} | {verdict} | {'yes' if agree else 'NO'} |")
            if args.write:
                c["upstream"] = status
    if args.write:
        given = dict(c.split("=", 1) for c in args.commit)
        commits = {}
        for lang, rel in EVALUATORS.items():
            log = subprocess.run(["git", "-C", str(args.upstream), "log", "-1", "--format=%H", "--", rel],
                                 capture_output=True, text=True)  # fmt: skip
            commits[lang] = f"{rel}@{given.get(rel) or log.stdout.strip() or 'unknown'}"
        if EVALUATORS_HELPER in given:
            commits["safe_subprocess"] = f"{EVALUATORS_HELPER}@{given[EVALUATORS_HELPER]}"
        versions = {}
        for lang, cmd in VERSION_COMMANDS.items():
            run = subprocess.run(cmd, capture_output=True, text=True)
            versions[lang] = (run.stdout or run.stderr).strip().splitlines()[0]
        doc["upstream"] = {
            "repository": "nuprl/MultiPL-E",
            "evaluators": commits,
            "not_recorded": {"js": JS_NOT_RECORDED},
            "recorded": datetime.date.today().isoformat(),
            "machine": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "toolchains": versions,
        }
        CASES.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    cases = sum(c["lang"] in EVALUATORS for c in doc["cases"])
    print(f"{disagree} disagreement(s) of {cases} cases; goal: 0")
    record("multiple_upstream", {"cases": cases, "disagreements": disagree, "languages": ", ".join(EVALUATORS)},
           goal="our scorer agrees with MultiPL-E's evaluators on every case", met=disagree == 0)  # fmt: skip
    sys.exit(1 if disagree else 0)


if __name__ == "__main__":
    main()
