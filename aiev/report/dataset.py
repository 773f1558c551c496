"""The released data set: every kept entry of every batch, in the Hugging Face ``datasets`` layout, with its card.

The output directory (``results/dataset/``)::

    README.md                                   the dataset card (YAML header + Markdown; aiev/report/card.py)
    data/train-00000-of-0000N.parquet ...       config "default": parquet shards of the train split
    data/test-00000-of-0000M.parquet ...        ... and of the test split
    jsonl/train-00000-of-0000N.jsonl ...        the same rows, as JSON Lines
    jsonl/test-00000-of-0000M.jsonl ...
    dataset_report.json                         counts, files, skipped rows (the run summary reads it)

``datasets.load_dataset(DIR)`` loads the parquet shards (splits train and test, the card's only config:
``datasets`` reads every config of a folder with the builder of its first one, so a JSON Lines config beside the
parquet one would not load); ``load_dataset("json", data_files=..., features=...)`` loads the JSONL shards with the
same features (the card shows how), and both give the same rows. A row is an entry
(``aiev/schemas/entry.schema.yaml``) plus ``split``.
Every shard has one schema, the :func:`features` derived from the entry schema (pyarrow's inference per shard
would differ wherever a field is null in one shard): objects with declared properties are structs, arrays are
lists, and the fields whose shape the schema leaves free (``provenance``, ``messages[].install``) are JSON
strings, in the parquet and in the JSONL shards alike (:func:`json_fields`).

Order: each split holds its rows batch by batch, each batch's in file order. Each split is cut into shards of
at most ``dataset.shard_rows`` rows; an empty split has no shard and is not declared (``datasets`` cannot read an
empty parquet shard), so ``load_dataset`` then gives the other split only. Rows that are
not JSON objects, break the entry schema, or hold a field the schema does not declare (it would be lost) are
skipped, counted by reason and listed in ``dataset_report.json`` and in the card.

The whole directory is written beside the destination (``.NAME.tmp-*``) and moved into place at the end: a step
killed mid-write leaves the previous data set (or none), never a half one; the leftovers of a killed step are
removed by the next. Replacing an existing directory takes two renames (old aside, new in): in between there is
no data set at all, and a kill there leaves the old one beside (``.NAME.old-*``), not a partial one.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiev import __version__
from aiev.config import load_schema
from aiev.io import SkipLog, atomic_dir, dumps, fsync_path, read_jsonl, sha256_file, write_json
from aiev.records import record_errors
from aiev.report.batches import kind_of, per_batch, read

SPLITS = ("train", "test")
#: Config sections that decide which entries the data set holds (the card's config hash covers these).
PROVENANCE_SECTIONS = ("seeds", "dedup", "batches", "sandbox", "llm", "generate", "decontam", "split", "train",
                       "evaluate", "stage")  # fmt: skip
#: The column added to every entry.
SPLIT_FIELD = {"type": "string", "enum": list(SPLITS), "description": "train, or test (the held-out pass@1 tasks)."}


# --- the schema of every shard -------------------------------------------------------------------------------


def _types(node: dict[str, Any]) -> list[str]:
    if "enum" in node:
        kinds = {type(v).__name__ for v in node["enum"] if v is not None}
        return ["string"] if kinds <= {"str"} else ["free"]
    t = node.get("type")
    types = [t] if isinstance(t, str) else list(t or [])
    return [x for x in types if x != "null"]


def _feature(node: dict[str, Any]) -> Any:
    """The ``datasets`` feature of one schema node; ``None`` for a free-form node (stored as a JSON string)."""
    from datasets import Value

    types = _types(node)
    if len(types) != 1:
        return None
    t = types[0]
    if t in ("string", "integer", "number", "boolean"):
        return Value({"string": "string", "integer": "int64", "number": "float64", "boolean": "bool"}[t])
    if t == "object" and node.get("properties"):
        return {k: _feature(v) or Value("string") for k, v in node["properties"].items()}
    if t == "array" and isinstance(node.get("items"), dict):
        return [_feature(node["items"]) or Value("string")]
    return None


def entry_schema() -> dict[str, Any]:
    """The entry schema with the data set's own column, ``split``."""
    schema = load_schema("entry.schema.yaml")
    return {
        **schema,
        "properties": {**schema["properties"], "split": SPLIT_FIELD},
        "required": [*schema.get("required", []), "split"],
    }


def json_fields(schema: dict[str, Any] | None = None) -> list[str]:
    """Paths (``provenance``, ``messages[].install``) of the fields stored as JSON strings: free-form objects."""
    out: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        types = _types(node)
        if _feature(node) is None:
            out.append(path)
        elif types == ["object"]:
            for k, v in node["properties"].items():
                walk(v, f"{path}.{k}")
        elif types == ["array"]:
            walk(node["items"], f"{path}[]")

    for key, node in (schema or entry_schema())["properties"].items():
        walk(node, key)
    return out


def features(schema: dict[str, Any] | None = None) -> Any:
    """``datasets.Features`` of a row, derived from the entry schema (property order kept)."""
    from datasets import Features, Value

    return Features({k: _feature(v) or Value("string") for k, v in (schema or entry_schema())["properties"].items()})


def _convert(value: Any, node: dict[str, Any], path: str, unknown: list[str]) -> Any:
    """``value`` shaped as the feature of ``node``: free-form values as JSON strings; keys the schema does not
    declare are collected in ``unknown``."""
    if value is None:
        return None
    if _feature(node) is None:
        return dumps(value)
    types = _types(node)
    if types == ["object"]:
        props = node["properties"]
        unknown += [f"{path}.{k}" for k in value if k not in props]
        return {k: _convert(value.get(k), sub, f"{path}.{k}", unknown) for k, sub in props.items()}
    if types == ["array"]:
        return [_convert(v, node["items"], f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    if types == ["number"]:
        return float(value)
    return value


def to_row(entry: dict[str, Any], split: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The data set's row of an entry, or ``(None, reason)`` when the entry cannot be stored as it is."""
    errors = record_errors(entry, "entry")
    if "split" in entry:
        errors.append("split: the entry already has a split field")
    if errors:
        return None, "invalid-entry: " + "; ".join(errors)[:300]
    unknown: list[str] = []
    row = _convert({**entry, "split": split}, {"type": "object", "properties": schema["properties"]}, "", unknown)
    if unknown:
        return None, "not-in-schema: " + ", ".join(p.lstrip(".") for p in unknown)[:300]
    return row, None


# --- what the card says (every number from the rows and the batch reports) -----------------------------------


class Stats:
    """Counts over the rows written, by every key the card shows."""

    def __init__(self) -> None:
        self.c: dict[str, Counter] = {k: Counter() for k in ("split", "batch", "stage", "model", "rounds",
                                                              "language", "source", "prompts", "identity",
                                                              "fingerprint", "aiev_version")}  # fmt: skip

    def add(self, row: dict[str, Any]) -> None:
        prov = json.loads(row["provenance"]) if row["provenance"] else {}
        seed = prov.get("seed") if isinstance(prov.get("seed"), dict) else {}
        identity = prov.get("model_identity") if isinstance(prov.get("model_identity"), dict) else {}
        s, b = row["split"], row["batch"]
        self.c["split"][s] += 1
        self.c["batch"][(b, s)] += 1
        self.c["stage"][(row["stage"], s)] += 1
        self.c["model"][(b, row["stage"], row["model"], s)] += 1
        self.c["rounds"][(row["rounds"], s)] += 1
        self.c["language"][(row["language"] or "unrecorded", s)] += 1
        self.c["source"][(seed.get("source") or "unrecorded", s)] += 1
        self.c["prompts"][(b, prov.get("mode") or "unrecorded", prov.get("prompts_sha256") or "unrecorded")] += 1
        self.c["identity"][(b, row["model"], identity.get("sha256") or "unrecorded")] += 1
        self.c["fingerprint"][(b, prov.get("fingerprint") or "unrecorded")] += 1
        self.c["aiev_version"][prov.get("aiev_version") or "unrecorded"] += 1

    def table(self, name: str, *keys: str) -> list[dict[str, Any]]:
        """Counter ``name`` as rows: its key's parts named ``keys``; a trailing ``split`` part is spread into
        ``train``/``test``/``total`` columns."""
        counter = self.c[name]
        split_last = keys[-1] == "split"
        rows: dict[tuple, dict[str, Any]] = {}
        for key, n in counter.items():
            key = key if isinstance(key, tuple) else (key,)
            head = key[:-1] if split_last else key
            row = rows.setdefault(head, {**dict(zip(keys, head, strict=False)), **({s: 0 for s in SPLITS}
                                                                                  if split_last else {})})  # fmt: skip
            if split_last:
                row[key[-1]] += n
                row["total"] = sum(row[s] for s in SPLITS)
            else:
                row["entries"] = n
        return [rows[k] for k in sorted(rows, key=lambda k: tuple(_order(x) for x in k))]


def _order(x: Any) -> tuple[int, Any]:
    """Sort numbers as numbers, then strings, then nulls."""
    if isinstance(x, int | float) and not isinstance(x, bool):
        return (0, x)
    return (1, str(x)) if x is not None else (2, "")


def config_sha256(cfg: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces, defaults filled) of :data:`PROVENANCE_SECTIONS`."""
    blob = json.dumps({k: cfg.get(k) for k in PROVENANCE_SECTIONS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


#: Licences of seed sets this workflow knows (hub name, or source type for stdlib).
KNOWN_LICENSES = {
    "ise-uiuc/Magicoder-OSS-Instruct-75K": "mit",
    "ise-uiuc/Magicoder-Evol-Instruct-110K": "apache-2.0",
    "stdlib": "psf-2.0",
}


def seed_licenses(sources: list[dict[str, Any]], configured: dict[str, str]) -> list[dict[str, Any]]:
    """Each configured seed source with its licence: ``dataset.seed_licenses``, else a known one, else unknown.
    A hub set pinned to a ``revision`` gets no known default: a set's licence can change between revisions
    (Magicoder-Evol-Instruct-110K was CC-BY-NC-4.0 before 28 Dec 2023), so the pinned one must be stated."""
    out = []
    for src in sources:
        known = KNOWN_LICENSES.get(src.get("dataset") or "") or KNOWN_LICENSES.get(src["type"])
        if configured.get(src["name"]):
            lic, origin = configured[src["name"]], "config"
        elif known and src.get("revision"):
            pinned = f"revision {src['revision']} pinned"
            lic, origin = f"unknown ({pinned}: set dataset.seed_licenses.{src['name']})", "unknown"
        elif known:
            lic, origin = known, "known default"
        else:
            lic, origin = f"unknown (set dataset.seed_licenses.{src['name']})", "unknown"
        where = src.get("dataset") or src.get("path") or src["type"]
        out.append({"name": src["name"], "type": src["type"], "from": where, "revision": src.get("revision"),
                    "license": lic, "license_from": origin})  # fmt: skip
    return out


def provenance(cfg: dict[str, Any], batches: list[dict[str, Any]], stats: Stats) -> dict[str, Any]:
    from aiev.llm.agents import MODES, load_prompts, prompts_sha256

    sb = cfg["sandbox"]
    image = Path(sb["image"])
    recorded = [r for r in stats.table("prompts", "batch", "mode", "sha256") if r["sha256"] != "unrecorded"]
    return {
        "aiev_version": __version__,
        "entries_aiev_version": stats.table("aiev_version", "version"),
        "config_sha256": config_sha256(cfg),
        "config_sections": list(PROVENANCE_SECTIONS),
        "prompts": stats.table("prompts", "batch", "mode", "sha256"),
        "prompts_recorded": bool(recorded),
        # what this aiev ships, to compare with (and to stand in when no entry recorded its templates)
        "prompts_shipped": {m: prompts_sha256(load_prompts(m)) for m in MODES},
        "generating_models": stats.table("identity", "batch", "model", "sha256"),
        "evaluated_models": [
            {
                "batch": b["batch"],
                "role": role,
                "model": (b["stage_record"].get(role) or {}).get("model"),
                "sha256": ((b["stage_record"].get(role) or {}).get("identity") or {}).get("sha256"),
            }
            for b in batches
            for role in ("teacher", "student")
            if b["stage_record"].get(role)
        ],
        "fingerprints": stats.table("fingerprint", "batch", "fingerprint"),
        "sandbox": {
            "backend": sb["backend"],
            "image": sb["image"],
            "image_sha256": sha256_file(image) if image.is_file() else None,
        },
        "seed_sources": seed_licenses(cfg["seeds"]["sources"], cfg["dataset"]["seed_licenses"]),
    }


def test_checks(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """What aiev check-tests did over the batches, from each batch's test-check report."""
    reps = [b["checks"] for b in batches if b["checks"]]
    removed: dict[str, int] = {}
    would: dict[str, int] = {}
    scores: list[float] = []
    for rep in reps:
        for k, v in (rep.get("removed_by_reason") or {}).items():
            removed[k] = removed.get(k, 0) + v
        for k, v in (rep.get("would_remove_by_reason") or {}).items():
            would[k] = would.get(k, 0) + v
        scores += rep.get("mutation_scores") or []
    return {
        "modes": sorted({r.get("mode") for r in reps}),
        "entries": sum(r.get("entries") or 0 for r in reps),
        "removed": sum(r.get("removed") or 0 for r in reps),
        "removed_by_reason": {k: v for k, v in removed.items() if v},
        "would_remove_by_reason": {k: v for k, v in would.items() if v},
        "mean_mutation_score": round(sum(scores) / len(scores), 4) if scores else None,
        "batches_without_report": [b["batch"] for b in batches if not b["checks"]],
    }


def decontamination(batches: list[dict[str, Any]]) -> dict[str, Any]:
    """Per benchmark over the batches, from each batch's decontamination report."""
    per: dict[str, dict[str, Any]] = {}
    for b in batches:
        rep = b["decontam"]
        for name, r in (rep.get("benchmarks") or {}).items():
            row = per.setdefault(name, {"benchmark": name, "snippets": r.get("snippets"), "removed": 0,
                                        "batches": 0, "sources": set()})  # fmt: skip
            row["removed"] += r.get("removed") or 0
            row["batches"] += 1
            row["sources"].update(r.get("sources") or [])
    rules = sorted({(b["decontam"].get("metric"), b["decontam"].get("threshold")) for b in batches
                    if b["decontam"]}, key=str)  # fmt: skip
    return {
        "benchmarks": [{**r, "sources": sorted(r["sources"])} for r in per.values()],
        "removed": sum(((b["decontam"].get("rows") or {}).get("removed") or 0) for b in batches),
        "rules": [{"metric": m, "threshold": t} for m, t in rules],
        "batches_without_report": [b["batch"] for b in batches if not b["decontam"]],
    }


# --- writing ---------------------------------------------------------------------------------------------------


class _ShardWriter:
    """Rows of one split into numbered shards of both formats (named ``-of-N`` once N is known)."""

    def __init__(self, root: Path, split: str, shard_rows: int, feats: Any) -> None:
        self.root, self.split, self.shard_rows, self.feats = root, split, shard_rows, feats
        self.rows: list[dict[str, Any]] = []
        self.parts: list[tuple[Path, Path]] = []
        self.num_bytes = 0
        self.n = 0

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self.n += 1
        if len(self.rows) >= self.shard_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        i = len(self.parts)
        table = pa.Table.from_pylist(self.rows, schema=self.feats.arrow_schema)
        pq_path = self.root / "data" / f".{self.split}-{i:05d}.parquet.part"
        js_path = self.root / "jsonl" / f".{self.split}-{i:05d}.jsonl.part"
        pq.write_table(table, pq_path)
        with open(js_path, "w", encoding="utf-8") as fh:
            fh.writelines(dumps(r) + "\n" for r in self.rows)
        for p in (pq_path, js_path):
            fsync_path(p)
        self.num_bytes += table.nbytes
        self.parts.append((pq_path, js_path))
        self.rows = []

    def close(self) -> dict[str, list[str]]:
        if self.rows:
            self.flush()
        total = len(self.parts)
        files: dict[str, list[str]] = {"parquet": [], "jsonl": []}
        for i, (pq_path, js_path) in enumerate(self.parts):
            for kind, part, ext in (("parquet", pq_path, "parquet"), ("jsonl", js_path, "jsonl")):
                final = part.with_name(f"{self.split}-{i:05d}-of-{total:05d}.{ext}")
                part.rename(final)
                files[kind].append(str(final.relative_to(self.root)))
        return files


def _read_entries(path: Path, skips: SkipLog) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.exists():
        skips.add("missing-file", file=str(path))
        return
    yield from read_jsonl(path, skips)


def run(cfg: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``dataset`` step: the data set of the batches whose splits are ``paths.train`` and ``paths.test`` (each
    batch's train and test entries), with their generation, test-check and decontamination reports and stage
    records (``generate_reports``, ``check_reports``, ``decontam_reports``, ``stages``: each kind a list in batch
    order, absent or empty where the part is off: :mod:`aiev.report.batches`), written to the directory
    ``paths.output``; ``paths.report`` (default ``OUTPUT/dataset_report.json``) may lie inside it. ``cfg`` is the
    whole validated config."""
    from aiev.report import card

    kinds = ("train", "test", "generate_reports", "check_reports", "decontam_reports", "stages")
    train, test, generate_reports, check_reports, decontam_reports, stages = (kind_of(paths, k) for k in kinds)
    output, report = paths.output, getattr(paths, "report", None)

    dest = Path(output).resolve()
    report_path = Path(report).resolve() if report else dest / "dataset_report.json"
    handed = per_batch(train=train, test=test, generate_reports=generate_reports, check_reports=check_reports,
                       decontam_reports=decontam_reports, stages=stages)  # fmt: skip
    batches = batch_records(handed)
    schema, feats = entry_schema(), features()
    skips, stats = SkipLog(), Stats()
    with atomic_dir(dest) as tmp:
        written = write_splits(tmp, batches, cfg["dataset"]["shard_rows"], schema, feats, skips, stats)
        info = describe(cfg, output, tmp, batches, written, schema, skips, stats)
        with open(tmp / "README.md", "w", encoding="utf-8") as fh:
            fh.write(card.render(info, schema, feats))
        if report_path.parent == dest:
            write_json(tmp / report_path.name, info)
    if report_path.parent != dest:
        write_json(report_path, info)
    return info


def batch_records(handed: list[dict[str, Path | None]]) -> list[dict[str, Any]]:
    """Each batch's reports, read, beside its split files: what the card says of it."""
    return [
        {
            "batch": k,
            "splits": {split: files[split] for split in SPLITS},
            "generate": read(files["generate_reports"]),
            "decontam": read(files["decontam_reports"]),
            "checks": read(files["check_reports"]),
            "stage_record": read(files["stages"]),
        }
        for k, files in enumerate(handed)
    ]


def write_splits(
    tmp: Path, batches: list[dict[str, Any]], shard_rows: int, schema: dict[str, Any], feats: Any, skips: SkipLog,
    stats: Stats,
) -> dict[str, Any]:  # fmt: skip
    """Every batch's rows of each split into the shards under ``tmp`` (bad rows into ``skips``, counts into
    ``stats``): the shard files by format and split, the splits' sizes, and each batch's rows per split."""
    (tmp / "data").mkdir()
    (tmp / "jsonl").mkdir()
    per_batch_rows = {b["batch"]: {"batch": b["batch"], "train": 0, "test": 0} for b in batches}
    files: dict[str, dict[str, list[str]]] = {"parquet": {}, "jsonl": {}}
    num_bytes = {}
    for split in SPLITS:
        writer = _ShardWriter(tmp, split, shard_rows, feats)
        for b in batches:
            path = b["splits"][split]
            if path is None:  # not handed over: absent, whatever lies on disk
                skips.add("missing-file", batch=b["batch"], split=split)
                continue
            for line, entry in _read_entries(path, skips):
                row, reason = to_row(entry, split, schema)
                if row is None:
                    skips.add(reason or "invalid-entry", file=str(path), line=line, id=entry.get("id"))
                    continue
                writer.add(row)
                stats.add(row)
                per_batch_rows[b["batch"]][split] += 1
        made = writer.close()
        for kind in files:
            files[kind][split] = made[kind]
        num_bytes[split] = writer.num_bytes
    return {"files": files, "num_bytes": num_bytes, "per_batch": list(per_batch_rows.values())}


def describe(
    cfg: dict[str, Any], output: str | Path, tmp: Path, batches: list[dict[str, Any]], written: dict[str, Any],
    schema: dict[str, Any], skips: SkipLog, stats: Stats,
) -> dict[str, Any]:  # fmt: skip
    """``dataset_report.json``, which the card renders: the counts, files and sizes of what was written under
    ``tmp``, its statistics, the batch reports' test checks and decontamination, provenance, the skipped rows."""
    files = written["files"]
    return {
        "output": str(output),
        "entries": sum(stats.c["split"].values()),
        "train": stats.c["split"]["train"],
        "test": stats.c["split"]["test"],
        "batches": written["per_batch"],
        "shard_rows": cfg["dataset"]["shard_rows"],
        "files": files,
        "num_bytes": written["num_bytes"],
        "download_size": {
            kind: sum((tmp / f).stat().st_size for fs in files[kind].values() for f in fs) for kind in files
        },
        "json_fields": json_fields(schema),
        "stats": {
            "by_batch": _by_batch(batches, stats),
            "by_stage": stats.table("stage", "stage", "split"),
            "by_model": stats.table("model", "batch", "stage", "model", "split"),
            "by_rounds": stats.table("rounds", "rounds", "split"),
            "by_language": stats.table("language", "language", "split"),
            "by_seed_source": stats.table("source", "source", "split"),
        },
        "test_checks": test_checks(batches),
        "decontamination": decontamination(batches),
        "provenance": provenance(cfg, batches, stats),
        "license": cfg["dataset"]["license"] or "unknown",
        "bad": len(skips),
        "bad_by_reason": skips.counts(),
        "bad_rows": skips.rows,
    }


def _by_batch(batches: list[dict[str, Any]], stats: Stats) -> list[dict[str, Any]]:
    out = []
    for b in batches:
        k = b["batch"]
        out.append({
            "batch": k,
            "stage": b["stage_record"].get("stage") or b["generate"].get("stage"),
            "generated": b["generate"].get("passed"),
            "decontam_removed": (b["decontam"].get("rows") or {}).get("removed"),
            "train": stats.c["batch"][(k, "train")],
            "test": stats.c["batch"][(k, "test")],
            "total": stats.c["batch"][(k, "train")] + stats.c["batch"][(k, "test")],
        })  # fmt: skip
    return out
