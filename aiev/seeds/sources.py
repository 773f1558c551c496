"""Seed sources (hf, jsonl, parquet, stdlib) normalised to one seed record (docs/records.md)."""

from __future__ import annotations

import platform
import random
import sysconfig
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from aiev.io import SkipLog, read_jsonl, write_jsonl

DEFAULT_KIND = {"hf": "instruction", "jsonl": "instruction", "parquet": "instruction", "stdlib": "snippet"}

# Directories of the standard library that are not ordinary library code (test suites, demos, vendored
# data) and so make poor OSS-Instruct-style seeds.
_STDLIB_EXCLUDE = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "turtledemo",
}


class SeedError(RuntimeError):
    """A source that yields nothing, or a configuration that cannot be read."""


@dataclass(frozen=True)
class Limits:
    min_chars: int
    max_chars: int


Row = tuple[int, Any, dict[str, Any]]  # (row number, raw object, provenance)


def _from_row(
    src: dict[str, Any], row_no: int, obj: Any, prov: dict[str, Any], limits: Limits, skips: SkipLog
) -> dict[str, Any] | None:
    where = {"file": prov.get("file") or prov.get("dataset"), "line": row_no, "source": src["name"]}
    field_name = src["text_field"]
    if not isinstance(obj, dict):
        skips.add(f"not-an-object: got {type(obj).__name__}", **where)
        return None
    if field_name not in obj or obj[field_name] is None:
        skips.add(f"missing-field: '{field_name}'", **where)
        return None
    text = obj[field_name]
    if not isinstance(text, str):
        skips.add(f"not-a-string: '{field_name}' is {type(text).__name__}", **where)
        return None
    reference = None
    ref_field = src.get("reference_field")
    if ref_field:
        reference = obj.get(ref_field)
        if reference is not None and not isinstance(reference, str):
            skips.add(f"not-a-string: '{ref_field}' is {type(reference).__name__}", **where)
            return None
    return _make_seed(src, row_no, text, reference, prov, limits, skips, where)


def _make_seed(
    src: dict[str, Any],
    row_no: int,
    text: str,
    reference: str | None,
    prov: dict[str, Any],
    limits: Limits,
    skips: SkipLog,
    where: dict[str, Any],
) -> dict[str, Any] | None:
    if "\x00" in text:
        skips.add("binary: text holds NUL bytes", **where)
        return None
    size = len(text.strip())
    if size == 0:
        skips.add("empty: text is blank", **where)
        return None
    if size < limits.min_chars:
        skips.add(f"too-short: {size} chars < min_chars {limits.min_chars}", **where)
        return None
    if len(text) > limits.max_chars:
        skips.add(f"too-long: {len(text)} chars > max_chars {limits.max_chars}", **where)
        return None
    return {
        "id": f"{src['name']}:{row_no}",
        "source": src["name"],
        "kind": src.get("kind") or DEFAULT_KIND[src["type"]],
        "text": text,
        "reference": reference,
        "provenance": prov,
    }


# ----------------------------------------------------------------------------------------- readers


def _rows_jsonl(src: dict[str, Any], skips: SkipLog) -> Iterator[Row]:
    path = Path(src["path"])
    if not path.is_file():
        raise SeedError(f"source '{src['name']}': file not found: {path}")
    for lineno, obj in read_jsonl(path, skips):
        yield lineno, obj, {"type": "jsonl", "file": str(path), "line": lineno}


def _rows_parquet(src: dict[str, Any], skips: SkipLog) -> Iterator[Row]:
    import pyarrow.parquet as pq

    path = Path(src["path"])
    if not path.is_file():
        raise SeedError(f"source '{src['name']}': file not found: {path}")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise SeedError(f"source '{src['name']}': {path} is not a readable parquet file: {exc}") from exc
    row = 0
    for batch in pf.iter_batches(batch_size=4096):
        for obj in batch.to_pylist():
            yield row, obj, {"type": "parquet", "file": str(path), "row": row}
            row += 1


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists())


def load_hf_dataset(src: dict[str, Any]) -> Any:
    """Open a Hugging Face dataset: a directory saved by ``save_to_disk``, else the hub (needs network)."""
    import datasets

    name = src["dataset"]
    local = Path(name)
    if _is_saved_dataset(local):
        ds = datasets.load_from_disk(str(local))
        if isinstance(ds, datasets.DatasetDict):
            if src["split"] not in ds:
                raise SeedError(f"source '{src['name']}': split '{src['split']}' not in {list(ds)}")
            ds = ds[src["split"]]
        return ds
    try:
        return datasets.load_dataset(name, src.get("config_name"), split=src["split"], revision=src.get("revision"))
    except Exception as exc:
        raise SeedError(
            f"source '{src['name']}': could not load Hugging Face dataset '{name}' "
            f"(split {src['split']}): {exc}. On a machine without internet, run the seeds rule on a "
            "login node (it is a localrule), set HF_DATASETS_OFFLINE=1 with a filled cache, or point "
            "'dataset' at a directory written by datasets' save_to_disk."
        ) from exc


def _rows_hf(src: dict[str, Any], skips: SkipLog) -> Iterator[Row]:
    ds = load_hf_dataset(src)
    prov = {"type": "hf", "dataset": src["dataset"], "split": src["split"]}
    if src.get("revision"):
        prov["revision"] = src["revision"]
    for row, obj in enumerate(ds):
        yield row, obj, {**prov, "row": row}


@cache
def _stdlib_files(root: str) -> tuple[str, ...]:
    base = Path(root)
    out = []
    for path in base.rglob("*.py"):
        rel = path.relative_to(base)
        if _STDLIB_EXCLUDE.intersection(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        out.append(rel.as_posix())
    return tuple(sorted(out))


def stdlib_root() -> str:
    return sysconfig.get_paths()["stdlib"]


def self_contained(node: Any) -> bool:
    """A function that needs nothing but its parameters and the builtins (no imports, no module names, no
    global state, no generators), and returns a value: a problem that can be stated and tested on its own."""
    import ast
    import builtins

    a = node.args
    params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} | {x.arg for x in (a.vararg, a.kwarg) if x}
    bound = set(params)
    for n in ast.walk(node):
        if isinstance(n, ast.Import | ast.ImportFrom | ast.Global | ast.Nonlocal | ast.Yield | ast.YieldFrom):
            return False
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store | ast.Del):
            bound.add(n.id)
        elif isinstance(n, ast.arg):
            bound.add(n.arg)
        elif isinstance(n, ast.FunctionDef | ast.ClassDef) and n is not node:
            bound.add(n.name)
    known = bound | set(dir(builtins))
    loads = (n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load))
    returns = any(isinstance(n, ast.Return) and n.value is not None for n in ast.walk(node))
    return bool(params) and returns and all(name in known for name in loads)


def parameter_count(node: Any) -> int:
    """How many parameters a function takes: positional, keyword-only, ``*args`` and ``**kwargs`` alike."""
    a = node.args
    return len(a.posonlyargs + a.args + a.kwonlyargs) + (a.vararg is not None) + (a.kwarg is not None)


def _functions(
    source: str, lo: int, hi: int, only_self_contained: bool = False, max_params: int | None = None
) -> list[tuple[int, int, str]]:
    """(start, end, name) of the module-level functions of lo..hi lines (decorators included), in order."""
    import ast

    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    out = []
    for node in tree.body:
        if only_self_contained and isinstance(node, ast.FunctionDef) and not self_contained(node):
            continue
        if max_params is not None and isinstance(node, ast.FunctionDef) and parameter_count(node) > max_params:
            continue
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test") and node.end_lineno is not None:
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if lo <= node.end_lineno - start + 1 <= hi:
                out.append((start, node.end_lineno, node.name))
    return out


def _stdlib_seeds(src: dict[str, Any], limits: Limits, skips: SkipLog) -> Iterator[dict[str, Any]]:
    """OSS-Instruct-style seeds drawn (seeded) from the stdlib: ``lines`` consecutive lines of real code, or
    (``unit: function``) one whole module-level function."""
    root = stdlib_root()
    files = _stdlib_files(root)
    if not files:
        raise SeedError(f"source '{src['name']}': no Python files under {root}")
    lo, hi = src.get("min_lines", 1), src.get("max_lines", 15)
    if lo > hi:
        raise SeedError(f"source '{src['name']}': min_lines {lo} > max_lines {hi}")
    rng = random.Random(src.get("seed", 0))
    lines_cache: dict[str, list[str] | None] = {}
    by_function = src.get("unit", "lines") == "function"
    functions: list[tuple[str, int, int, str]] = []  # every function of the right size, drawn without replacement
    if by_function:
        for rel in files:
            try:
                lines_cache[rel] = (Path(root) / rel).read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                lines_cache[rel] = None
                continue
            text = "\n".join(lines_cache[rel] or [])
            found = _functions(text, lo, hi, src.get("self_contained", False), src.get("max_params"))
            functions += [(rel, *f) for f in found]
        rng.shuffle(functions)
    quiet = SkipLog()  # a discarded draw is redrawn, so it is not a lost row
    made = 0
    draws = 0
    while made < src["count"]:
        draws += 1
        if draws > 50 * src["count"] + 1000:
            raise SeedError(f"source '{src['name']}': could not draw {src['count']} usable snippets")
        if by_function:
            if not functions:
                raise SeedError(f"source '{src['name']}': only {made} functions of {lo}-{hi} lines in {root}")
            rel, first, last, name = functions.pop()
        else:
            rel = rng.choice(files)
        if rel not in lines_cache:
            try:
                lines_cache[rel] = (Path(root) / rel).read_text(encoding="utf-8").splitlines()
            except (UnicodeDecodeError, OSError):
                lines_cache[rel] = None
        lines = lines_cache[rel]
        if not lines:
            continue
        extra: dict[str, Any] = {}
        if by_function:
            start, chunk, extra = first - 1, lines[first - 1 : last], {"unit": "function", "function": name}
        else:
            n = rng.randint(lo, hi)
            start = rng.randrange(max(1, len(lines) - n + 1))
            chunk = lines[start : start + n]
        text = textwrap.dedent("\n".join(chunk)).strip("\n")
        prov = {
            "type": "stdlib",
            "module": rel,
            "start_line": start + 1,
            "end_line": start + len(chunk),
            "python": platform.python_version(),
            **extra,
        }
        seed = _make_seed(src, made, text, None, prov, limits, quiet, {"source": src["name"]})
        if seed is not None:
            made += 1
            yield seed


READERS = {"jsonl": _rows_jsonl, "parquet": _rows_parquet, "hf": _rows_hf}


def iter_source(src: dict[str, Any], limits: Limits, skips: SkipLog) -> Iterator[dict[str, Any]]:
    if src["type"] == "stdlib":
        yield from _stdlib_seeds(src, limits, skips)
        return
    limit = src.get("limit")
    for n, (row_no, obj, prov) in enumerate(READERS[src["type"]](src, skips)):
        if limit is not None and n >= limit:
            break
        seed = _from_row(src, row_no, obj, prov, limits, skips)
        if seed is not None:
            yield seed


def collect_seeds(section: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Read every configured source; return the seeds and a report with per-source counts and skips."""
    sources = section["sources"]
    names = [s["name"] for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SeedError(f"seeds.sources: source names must be unique, repeated: {', '.join(dupes)}")
    limits = Limits(section["min_chars"], section["max_chars"])
    seeds: list[dict[str, Any]] = []
    report: dict[str, Any] = {"sources": {}, "total": 0, "skipped": []}
    for src in sources:
        skips = SkipLog()
        before = len(seeds)
        seeds.extend(iter_source(src, limits, skips))
        kept = len(seeds) - before
        report["sources"][src["name"]] = {
            "type": src["type"],
            "kept": kept,
            "skipped": len(skips),
            "skipped_by_reason": skips.counts(),
        }
        report["skipped"].extend(skips.rows)
        if kept == 0:
            raise SeedError(
                f"source '{src['name']}' ({src['type']}) yielded no usable seed "
                f"({len(skips)} rows skipped: {skips.counts() or 'no rows at all'}); "
                "check its path/dataset and text_field"
            )
    report["total"] = len(seeds)
    return seeds, report


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``seeds`` step: read every source of the ``seeds`` section into one JSONL file (``paths.output``)."""
    seeds, info = collect_seeds(section)
    write_jsonl(paths.output, seeds)
    return info
