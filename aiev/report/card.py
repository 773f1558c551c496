"""The dataset card (``README.md`` of the released data set): a YAML header that the Hugging Face hub and
``datasets`` read (licence, task, size, the one config and its files, features and split sizes) and a Markdown
body. Every number in it comes from the ``info`` the ``dataset`` step computed from the rows it wrote and from
the batch reports (aiev/report/dataset.py); nothing here is typed in.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Hugging Face's size categories: (upper bound, label).
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]  # fmt: skip


def size_category(n: int) -> str:
    return next((label for bound, label in SIZES if n < bound), "n>1B")


def header(info: dict[str, Any], feats: Any) -> dict[str, Any]:
    """The card's YAML header. One config, ``default``, the parquet shards: ``datasets`` picks one builder for all
    configs of a directory (from the first config's files, huggingface/datasets#7101), so the JSONL shards cannot
    be a second config; they load with the ``json`` builder (docs/dataset.md)."""
    languages = sorted({r["language"] for r in info["stats"]["by_language"] if r["language"] != "unrecorded"})
    splits = [s for s, files in info["files"]["parquet"].items() if files]  # an empty split has no shard
    return {
        "pretty_name": "AIEV-INSTRUCT code-interpreter dialogues",
        "license": info["license"],
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": ["code", "synthetic", "aiev-instruct", "autocoder", "code-interpreter", *languages],
        "size_categories": [size_category(info["entries"])],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in splits]}],
        "dataset_info": {
            "config_name": "default",
            "features": feats._to_yaml_list(),
            "splits": [{"name": s, "num_bytes": info["num_bytes"][s], "num_examples": info[s]} for s in splits],
            "download_size": info["download_size"]["parquet"],
            "dataset_size": sum(info["num_bytes"].values()),
        },
    }  # fmt: skip


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list):
        return ", ".join(_cell(x) for x in v) or "–"
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(rows: list[dict[str, Any]], cols: list[str], names: list[str] | None = None) -> list[str]:
    out = ["| " + " | ".join(names or cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return [*out, ""]


def _item(feature: Any) -> Any:
    """The item feature of a list feature (``[x]``, or datasets' ``List``/``Sequence``), else ``None``."""
    if isinstance(feature, list):
        return feature[0]
    return getattr(feature, "feature", None) if type(feature).__name__ in ("List", "LargeList", "Sequence") else None


def _type(feature: Any) -> str:
    if feature is None:
        return "string (JSON)"
    if isinstance(feature, dict):
        return "struct"
    if _item(feature) is not None:
        return f"list of {_type(_item(feature))}"
    return feature.dtype


def schema_rows(schema: dict[str, Any], json_fields: list[str], feats: Any) -> list[dict[str, Any]]:
    """One row per field (nested ones as ``messages[].role``): its type in the data set, from the entry schema;
    ``null``: the field may be null (nullable, or not required: a row without it holds null)."""
    rows: list[dict[str, Any]] = []

    def walk(props: dict[str, Any], required: list[str], feat: dict[str, Any], prefix: str) -> None:
        for key, node in props.items():
            path = f"{prefix}{key}"
            f = None if path in json_fields else feat.get(key)
            t = node.get("type")
            nullable = (isinstance(t, list) and "null" in t) or None in node.get("enum", []) or key not in required
            desc = " ".join(str(node.get("description", "")).split())
            rows.append({"field": f"`{path}`", "type": _type(f), "null": "yes" if nullable else "",
                         "description": desc})  # fmt: skip
            if isinstance(f, dict):
                walk(node["properties"], node.get("required", []), f, f"{path}.")
            elif isinstance(_item(f), dict):
                items = node["items"]
                walk(items["properties"], items.get("required", []), _item(f), f"{path}[].")

    walk(schema["properties"], schema.get("required", []), dict(feats), "")
    return rows


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "–"


def body(info: dict[str, Any], schema: dict[str, Any], feats: Any) -> list[str]:
    """The card's Markdown, section by section."""
    return [*_intro(info), *_counts(info), *_seeds(info), *_test_checks(info), *_decontamination(info),
            *_provenance(info), *_schema_and_skips(info, schema, feats)]  # fmt: skip


def _intro(info: dict[str, Any]) -> list[str]:
    """What the data set is and how to load it."""
    lines = ["# AIEV-INSTRUCT code-interpreter dialogues", ""]
    lines += [
        "Multi-turn dialogues between a questioner, a programmer and a code interpreter, generated with",
        "AIEV-INSTRUCT (AutoCoder, arXiv:2405.14906) by the `aiev` workflow: every entry is a problem, a solution",
        "and unit tests whose execution passed in a sandbox, with every turn of the dialogue that led there.",
        "`train` holds the training entries, `test` each batch's held-out pass@1 tasks.",
        "",
        "```python",
        "from datasets import load_dataset, load_dataset_builder",
        "ds = load_dataset(DIR)  # the parquet shards (data/): DatasetDict with train and test",
        "# the same rows from the JSON Lines shards (jsonl/), with the same features:",
        "features = load_dataset_builder(DIR).info.features",
        'files = {s: f"{DIR}/jsonl/{s}-*.jsonl" for s in ("train", "test")}',
        'js = load_dataset("json", data_files=files, features=features)',
        "```",
        "",
        f"Fields stored as JSON strings (their shape is free): {', '.join(f'`{p}`' for p in info['json_fields'])}",
        "(`json.loads` them). Every number below was computed from the rows and the batch reports when the data",
        "set was written.",
        "",
    ]
    return lines


def _counts(info: dict[str, Any]) -> list[str]:
    """Entries per split, batch, stage and model, rounds and code language."""
    st, n = info["stats"], info["entries"]
    lines = ["## Counts", ""]
    lines += table([{"split": s, "entries": info[s], "shards": len(info["files"]["parquet"][s])}
                    for s in ("train", "test")] + [{"split": "total", "entries": n}],
                   ["split", "entries", "shards"])  # fmt: skip
    lines += [f"Shards hold at most {info['shard_rows']:,} rows each.", "", "### Per batch", ""]
    lines += ["`generated`: entries that passed in generation; `decontam_removed`: removed as too similar to a",
              "benchmark; the rest were split into train and test.", ""]  # fmt: skip
    lines += table(st["by_batch"], ["batch", "stage", "generated", "decontam_removed", "train", "test", "total"])
    lines += ["### Per stage and generating model", ""]
    lines += table(st["by_stage"], ["stage", "train", "test", "total"])
    lines += table(st["by_model"], ["batch", "stage", "model", "train", "test", "total"])
    lines += [
        "### Rounds",
        "",
        "Executions of the programmer's code until the tests passed (1 = at the first try).",
        "",
    ]
    lines += table([{**r, "share": _pct(r["total"], n)} for r in st["by_rounds"]],
                   ["rounds", "train", "test", "total", "share"])  # fmt: skip
    lines += ["### Code language", ""]
    lines += table(st["by_language"], ["language", "train", "test", "total"])
    return lines


def _seeds(info: dict[str, Any]) -> list[str]:
    """The seed sources, their licences and entries; the data set's own licence."""
    st, prov = info["stats"], info["provenance"]
    lines: list[str] = []
    lines += ["## Seeds and their licences", ""]
    seen = {r["source"]: r for r in st["by_seed_source"]}
    srcs = [{**s, "entries": (seen.get(s["name"]) or {}).get("total", 0)} for s in prov["seed_sources"]]
    srcs += [{"name": k, "entries": r["total"], "license": "unknown (not a configured source)"}
             for k, r in seen.items() if k not in {s["name"] for s in prov["seed_sources"]}]  # fmt: skip
    lines += table(srcs, ["name", "type", "from", "revision", "license", "license_from", "entries"],
                   ["source", "type", "from", "revision", "licence", "licence from", "entries"])  # fmt: skip
    lines += [f"The data set's own licence (`dataset.license`): {info['license']}. Generated text is also subject",
              "to the terms of the models that wrote it (Provenance).", ""]  # fmt: skip
    return lines


def _test_checks(info: dict[str, Any]) -> list[str]:
    """What the test checks removed and found."""
    lines: list[str] = []
    chk = info.get("test_checks") or {}
    lines += ["## Test checks", ""]
    if chk.get("modes"):
        why = ", ".join(f"{k} {v:,}" for k, v in chk["removed_by_reason"].items()) or "none"
        would = ", ".join(f"{k} {v:,}" for k, v in chk["would_remove_by_reason"].items()) or "none"
        mean = chk["mean_mutation_score"]
        lines += [f"Before decontamination every passing entry's tests were checked (`aiev check-tests`, mode "
                  f"{', '.join(chk['modes'])}; beyond the paper): {chk['entries']:,} entries, {chk['removed']:,} "
                  f"removed ({why}); found (removed or not): {would}. Mean mutation score (share of small faults "
                  f"put into a solution that its tests catch): {'–' if mean is None else f'{mean:.2f}'}. Each kept "
                  "entry's `quality` holds its figures.", ""]  # fmt: skip
    else:
        lines += ["The entries' tests were not checked beyond the dialogue's own verdict (check_tests.mode: off).", ""]
    if chk.get("batches_without_report"):
        lines += [f"Batches without a test-check report: {_cell(chk['batches_without_report'])}.", ""]
    return lines


def _decontamination(info: dict[str, Any]) -> list[str]:
    """What decontamination removed, per benchmark."""
    dec = info["decontamination"]
    lines: list[str] = []
    lines += ["## Decontamination", ""]
    rules = "; ".join(f"{r['metric']} similarity > {r['threshold']}" for r in dec["rules"]) or "no report"
    lines += [f"Entries whose code is too similar to a benchmark snippet were removed ({rules}): "
              f"{dec['removed']:,} in all.", ""]  # fmt: skip
    lines += table(dec["benchmarks"], ["benchmark", "snippets", "removed", "batches", "sources"])
    if dec["batches_without_report"]:
        lines += [f"Batches without a decontamination report: {_cell(dec['batches_without_report'])}.", ""]
    return lines


def _provenance(info: dict[str, Any]) -> list[str]:
    """Versions, config hash, sandbox, models, prompts and generation settings."""
    prov = info["provenance"]
    lines: list[str] = []
    lines += ["## Provenance", ""]
    lines += ["Each entry's `provenance` holds the prompting mode, the generating model's identity (its served "
              "name, its file's name, a SHA-256 over its files and their count: never a path of the machine that "
              "served it), the prompts' SHA-256, the sampling parameters, max_rounds, the seed record, the aiev "
              "version and the generation settings' fingerprint.", ""]  # fmt: skip
    lines += [f"- written by aiev {prov['aiev_version']}; the entries by aiev "
              + ", ".join(f"{r['version']} ({r['entries']:,})" for r in prov["entries_aiev_version"]),
              f"- config hash `{prov['config_sha256']}`: sha256 of the canonical JSON (sorted keys, no spaces,",
              f"  defaults filled) of the config sections {', '.join(prov['config_sections'])}",
              f"- sandbox: backend `{prov['sandbox']['backend']}`, image `{prov['sandbox']['image']}`"
              + (f" (sha256 `{prov['sandbox']['image_sha256']}`)" if prov["sandbox"]["image_sha256"]
                 else " (no such file where the data set was written: not hashed)"),
              ""]  # fmt: skip
    lines += ["### Generating models", "", "As each entry records it (identity: sha256 over the served files).", ""]
    lines += table(prov["generating_models"], ["batch", "model", "sha256", "entries"])
    if prov["evaluated_models"]:
        lines += ["Models scored on each batch's test split (stage.json):", ""]
        lines += table(prov["evaluated_models"], ["batch", "role", "model", "sha256"])
    lines += ["### Prompts", ""]
    if prov["prompts_recorded"]:
        lines += ["sha256 of the agents' prompt templates, as each entry records it:", ""]
    else:
        lines += ["No entry recorded the hash of its prompt templates; the hashes of the templates this aiev",
                  "ships (aiev/llm/prompts/) follow, computed when the data set was written.", ""]  # fmt: skip
    lines += table(prov["prompts"], ["batch", "mode", "sha256", "entries"])
    lines += [
        "Templates this aiev ships: " + ", ".join(f"{m} `{h}`" for m, h in prov["prompts_shipped"].items()) + ".",
        "",
    ]
    lines += ["### Generation settings", "", "Fingerprints of the settings that shaped the entries (the",
              "generation shard reports hold the settings themselves):", ""]  # fmt: skip
    lines += table(prov["fingerprints"], ["batch", "fingerprint", "entries"])
    return lines


def _schema_and_skips(info: dict[str, Any], schema: dict[str, Any], feats: Any) -> list[str]:
    """The fields of a row, and the rows not taken."""
    lines: list[str] = []
    lines += [
        "## Schema",
        "",
        "One row is an entry (aiev/schemas/entry.schema.yaml, docs/records.md) plus `split`.",
        "",
    ]
    lines += table(schema_rows(schema, info["json_fields"], feats), ["field", "type", "null", "description"])
    lines += ["## Skipped rows", ""]
    if info["bad"]:
        lines += [f"{info['bad']:,} row(s) of the split files were not taken (listed in dataset_report.json):", ""]
        lines += table([{"reason": k, "rows": v} for k, v in sorted(info["bad_by_reason"].items())],
                       ["reason", "rows"])  # fmt: skip
    else:
        lines += ["None: every row of the split files is here.", ""]
    return lines


def render(info: dict[str, Any], schema: dict[str, Any], feats: Any) -> str:
    head = yaml.safe_dump(header(info, feats), sort_keys=False, allow_unicode=True, width=120)
    return "---\n" + head + "---\n\n" + "\n".join(body(info, schema, feats)).rstrip("\n") + "\n"
