"""Dedup at paper scale: 186,000 synthetic code seeds (10% exact copies, 10% renamed-variable copies).

    python benchmarks/dedup.py [--n 186000] [--workers 2]

Prints wall time, peak RSS (this process and its workers), how many planted duplicates were caught, and
whether any seed was dropped that is no copy (each original with its copies must keep exactly one seed).
Goal: <= 60 s wall and <= 4 GiB RSS on a 2-core machine, no original lost, no planted copy missed. The figures
go to benchmarks/results/dedup.json (benchmarks/record.py).
"""

from __future__ import annotations

import argparse
import random
import resource
import time
from collections import Counter

from record import record

from aiev.seeds.dedup import DedupParams, deduplicate

OPS = ["+", "-", "*", "//", "%", "**", "&", "|", "^"]
CALLS = ["len", "sorted", "sum", "max", "min", "abs", "str", "list", "set", "tuple"]
WORDS = "alpha beta gamma delta count total value item row col index key data node left right".split()


def synth_function(rng: random.Random, i: int) -> str:
    names = rng.sample(WORDS, 4)
    lines = [f"def {names[0]}_{i}({names[1]}, {names[2]}):"]
    for j in range(rng.randint(3, 12)):
        op = rng.choice(OPS)
        call = rng.choice(CALLS)
        kind = rng.random()
        if kind < 0.4:
            lines.append(f"    {names[3]}{j} = {call}({names[1]}) {op} {rng.randint(0, 999)}")
        elif kind < 0.7:
            lines.append(f"    if {names[2]} {op} {j} > {rng.randint(0, 99)}:")
            lines.append(f"        {names[1]} = {call}({names[2]}) {op} {names[1]}")
        else:
            lines.append(f"    for {names[3]} in range({rng.randint(1, 50)}):")
            lines.append(f"        {names[2]} += {names[3]} {op} {rng.randint(1, 9)}")
    lines.append(f"    return {names[1]} {rng.choice(OPS)} {names[2]}")
    return "\n".join(lines)


def rename(text: str, rng: random.Random) -> str:
    for w in WORDS:
        text = text.replace(w, f"{w}_{rng.randint(0, 9)}x")
    return text


def make(n: int, seed: int = 0) -> tuple[list[dict], int, int, list[int]]:
    """The seeds, how many exact and renamed copies were planted, and each seed's original (its own index for
    an original, the copied one's for a copy): the seeds of one original form one group."""
    rng = random.Random(seed)
    base = int(n * 0.8)
    texts = [synth_function(rng, i) for i in range(base)]
    group = list(range(base))
    exact = n // 10
    renamed = n - base - exact
    for copy_of, count in ((lambda t: t, exact), (lambda t: rename(t, rng), renamed)):
        for _ in range(count):
            i = rng.randrange(base)
            texts.append(copy_of(texts[i]))
            group.append(i)
    recs = [
        {"id": f"bench:{i}", "source": "bench", "kind": "snippet", "text": t, "provenance": {"type": "jsonl"}}
        for i, t in enumerate(texts)
    ]
    return recs, exact, renamed, group


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=186_000)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    t0 = time.perf_counter()
    recs, exact, renamed, group = make(args.n)
    t1 = time.perf_counter()
    kept, dropped = deduplicate(recs, DedupParams(workers=args.workers))
    t2 = time.perf_counter()
    rss_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    n_exact = sum(d["reason"] == "exact" for d in dropped)
    n_near = sum(d["reason"] == "near" for d in dropped)
    print(f"entries            {args.n}")
    print(f"generate           {t1 - t0:.1f} s (not counted)")
    print(f"dedup wall         {t2 - t1:.1f} s  ({args.n / (t2 - t1):,.0f} entries/s, workers={args.workers})")
    print(f"peak RSS           main {rss_self:,.0f} MiB, largest worker {rss_kids:,.0f} MiB")
    print(f"planted            {exact} exact copies, {renamed} renamed copies")
    print(f"dropped            {n_exact} exact, {n_near} near; kept {len(kept)}")
    # right: each original's group (it and its planted copies) keeps exactly one seed; wrong: a group with none
    # kept (a seed dropped as a copy of an unrelated one), or more than one (a planted copy missed)
    kept_per_group = Counter(group[int(r["id"].split(":")[1])] for r in kept)
    groups = set(group)
    lost = len(groups - set(kept_per_group))
    missed = sum(c - 1 for c in kept_per_group.values() if c > 1)
    print(
        f"groups             {len(groups)} (an original and its copies): {lost} lost every seed, "
        f"{missed} planted copies missed (goal: 0 and 0)"
    )
    wall, rss = t2 - t1, max(rss_self, rss_kids)
    figures = {"seeds": args.n, "workers": args.workers, "wall_s": round(wall, 1), "peak_rss_main_mib": round(rss_self),
               "peak_rss_largest_worker_mib": round(rss_kids), "planted_exact": exact, "planted_renamed": renamed,
               "dropped_exact": n_exact, "dropped_near": n_near, "kept": len(kept), "groups_lost": lost,
               "copies_missed": missed}  # fmt: skip
    record("dedup", figures, goal="<= 60 s wall, <= 4 GiB peak RSS on 2 cores; 0 lost, 0 missed",
           met=wall <= 60 and rss <= 4096 and lost == 0 and missed == 0)  # fmt: skip


if __name__ == "__main__":
    main()
