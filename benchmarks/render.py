"""docs/measurements.md from the records in benchmarks/results/ (``make measurements``).

    python benchmarks/render.py            # write docs/measurements.md
    python benchmarks/render.py --check    # exit 1 if docs/measurements.md is not the rendering

One table per record (benchmarks/record.py writes them: each benchmark script ends with one), in the order of the
file names; tests/test_measurements.py checks that the page equals its rendering.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGE = REPO / "docs" / "measurements.md"

HEAD = """# Measurements

Every figure here is a record in `benchmarks/results/`, written by the script named in its table (each of
`benchmarks/`'s scripts ends with `benchmarks/record.py`): the figures, the goal, the date, the machine and the
commit. Run the command again to measure anew, then `make measurements` to render this page (the tests check it
equals its rendering). A record whose source says *transcribed* holds figures copied from the documentation of a
run, not written by the script itself.
"""


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    return str(value).replace("|", "\\|").replace("\n", " ")


def flat(figures: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in figures.items():
        label = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out += flat(value, f"{label}.")
        else:
            out.append((label, value))
    return out


def machine_text(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    parts = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None,
             f"{m['memory_gib']:g} GiB" if m.get("memory_gib") else None, m.get("kernel"),
             f"llama.cpp variant {m['llama_cpp_variant']}" if m.get("llama_cpp_variant") else None,
             m.get("gpu")]  # fmt: skip
    return cell("; ".join(str(p) for p in parts if p))


def section(doc: dict[str, Any], file: str) -> str:
    met = doc.get("met")
    lines = [
        f"## {doc['name']}",
        "",
        f"`{doc['command']}` → `benchmarks/results/{file}`",
        "",
        "| | |",
        "|---|---|",
        f"| goal | {cell(doc.get('goal'))} |",
        f"| met | {'-' if met is None else ('yes' if met else '**no**')} |",
        f"| date | {cell(doc.get('date'))} |",
        f"| machine | {machine_text(doc.get('machine'))} |",
        f"| commit | {cell(doc.get('commit'))} |",
        f"| source | {cell(doc.get('source'))} |",
    ]
    if doc.get("notes"):
        lines.append(f"| notes | {cell(doc['notes'])} |")
    lines += ["", "| figure | value |", "|---|---|"]
    lines += [f"| {cell(k)} | {cell(v)} |" for k, v in flat(doc.get("figures") or {})]
    return "\n".join(lines) + "\n"


def render(results: Path = RESULTS) -> str:
    docs = [(p.name, json.loads(p.read_text(encoding="utf-8"))) for p in sorted(results.glob("*.json"))]
    index = ["| record | script | goal | met | date |", "|---|---|---|---|---|"]
    for _, doc in docs:
        met = doc.get("met")
        anchor = doc["name"].lower().replace(" ", "-")
        index.append(f"| [{doc['name']}](#{anchor}) | `{doc['script']}` | {cell(doc.get('goal'))} | "
                     f"{'-' if met is None else ('yes' if met else '**no**')} | {cell(doc.get('date'))} |")  # fmt: skip
    body = "\n".join(section(doc, file) for file, doc in docs)
    return f"{HEAD}\n" + "\n".join(index) + "\n\n" + body


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    text = render()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is not the rendering of benchmarks/results/: run `make measurements`", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
