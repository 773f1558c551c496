"""Exact and near-duplicate removal of seeds.

Exact: a hash of the whitespace-normalised text. Near: MinHash LSH (datasketch) over token n-gram shingles
finds candidates; each candidate is then confirmed by the exact Jaccard similarity of the two shingle sets,
so nothing is dropped on an LSH false positive. The first occurrence is kept, so the result is deterministic.

For code snippets, local identifiers are renamed by first occurrence (``v0``, ``v1``...) before shingling:
code that differs only in its variable names shingles identically. Keywords, builtins, attribute names
(after ``.``, ``->``, ``::``) and import lines keep their spelling, since they say what the code does.
"""

from __future__ import annotations

import builtins
import keyword
import re
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash
from datasketch import LeanMinHash, MinHash, MinHashLSH

from aiev.io import read_records, write_jsonl
from aiev.runtime import Tally

SCHEME = "affine32"  # datasketch's permutation scheme (bijective, 32-bit values)

_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d[\w.]*|->|::|\S")
_WORD = re.compile(r"\w+")
_IMPORT_LINE = re.compile(r"^\s*(?:import|from|#\s*include|using|use|require|package)\b")
# Reserved words of the languages OSS-Instruct seeds come in; they keep their spelling.
_OTHER_RESERVED = """
auto break case catch char class const continue default delete do double else enum extern final
float for function goto if implements import include int interface let long namespace new null
private protected public return short signed sizeof static struct super switch template this throw
try typedef typename union unsigned var virtual void volatile while fn mut impl trait pub crate mod
match loop where func go chan defer map range select type package string bool true false nil self
std vector echo end begin then elif fi done local export
"""
_KEEP = (
    frozenset(keyword.kwlist)
    | frozenset(keyword.softkwlist)
    | frozenset(dir(builtins))
    | frozenset(_OTHER_RESERVED.split())
)
_MEMBER_OPS = frozenset({".", "->", "::"})


@dataclass(frozen=True)
class DedupParams:
    exact: bool = True
    near: bool = True
    threshold: float = 0.7
    shingle_size: int = 5
    num_perm: int = 128
    min_tokens: int = 10
    canonical_identifiers: bool = True
    seed: int = 1
    workers: int = 1

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> DedupParams:
        return cls(**{k: section[k] for k in cls.__dataclass_fields__ if k in section})


def normalize(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed: what 'the same text' means for exact dedup."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def exact_key(text: str) -> int:
    return xxhash.xxh3_128_intdigest(normalize(text).encode("utf-8"))


def code_tokens(text: str, canonical: bool = True) -> list[str]:
    """Tokens of a code snippet, local identifiers renamed by first occurrence when ``canonical``."""
    out: list[str] = []
    names: dict[str, str] = {}
    for line in text.splitlines():
        keep_line = _IMPORT_LINE.match(line) is not None
        prev = ""
        for tok in _TOKEN.findall(line):
            if (
                canonical
                and not keep_line
                and (tok[0].isalpha() or tok[0] == "_")
                and tok not in _KEEP
                and prev not in _MEMBER_OPS
            ):
                name = names.get(tok)
                if name is None:
                    name = names[tok] = f"v{len(names)}"
                out.append(name)
            else:
                out.append(tok)
            prev = tok
    return out


def word_tokens(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFC", text).lower())


def shingle_hashes(tokens: Sequence[str], n: int) -> np.ndarray:
    """Sorted unique 64-bit hashes of the token n-grams (one shingle of all tokens if fewer than n)."""
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    if len(tokens) < n:
        grams = ["\x1f".join(tokens)]
    else:
        grams = ["\x1f".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return np.unique(np.fromiter((xxhash.xxh64_intdigest(g.encode("utf-8")) for g in grams), np.uint64, len(grams)))


def _low32(h: int) -> int:
    return h & 0xFFFFFFFF


def _signatures(args: tuple[list[tuple[str, str]], DedupParams]) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """(shingle hashes, MinHash values, token count) of each (kind, text)."""
    docs, p = args
    template = MinHash(num_perm=p.num_perm, seed=p.seed, scheme=SCHEME)
    out = []
    for kind, text in docs:
        toks = code_tokens(text, p.canonical_identifiers) if kind == "snippet" else word_tokens(text)
        sh = shingle_hashes(toks, p.shingle_size)
        mh = MinHash(
            num_perm=p.num_perm,
            seed=p.seed,
            hashfunc=_low32,
            permutations=template.permutations,
            scheme=SCHEME,
        )
        mh.update_batch(sh.tolist())
        out.append((sh, mh.hashvalues, len(toks)))
    return out


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    if x.size == 0 and y.size == 0:
        return 1.0
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / (x.size + y.size - inter)


def _compute_all(docs: list[tuple[str, str]], p: DedupParams) -> list[tuple[np.ndarray, np.ndarray, int]]:
    chunk = 2000
    parts = [(docs[i : i + chunk], p) for i in range(0, len(docs), chunk)]
    if p.workers <= 1 or len(parts) <= 1:
        return [sig for part in parts for sig in _signatures(part)]
    with ProcessPoolExecutor(max_workers=p.workers) as pool:
        return [sig for res in pool.map(_signatures, parts) for sig in res]


def deduplicate(
    records: list[dict[str, Any]], params: DedupParams
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return ``(kept, dropped)``; each dropped row says why and which kept record it duplicates."""
    kept_idx: list[int] = []
    dropped: list[dict[str, Any]] = []
    survivors: list[int] = []
    seen: dict[int, int] = {}
    for i, rec in enumerate(records):
        if params.exact:
            key = exact_key(rec["text"])
            first = seen.get(key)
            if first is not None:
                dropped.append(
                    {
                        "id": rec["id"],
                        "reason": "exact",
                        "duplicate_of": records[first]["id"],
                        "similarity": 1.0,
                    }
                )
                continue
            seen[key] = i
        survivors.append(i)

    if not params.near:
        kept_idx = survivors
    else:
        sigs = _compute_all([(records[i]["kind"], records[i]["text"]) for i in survivors], params)
        lsh = MinHashLSH(threshold=params.threshold, num_perm=params.num_perm)
        shingles: dict[int, np.ndarray] = {}
        for i, (sh, hv, ntok) in zip(survivors, sigs, strict=True):
            if ntok < params.min_tokens:
                kept_idx.append(i)
                continue
            mh = LeanMinHash(seed=params.seed, hashvalues=hv, scheme=SCHEME)
            best, best_j = None, -1.0
            for cand in sorted(lsh.query(mh)):
                j = jaccard(sh, shingles[cand])
                if j >= params.threshold and j > best_j:
                    best, best_j = cand, j
            if best is not None:
                dropped.append(
                    {
                        "id": records[i]["id"],
                        "reason": "near",
                        "duplicate_of": records[best]["id"],
                        "similarity": round(best_j, 4),
                    }
                )
                continue
            lsh.insert(i, mh, check_duplication=False)
            shingles[i] = sh
            kept_idx.append(i)
    kept_idx.sort()
    return [records[i] for i in kept_idx], dropped


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``dedup`` step, with the parameters of the ``dedup`` section (``paths``: ``input``, ``output``)."""
    params = DedupParams.from_section(section)
    records = read_records(paths.input)
    kept, dropped = deduplicate(records, params)
    write_jsonl(paths.output, kept)
    reasons = Tally().count(d["reason"] for d in dropped)
    info = {
        "input": len(records),
        "kept": len(kept),
        "dropped": len(dropped),
        "dropped_exact": reasons["exact"],
        "dropped_near": reasons["near"],
        "params": params.__dict__,
        "dropped_rows": dropped,
    }
    return info
