"""Decontamination speed: the exact fast search against the naive all-pairs Python loop.

    python benchmarks/decontam.py [--entries 20000] [--naive-entries 150] [--workers 2] [--metric levenshtein]

Benchmark snippets: every file listed in ../shared/data/benchmarks/MANIFEST.md (HumanEval, HumanEval+ and
its variants, MBPP, sanitized MBPP, MBPP+ and its variants, DS-1000, MultiPL-E x6). Synthetic entries look
like the dialogues' code: 1-3 fenced blocks each (2 on average), cut from the Python standard library's
sources (median ~20 lines), and 3% of the entries (30% in the naive subset) carry a benchmark snippet
mutated by 0-20% random edits (so that pairs land above, near and below the threshold), some of them inside
unrelated code.

1. The naive loop (python-Levenshtein, one call per pair, exact integer comparison) and the fast search
   run on the same ``--naive-entries`` entries: the removed sets must be equal.
2. The fast search runs on ``--entries`` entries through the whole step (read, search, write) and the
   time is projected linearly to the paper's 169K entries (the number of pairs is linear in entries).
"""

from __future__ import annotations

import argparse
import json
import random
import sysconfig
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import Levenshtein
from record import record
from shared_data import BENCHMARK_DATA

from aiev.codeblocks import normalize_code
from aiev.config import exact_decimal
from aiev.curate import benchdata
from aiev.curate.decontam import (
    entry_blocks,
    find_matches,
    max_distance,
    norm_length,
    run,
)

ROOT = BENCHMARK_DATA
FILES = {
    "humaneval": ["humaneval/HumanEval.jsonl.gz"],
    "humanevalplus": [f"evalplus/HumanEvalPlus{v}-v0.1.10.jsonl.gz" for v in ("", "-Mini", "-NoExtreme", "-OriginFmt")],
    "mbpp": ["mbpp/mbpp.jsonl.gz", "mbpp/sanitized-mbpp.json.gz"],
    "mbppplus": [f"evalplus/MbppPlus{v}-v0.2.0.jsonl.gz" for v in ("", "-NoExtreme", "-OriginFmt")],
    "ds1000": ["ds1000/ds1000.jsonl.gz"],
    **{f"multiple-{x}": [f"multipl-e/humaneval-{x}.jsonl.gz"] for x in benchdata.MULTIPLE_LANGS},
}
PAPER_ENTRIES = 169_000


def load_snippets() -> list[benchdata.Snippet]:
    if not ROOT.is_dir():
        raise SystemExit(f"benchmark files not found at {ROOT}")
    return benchdata.load_benchmarks((name, ROOT / f) for name, files in FILES.items() for f in files)


def stdlib_chunks(rng: random.Random, n: int) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    sources = []
    for f in rng.sample(files, min(400, len(files))):
        try:
            lines = f.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if len(lines) > 30:
            sources.append(lines)
    out = []
    while len(out) < n:
        lines = rng.choice(sources)
        size = int(min(200, max(3, rng.lognormvariate(3.0, 0.8))))
        start = rng.randrange(max(1, len(lines) - size))
        text = "\n".join(lines[start : start + size]).strip()
        if text:
            out.append(text)
    return out


def mutate(text: str, rate: float, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(int(len(chars) * rate)):
        i = rng.randrange(len(chars) + 1)
        op = rng.randrange(3)
        if op == 0 or not chars:
            chars.insert(i, rng.choice("abcdefxyz_ ()=\n"))
        elif op == 1:
            del chars[min(i, len(chars) - 1)]
        else:
            chars[min(i, len(chars) - 1)] = rng.choice("abcdefxyz_ ()=\n")
    return "".join(chars)


def make_entries(n: int, snippets: list[benchdata.Snippet], seed: int = 0, plant: float = 0.03) -> list[dict]:
    rng = random.Random(seed)
    counts = [rng.choice((1, 2, 2, 3)) for _ in range(n)]
    pool = iter(stdlib_chunks(rng, sum(counts)))
    entries = []
    for i, count in enumerate(counts):
        blocks = [next(pool) for _ in range(count)]
        if rng.random() < plant:
            planted = mutate(rng.choice(snippets).text, rng.uniform(0, 0.2), rng)
            blocks[0] = planted if rng.random() < 0.7 else f"{blocks[0]}\n\n{planted}"
        messages = [{"role": "user", "content": f"Task {i}: write some code."}]
        for b in blocks:
            messages.append({"role": "assistant", "content": f"Here it is:\n```python\n{b}\n```\nDone."})
            messages.append({"role": "execution", "content": "ok"})
        entries.append({"id": f"bench:{i}", "messages": messages})
    return entries


def naive_removed(
    entries: list[dict], texts: list[str], threshold: float, metric: str
) -> tuple[set, float, list[float]]:
    """One python-Levenshtein call per pair, exact comparison: q (n - d) > p n. Also each entry's best."""
    t = exact_decimal(threshold)
    p, q = t.numerator, t.denominator
    weights = (1, 1, 1) if metric == "levenshtein" else (1, 1, 2)  # substitution = 2 is the indel distance
    removed, best, start = set(), [], time.perf_counter()
    for e in entries:
        hit, top = False, 0.0
        for a in entry_blocks(e):
            for b in texts:
                n = norm_length(len(a), len(b), metric)
                d = Levenshtein.distance(a, b, weights=weights)
                hit |= (t < 1) if n == 0 else q * (n - d) > p * n
                top = max(top, 1.0 if n == 0 else (n - d) / n)
        best.append(top)
        if hit:
            removed.add(e["id"])
    return removed, time.perf_counter() - start, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--naive-entries", type=int, default=150)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--metric", choices=("levenshtein", "ratio"), default="levenshtein")
    args = ap.parse_args()
    assert max_distance(10, exact_decimal(0.9)) == 0  # similarity exactly 0.9 is not above 0.9

    snippets = load_snippets()
    texts = list(dict.fromkeys(normalize_code(s.text) for s in snippets))
    print(f"snippets: {len(snippets)} from {sum(map(len, FILES.values()))} files, {len(texts)} unique")
    entries = make_entries(args.entries, snippets)
    blocks_per_entry = sum(len(entry_blocks(e)) for e in entries) / len(entries)
    print(f"entries: {len(entries)}, {blocks_per_entry:.2f} code blocks each")

    sub = make_entries(args.naive_entries, snippets, seed=1, plant=0.3)  # 30% planted: many near the threshold
    naive, naive_s, best = naive_removed(sub, texts, args.threshold, args.metric)
    near = sum(abs(b - args.threshold) <= 0.03 for b in best)
    sub_blocks = [b for e in sub for b in entry_blocks(e)]
    naive_rate = len(sub_blocks) * len(texts) / naive_s
    start = time.perf_counter()
    found = find_matches(sub_blocks, texts, args.threshold, args.metric, workers=1)
    fast_s = time.perf_counter() - start
    owner = [e["id"] for e in sub for _ in entry_blocks(e)]
    fast = {owner[m.block] for m in found}
    print(
        f"subset: {len(sub)} entries, {len(sub_blocks) * len(texts):,} pairs: naive {naive_s:.1f} s "
        f"({naive_rate:,.0f} pairs/s), fast {fast_s:.2f} s (1 worker); removed naive {len(naive)}, "
        f"fast {len(fast)}, same set: {naive == fast}; {near} entries with a best similarity within 0.03 "
        "of the threshold"
    )
    if naive != fast:
        raise SystemExit("MISMATCH between the fast search and the naive loop")

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "in.jsonl")
        src.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
        start = time.perf_counter()
        section = {"threshold": args.threshold, "metric": args.metric, "workers": args.workers}
        paths = SimpleNamespace(input=src, output=Path(tmp, "kept.jsonl"), removed=Path(tmp, "removed.jsonl"))
        report = run(section, paths, snippets=snippets)
        wall = time.perf_counter() - start
    pairs = report["blocks"]["total"] * len(texts)
    scale = PAPER_ENTRIES / len(entries)
    search = report["search"]
    print(
        f"fast step: {len(entries)} entries, {pairs:,} pairs in {wall:.1f} s "
        f"({pairs / wall / 1e6:.1f} M pairs/s, {args.workers} workers); removed {report['rows']['removed']}"
    )
    print(
        f"  length candidates {search['length_candidates']:,} ({search['length_candidates'] / pairs:.2%}), "
        f"histogram candidates {search['histogram_candidates']:,}, matching pairs {search['matching_pairs']:,}"
    )
    naive_full = pairs * scale / naive_rate
    print(
        f"projected to {PAPER_ENTRIES:,} entries: fast {wall * scale / 60:.1f} min, naive "
        f"{naive_full / 3600:.1f} h; speed-up {naive_full / (wall * scale):,.0f}x"
    )
    figures = {
        "metric": args.metric,
        "threshold": args.threshold,
        "workers": args.workers,
        "entries": len(entries),
        "step_wall_s": round(wall, 1),
        "pairs": pairs,
        "removed": report["rows"]["removed"],
        "naive_subset_entries": len(sub),
        "naive_pairs_per_s": round(naive_rate),
        "same_removed_set_as_naive": naive == fast,
        f"projected_to_{PAPER_ENTRIES}_min": round(wall * scale / 60, 1),
        "speed_up_over_naive": round(naive_full / (wall * scale)),
    }
    record("decontam", figures, goal="the same removed set as the naive loop", met=naive == fast)


if __name__ == "__main__":
    main()
