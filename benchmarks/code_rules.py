"""How the code rules read programmer replies: the share of rounds that fail ``no_tests`` before and after.

    python benchmarks/code_rules.py [--replies FILE_OR_RESULTS_DIR ...] [--before REV]

``--replies``: JSONL files of entries (``messages``: every programmer message is read, e.g. a run's
``results/batch_K/dialogues.jsonl`` and ``rejects.jsonl``) or of ``{"origin", "reply"}`` rows (default: the
recorded replies of tests/data/replies/programmer_replies.jsonl). ``--before``: the git revision whose
``aiev/codeblocks.py`` gives the old reading (default: the revision before the current code rules). Prints, per origin,
how many replies each rule reads as a program, ``no_tests``, ``no_solution`` and ``no_code``.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from record import record  # noqa: E402

from aiev.codeblocks import extract_program  # noqa: E402

DEFAULT = REPO / "tests" / "data" / "replies" / "programmer_replies.jsonl"
BEFORE = "e7fe6f8"


def replies_of(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if "reply" in row:
            out.append((row.get("origin", path.name), row["reply"]))
        for msg in row.get("messages") or []:
            if msg.get("agent") == "programmer":
                out.append((f"{path.parent.name}/{path.name}", msg["content"]))
    return out


def old_rules(rev: str):
    code = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:aiev/codeblocks.py"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "codeblocks_before.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("codeblocks_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["codeblocks_before"] = module
    spec.loader.exec_module(module)
    return module.extract_program


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--replies", nargs="+", type=Path, default=[DEFAULT])
    ap.add_argument("--before", default=BEFORE)
    args = ap.parse_args()
    before = old_rules(args.before)
    rows = [r for path in args.replies for r in replies_of(path)]
    kinds = ("program", "no_tests", "no_solution", "no_code")
    print(f"{'origin':58} {'rule':7} {'n':>4} " + " ".join(f"{k:>11}" for k in kinds))
    figures: dict[str, dict[str, int]] = {}
    for origin in sorted({o for o, _ in rows}):
        replies = [r for o, r in rows if o == origin]
        for name, rule in ((f"{args.before[:7]}", before), ("now", extract_program)):
            got = collections.Counter(getattr(rule(r), "reason", "program") for r in replies)
            cells = " ".join(f"{got[k]:>4} {100 * got[k] / len(replies):5.1f}%" for k in kinds)
            print(f"{origin[:58]:58} {name:7} {len(replies):>4} {cells}")
            figures[f"{origin} ({name})"] = {"replies": len(replies)} | {k: got[k] for k in kinds}
    record("code_rules", figures)


if __name__ == "__main__":
    main()
