"""Decontamination: remove entries whose code is too similar to a benchmark snippet (paper section 3.2).

Every fenced code block of every message of an entry is compared with every benchmark snippet; the entry
is removed when any pair's similarity is strictly greater than the threshold. Two metrics, both exact:

* ``levenshtein``: ``1 - distance / max(len_a, len_b)`` (unit-cost insert, delete, substitute);
* ``ratio``: python-Levenshtein's ``Levenshtein.ratio`` = ``1 - indel / (len_a + len_b)``.

Two empty strings have similarity 1. Lengths count code points. The threshold is read as the decimal it is
written as (0.9 is 9/10), and "above" is decided in integer arithmetic: no float rounding at the boundary.

The all-pairs search is exact but fast: a pair can only be above the threshold when its distance is at
most ``k`` (a function of the lengths), and two cheap lower bounds of the distance (the length difference
and a folded character-histogram L1 distance) discard almost every pair before rapidfuzz computes the
banded distance with ``score_cutoff=k``. docs/curation.md has the proofs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rapidfuzz.distance import Indel, Levenshtein

from aiev.codeblocks import fenced_blocks, normalize_code
from aiev.config import exact_decimal
from aiev.curate import benchdata
from aiev.curate.benchdata import Snippet
from aiev.io import SkipLog, copy_lines, read_jsonl, write_jsonl

log = logging.getLogger("aiev.decontam")

Metric = Literal["levenshtein", "ratio"]
METRICS: tuple[str, ...] = ("levenshtein", "ratio")
BINS = 64  # character-histogram bins: code point mod BINS
_MAX_COUNT = np.iinfo(np.int16).max
_BUDGET = 1 << 21  # int16 cells per histogram-difference temporary
_CHUNK = 64  # blocks (sorted by length) scanned against one snippet window
TOP = 20


def entry_blocks(row: dict[str, Any]) -> list[str]:
    """The normalized code blocks of all messages of an entry, in order (every language: a leaked snippet
    counts wherever it appears)."""
    return [normalize_code(f.code) for msg in row["messages"] for f in fenced_blocks(msg["content"])]


def row_problem(row: Any) -> str | None:
    """Why a row cannot be checked (None when it can): it needs a string id and messages with string content."""
    if not isinstance(row.get("id"), str) or not row["id"]:
        return "bad-row: missing or non-string id"
    msgs = row.get("messages")
    if not isinstance(msgs, list):
        return "bad-row: messages is not a list"
    for n, msg in enumerate(msgs):
        if not isinstance(msg, dict) or not isinstance(msg.get("content"), str):
            return f"bad-row: message {n} has no string content"
    return None


# ------------------------------------------------------------------------------- exact similarity


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}' (known: {', '.join(METRICS)})")


def distance(a: str, b: str, metric: str, score_cutoff: int | None = None) -> int:
    """Levenshtein distance (levenshtein) or indel distance (ratio); above ``score_cutoff``: cutoff + 1."""
    _check_metric(metric)
    fn = Levenshtein.distance if metric == "levenshtein" else Indel.distance
    return int(fn(a, b, score_cutoff=score_cutoff))


def norm_length(la: int, lb: int, metric: str) -> int:
    """The denominator of the similarity: max length (levenshtein) or the sum of lengths (ratio)."""
    return max(la, lb) if metric == "levenshtein" else la + lb


def max_distance(n: int, threshold: Fraction) -> int:
    """Largest distance d with ``(n - d) / n > threshold`` (-1 when none): ``q(n - d) > p n``."""
    p, q = threshold.numerator, threshold.denominator
    return ((q - p) * n - 1) // q


def similarity(a: str, b: str, metric: str) -> Fraction:
    """The exact similarity of two strings (1 for two empty strings)."""
    n = norm_length(len(a), len(b), metric)
    return Fraction(1) if n == 0 else Fraction(n - distance(a, b, metric), n)


def is_match(a: str, b: str, metric: str, threshold: Fraction) -> bool:
    """Brute force: is the similarity strictly above the threshold?"""
    n = norm_length(len(a), len(b), metric)
    if n == 0:
        return threshold < 1
    k = max_distance(n, threshold)
    return k >= 0 and distance(a, b, metric, score_cutoff=k) <= k


# --------------------------------------------------------------------------------- fast all-pairs


@dataclass(frozen=True)
class Match:
    block: int
    snippet: int
    distance: int


@dataclass
class SearchStats:
    pairs: int = 0
    length_candidates: int = 0
    histogram_candidates: int = 0
    matches: int = 0

    def add(self, other: SearchStats) -> None:
        self.length_candidates += other.length_candidates
        self.histogram_candidates += other.histogram_candidates
        self.matches += other.matches


def histograms(texts: Sequence[str]) -> np.ndarray:
    """Per text, the counts of its code points folded mod BINS (capped at the int16 maximum)."""
    out = np.zeros((len(texts), BINS), dtype=np.int16)
    step = 4096
    for lo in range(0, len(texts), step):
        part = texts[lo : lo + step]
        lens = np.fromiter((len(t) for t in part), dtype=np.int64, count=len(part))
        cps = np.frombuffer("".join(part).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        owner = np.repeat(np.arange(len(part), dtype=np.int64), lens)
        counts = np.bincount(owner * BINS + (cps % BINS), minlength=len(part) * BINS)
        out[lo : lo + len(part)] = np.minimum(counts, _MAX_COUNT).reshape(len(part), BINS)
    return out


@dataclass
class _Side:
    texts: list[str]
    lens: np.ndarray
    hist: np.ndarray

    @classmethod
    def of(cls, texts: list[str]) -> _Side:
        return cls(texts, np.fromiter((len(t) for t in texts), np.int64, len(texts)), histograms(texts))


@dataclass
class _Search:
    blocks: _Side  # non-empty, sorted by length
    snippets: _Side  # non-empty, sorted by length
    metric: str
    threshold: Fraction
    ktab: np.ndarray  # ktab[n] = max_distance(n)

    def allowed(self, la: int, lb: int) -> bool:
        """The length bound: the distance is at least |la - lb|."""
        return abs(la - lb) <= self.ktab[norm_length(la, lb, self.metric)]

    def window(self, la: int, lb_first: bool) -> int:
        """Index into the sorted snippet lengths: first allowed (lb_first) or one past the last allowed."""
        lens = self.snippets.lens
        if lb_first:  # smallest lb <= la allowed: the allowed lb <= la form an interval ending at la
            lo, hi = 0, int(np.searchsorted(lens, la, "left"))
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if self.allowed(la, int(lens[mid])) else (mid + 1, hi)
            return lo
        lo, hi = int(np.searchsorted(lens, la, "left")), len(lens)
        while lo < hi:  # the allowed lb >= la form an interval starting at la
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if self.allowed(la, int(lens[mid])) else (lo, mid)
        return lo

    def scan(self, start: int, stop: int) -> tuple[list[Match], SearchStats]:
        b, s, lev = self.blocks, self.snippets, self.metric == "levenshtein"
        dist_fn = Levenshtein.distance if lev else Indel.distance
        found: list[Match] = []
        stats = SearchStats()
        for c0 in range(start, stop, _CHUNK):
            c1 = min(c0 + _CHUNK, stop)
            w0, w1 = self.window(int(b.lens[c0]), True), self.window(int(b.lens[c1 - 1]), False)
            if w1 <= w0:
                continue
            step = max(1, _BUDGET // ((w1 - w0) * BINS))
            for r0 in range(c0, c1, step):
                r1 = min(r0 + step, c1)
                la, lb = b.lens[r0:r1, None], s.lens[None, w0:w1]
                gap = np.abs(la - lb)
                k = self.ktab[np.maximum(la, lb) if lev else la + lb]
                ok = gap <= k
                stats.length_candidates += int(ok.sum())
                if not ok.any():
                    continue
                diff = b.hist[r0:r1, None, :] - s.hist[None, w0:w1, :]
                l1 = np.abs(diff, out=diff).sum(axis=-1, dtype=np.int32)
                # levenshtein: d >= (L1 + |la - lb|) / 2; indel: d >= L1
                ok &= (l1 + gap <= 2 * k) if lev else (l1 <= k)
                rows, cols = np.nonzero(ok)
                stats.histogram_candidates += len(rows)
                for i, j, kk in zip(rows.tolist(), cols.tolist(), k[rows, cols].tolist(), strict=True):
                    d = int(dist_fn(b.texts[r0 + i], s.texts[w0 + j], score_cutoff=kk))
                    if d <= kk:
                        found.append(Match(r0 + i, w0 + j, d))
        stats.matches = len(found)
        return found, stats


_STATE: _Search | None = None


def _init_worker(state: _Search) -> None:
    global _STATE
    _STATE = state


def _scan_task(span: tuple[int, int]) -> tuple[list[Match], SearchStats]:
    assert _STATE is not None
    return _STATE.scan(*span)


def _ktab(limit: int, threshold: Fraction) -> np.ndarray:
    p, q = threshold.numerator, threshold.denominator
    if q * (limit + 1) < 2**62:
        n = np.arange(limit + 1, dtype=np.int64)
        return ((q - p) * n - 1) // q
    return np.array([max_distance(n, threshold) for n in range(limit + 1)], dtype=np.int64)


def find_matches(
    blocks: Sequence[str],
    snippets: Sequence[str],
    threshold: float | Fraction = 0.9,
    metric: str = "levenshtein",
    workers: int = 1,
    stats: SearchStats | None = None,
) -> list[Match]:
    """Every (block, snippet) pair whose similarity is strictly above ``threshold``, with its distance.

    Exactly the pairs for which :func:`is_match` is true, sorted by (block, snippet).
    """
    _check_metric(metric)
    t = exact_decimal(threshold)
    stats = stats if stats is not None else SearchStats()
    stats.pairs += len(blocks) * len(snippets)
    if t >= 1 or not blocks or not snippets:
        return []
    found: list[Match] = []
    # Two empty strings have similarity 1; an empty and a non-empty one have 0.
    empty_b = [i for i, x in enumerate(blocks) if not x]
    empty_s = [j for j, x in enumerate(snippets) if not x]
    found += [Match(i, j, 0) for i in empty_b for j in empty_s]
    b_idx = sorted((i for i, x in enumerate(blocks) if x), key=lambda i: len(blocks[i]))
    s_idx = sorted((j for j, x in enumerate(snippets) if x), key=lambda j: len(snippets[j]))
    if b_idx and s_idx:
        longest = max(len(blocks[b_idx[-1]]), len(snippets[s_idx[-1]]))
        search = _Search(
            _Side.of([blocks[i] for i in b_idx]),
            _Side.of([snippets[j] for j in s_idx]),
            metric,
            t,
            _ktab(2 * longest if metric == "ratio" else longest, t),
        )
        span = max(_CHUNK, -(-len(b_idx) // (8 * max(1, workers))))
        spans = [(lo, min(lo + span, len(b_idx))) for lo in range(0, len(b_idx), span)]
        if workers <= 1 or len(spans) == 1:
            results = [search.scan(lo, hi) for lo, hi in spans]
        else:
            with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(search,)) as pool:
                results = list(pool.map(_scan_task, spans))
        for part, st in results:
            stats.add(st)
            found += [Match(b_idx[m.block], s_idx[m.snippet], m.distance) for m in part]
    stats.matches = len(found)
    return sorted(found, key=lambda m: (m.block, m.snippet))


def brute_force_matches(
    blocks: Sequence[str], snippets: Sequence[str], threshold: float | Fraction, metric: str
) -> list[tuple[int, int]]:
    """The naive all-pairs loop (reference for tests and benchmarks/decontam.py)."""
    t = exact_decimal(threshold)
    return [(i, j) for i, a in enumerate(blocks) for j, b in enumerate(snippets) if is_match(a, b, metric, t)]


# ------------------------------------------------------------------------------------------ a batch


@dataclass(frozen=True)
class _Row:
    line: int
    id: str
    blocks: list[int]  # indices into the unique block texts


def _similarity_value(m: Match, blocks: list[str], snippets: list[str], metric: str) -> Fraction:
    n = norm_length(len(blocks[m.block]), len(snippets[m.snippet]), metric)
    return Fraction(1) if n == 0 else Fraction(n - m.distance, n)


def run(section: dict[str, Any], paths: Any, snippets: Sequence[Snippet] | None = None) -> dict[str, Any]:
    """The ``decontaminate`` step, with the ``decontam`` section (``paths``: ``input``, ``output``, ``removed``;
    the benchmarks loaded from the section unless ``snippets`` are given)."""
    if snippets is None:
        snippets = benchdata.load_benchmarks(section["benchmarks"].items())
    if not snippets:
        raise ValueError("no benchmark snippets to compare with (give --benchmark or decontam.benchmarks)")
    return decontaminate(paths.input, paths.output, paths.removed, snippets, section["threshold"], section["metric"],
                         section["workers"])  # fmt: skip


def _read_rows(input_path: str | Path, skips: SkipLog) -> tuple[list[_Row], list[str]]:
    """The good rows, each with its code blocks as indices into the unique block texts (the second value)."""
    rows: list[_Row] = []
    block_ids: dict[str, int] = {}
    for lineno, obj in read_jsonl(input_path, skips):
        problem = row_problem(obj)
        if problem is not None:
            rid = obj.get("id")
            skips.add(problem, file=str(input_path), line=lineno, id=rid if isinstance(rid, str) else None)
            continue
        ids = [block_ids.setdefault(text, len(block_ids)) for text in entry_blocks(obj)]
        rows.append(_Row(lineno, obj["id"], ids))
    return rows, list(block_ids)


def _unique_snippets(snippets: Sequence[Snippet]) -> tuple[list[str], list[list[int]]]:
    """The unique normalised snippet texts, and for each the indices of the snippets that have it."""
    snip_ids: dict[str, int] = {}
    owners: list[list[int]] = []
    for n, snip in enumerate(snippets):
        text = normalize_code(snip.text)
        if text not in snip_ids:
            snip_ids[text] = len(owners)
            owners.append([])
        owners[snip_ids[text]].append(n)
    return list(snip_ids), owners


def _removals(rows: list[_Row], matches: list[Match], blocks: list[str], snip_texts: list[str],
              owners: list[list[int]], snippets: Sequence[Snippet], metric: str):  # fmt: skip
    """(the removed rows, each with its closest benchmark item; for each benchmark, the ids of the rows that
    matched it)."""
    by_block: dict[int, list[Match]] = {}
    for m in matches:
        by_block.setdefault(m.block, []).append(m)
    removed: list[dict[str, Any]] = []
    matched: dict[str, set[str]] = {}
    for row in rows:
        best: tuple[Fraction, Match] | None = None
        for bi in dict.fromkeys(row.blocks):
            for m in by_block.get(bi, []):
                sim = _similarity_value(m, blocks, snip_texts, metric)
                if best is None or sim > best[0]:
                    best = (sim, m)
                for sn in owners[m.snippet]:
                    matched.setdefault(snippets[sn].benchmark, set()).add(row.id)
        if best is not None:
            sim, m = best
            snip = snippets[owners[m.snippet][0]]
            removed.append({"id": row.id, "benchmark": snip.benchmark, "task_id": snip.task_id,
                            "similarity": float(sim), "metric": metric, "distance": m.distance, "line": row.line,
                            "source": snip.source, "block": blocks[m.block]})  # fmt: skip
    return removed, matched


def _per_benchmark(snippets: Sequence[Snippet], removed: list[dict[str, Any]],
                   matched: dict[str, set[str]]) -> dict[str, dict[str, Any]]:  # fmt: skip
    names = sorted({s.benchmark for s in snippets}, key=benchdata.NAMES.index)
    return {
        name: {
            "snippets": sum(1 for s in snippets if s.benchmark == name),
            "sources": sorted({s.source for s in snippets if s.benchmark == name}),
            "removed": sum(1 for r in removed if r["benchmark"] == name),
            "matched": len(matched.get(name, ())),
        }
        for name in names
    }


def decontaminate(
    input_path: str | Path,
    output: str | Path,
    removed_path: str | Path,
    snippets: Sequence[Snippet],
    threshold: float = 0.9,
    metric: str = "levenshtein",
    workers: int = 1,
) -> dict[str, Any]:
    """Decontaminate one JSONL file of entries; returns the report.

    Each removed entry is reported with its closest benchmark item: the highest similarity over every pair of
    its blocks and every snippet above the threshold (ties: the earlier block, then the earlier snippet)."""
    t0 = time.perf_counter()
    t = exact_decimal(threshold)
    skips = SkipLog()
    rows, blocks = _read_rows(input_path, skips)
    snip_texts, owners = _unique_snippets(snippets)
    stats = SearchStats()
    matches = find_matches(blocks, snip_texts, t, metric, workers, stats)
    removed, matched = _removals(rows, matches, blocks, snip_texts, owners, snippets, metric)
    removed_lines = {r["line"] for r in removed}
    kept = copy_lines(input_path, output, {r.line for r in rows} - removed_lines)
    write_jsonl(removed_path, removed)
    top = sorted(removed, key=lambda r: (-r["similarity"], r["line"]))[:TOP]
    return {
        "input": str(input_path),
        "output": str(output),
        "removed_file": str(removed_path),
        "metric": metric,
        "threshold": float(t),
        "threshold_exact": str(t),
        "rows": {"good": len(rows), "kept": kept, "removed": len(removed), "bad": len(skips)},
        "benchmarks": _per_benchmark(snippets, removed, matched),
        "blocks": {
            "total": sum(len(r.blocks) for r in rows),
            "unique": len(blocks),
            "unique_snippets": len(snip_texts),
        },
        "search": {
            "pairs": stats.pairs,
            "length_candidates": stats.length_candidates,
            "histogram_candidates": stats.histogram_candidates,
            "matching_pairs": stats.matches,
            "seconds": round(time.perf_counter() - t0, 3),
        },
        "top_matches": [{k: r[k] for k in ("id", "line", "benchmark", "task_id", "similarity")} for r in top],
        "bad_by_reason": skips.counts(),
        "bad_rows": skips.rows,
    }
