"""The run summary: per batch, what went in, what came out, who generated it and who won; the totals beside the
paper's; and a projection from the batches run so far to the whole seed set (tokens, cost, wall time), so the
cost of the full run is known before it is paid.

Reads the reports the other steps wrote for each batch, each kind handed over as its own list in batch order
(generation, usage, test checks, decontamination, split, training, the teacher's and the student's evaluation,
the stage record: :mod:`aiev.report.batches`); a kind that is absent (a part switched off) leaves its fields
null. Writes ``summary.json`` and a Markdown rendering, ``summary.md``.

The projection's model (also written into the summary, with its inputs):

* tokens, requests and cost scale with the number of seeds (per-seed means of the batches run);
* a dialogue occupies one request slot for ``S`` seconds, measured as the sum over generation jobs of wall time
  times the job's concurrency, divided by the dialogues the jobs ran; ``J`` jobs of ``C`` requests in flight each
  then generate ``N`` seeds in ``N * S / (J * C)`` seconds. This assumes the endpoint answers as fast at the
  projected load as it did here: with a shared or rate-limited endpoint it is a lower bound;
* batches run one after another (the model of batch k+1 is decided by batch k), and each adds the training and
  evaluation time measured per batch (incremental training; cumulative training grows with k).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from aiev.io import atomic_open, read_json_if_exists
from aiev.report.batches import kind_of, per_batch, read
from aiev.suites import SUITES, family

#: The paper's totals (AutoCoder, AIEV-INSTRUCT): seeds before dedup, entries, rounds, rounds of multi-round
#: entries, entries removed by decontamination.
PAPER = {"seeds": 186_000, "entries": 169_000, "rounds": 241_000, "rounds_multi_round_entries": 150_000,
         "decontam_removed": 113}  # fmt: skip


#: The paper's greedy pass@1 (%): Table 1 (HumanEval(+), MBPP(+)), Table 2 (MultiPL-E), Table 3 (DS-1000 overall).
PAPER_BENCHMARKS = {
    "AutoCoder-33B": {"humaneval": 90.9, "humaneval+": 78.0, "mbpp": 82.5, "mbpp+": 70.6, "multipl-e-java": 61.4,
                      "multipl-e-js": 68.9, "multipl-e-cpp": 68.9, "multipl-e-php": 63.4, "multipl-e-swift": 53.8,
                      "multipl-e-rs": 60.8, "ds1000": 47.2},
    "AutoCoder-S-6.7B": {"humaneval": 78.7, "humaneval+": 72.0, "mbpp": 79.4, "mbpp+": 69.8, "ds1000": 37.1},
}  # fmt: skip
#: The summary's benchmark columns, in the paper's order.
#: HumanEval and MBPP have a base and a plus (evalplus) column each.
BENCHMARK_COLUMNS = [c for s in SUITES for c in ((s, f"{s}+") if family(s) == "evalplus" else (s,))]


def _pct(value: float | None) -> float | None:
    return round(100 * value, 1) if value is not None else None


def benchmark_table(paths: list[str]) -> dict[str, dict[str, Any]]:
    """MODEL -> {column: pass@1 in percent}, from results/benchmarks/MODEL/SUITE.json; what was scored in part
    (``benchmark.limit``, DS-1000 libraries that do not import) or skipped is noted beside it."""
    table: dict[str, dict[str, Any]] = {}
    for p in paths:
        r = json.loads(Path(p).read_text(encoding="utf-8"))
        row = table.setdefault(Path(p).parent.name, {})
        suite = r["suite"]
        if "base_pass@1" in r:
            row[suite], row[suite + "+"] = _pct(r["base_pass@1"]), _pct(r["plus_pass@1"])
        else:
            row[suite] = _pct(r.get("pass@1"))
        if r.get("skipped"):
            row.setdefault("notes", []).append(f"{suite} skipped: {r['skipped']}")
        elif r.get("complete") is False:
            left = ", ".join(r["skipped_libraries"])
            row.setdefault("notes", []).append(f"{suite} on {r['scored']}/{r['n']} problems (no {left})")
        if r.get("flaky"):
            row.setdefault("notes", []).append(f"{suite}: {len(r['flaky'])} task(s) changed verdict when re-scored")
        if r.get("limit"):
            row[f"{suite}_tasks"] = r["n"]
    return table


def batch_row(k: int, files: dict[str, Path | None]) -> dict[str, Any]:
    """Batch ``k``'s row, from its reports by kind (the keyword arguments of :func:`run`; None: absent)."""
    gen = read(files.get("generate_reports"))
    usage = read(files.get("usage"))
    dec = read(files.get("decontam_reports"))
    chk = read(files.get("check_reports"))
    split = read(files.get("split_reports"))
    train = read(files.get("train_reports"))
    teacher = read(files.get("teacher_evals"))
    student = read(files.get("student_evals"))
    stage = read(files.get("stages"))
    runs = gen.get("shard_runs") or []
    return {
        "batch": k,
        "stage": stage.get("stage") or gen.get("stage"),
        "seeds": (gen.get("passed") or 0) + (gen.get("rejected") or 0) if gen else None,
        "passed": gen.get("passed"),
        "passed_by_rounds": gen.get("passed_by_rounds"),
        "rejected": gen.get("rejected"),
        "rejected_by_reason": gen.get("rejected_by_reason"),
        "rounds": gen.get("rounds"),
        "rounds_multi_round_entries": gen.get("rounds_multi_round_entries"),
        "check_removed": chk.get("removed"),
        "check_removed_by_reason": {k: v for k, v in (chk.get("removed_by_reason") or {}).items() if v} or None,
        "check_would_remove": sum((chk.get("would_remove_by_reason") or {}).values()) if chk else None,
        "mean_mutation_score": chk.get("mean_mutation_score"),
        "decontam_removed": (dec.get("rows") or {}).get("removed"),
        "kept": (dec.get("rows") or {}).get("kept"),
        "train": split.get("train"),
        "test": split.get("test"),
        "trained": train.get("trained"),
        "train_steps": train.get("steps"),
        "final_loss": train.get("final_loss"),
        "teacher_pass_at_1": teacher.get("pass_at_1"),
        "student_pass_at_1": student.get("pass_at_1"),
        "test_n": teacher.get("n"),
        "next": stage.get("next"),
        "reason": stage.get("reason"),
        "requests": usage.get("requests"),
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cost_usd": usage.get("cost_usd"),
        "prompt_cache": prompt_cache(runs),
        "wall_seconds": {
            "generate": max((r.get("wall_seconds") or 0 for r in runs), default=None),
            "train": train.get("wall_seconds"),
            "evaluate_teacher": teacher.get("wall_seconds"),
            "evaluate_student": student.get("wall_seconds"),
        },
        "_shard_runs": runs,
    }


def prompt_cache(runs: list[dict[str, Any]]) -> float | None:
    """The share of a batch's prompt tokens its engines served from their prompt caches, by the engines' own
    counts (aiev's llama.cpp server: ``engine_cache``; OpenAI, vLLM: ``cached_prompt_tokens``); None where no
    engine said."""
    cached = total = 0
    for run in runs:
        engine = run.get("engine_cache")
        if engine:
            cached += engine.get("prompt_tokens_cached") or 0
            total += engine.get("prompt_tokens") or 0
        elif run.get("cached_prompt_tokens"):
            cached += run["cached_prompt_tokens"]
            total += run.get("prompt_tokens") or 0
    return round(cached / total, 3) if total else None


def _sum(rows: list[dict[str, Any]], key: str) -> int | float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) if vals else None


def project(rows: list[dict[str, Any]], seeds_total: int, batch_size: int, jobs: int, conc: int) -> dict[str, Any]:
    """The projection (see the module docstring) from the batches in ``rows`` to ``seeds_total`` seeds."""
    done = _sum(rows, "seeds") or 0
    if not done:
        return {"note": "no batch was generated yet: nothing to project from"}
    slot_seconds = sum(
        (r.get("wall_seconds") or 0) * (r.get("concurrency") or 1) for b in rows for r in b["_shard_runs"]
    )
    dialogues = sum(r.get("dialogues") or 0 for b in rows for r in b["_shard_runs"])
    per_seed = {k: (_sum(rows, k) or 0) / done for k in ("requests", "prompt_tokens", "completion_tokens", "cost_usd")}
    s = slot_seconds / dialogues if dialogues else None
    gen_s = seeds_total * s / (jobs * conc) if s is not None else None
    batches = math.ceil(seeds_total / batch_size)
    loop = [
        sum(v or 0 for k, v in r["wall_seconds"].items() if k != "generate")
        for r in rows
        if r["wall_seconds"].get("train") is not None
    ]
    per_batch_loop = sum(loop) / len(loop) if loop else 0.0
    total_s = gen_s + batches * per_batch_loop if gen_s is not None else None
    passed = _sum(rows, "passed") or 0
    return {
        "seeds": seeds_total,
        "from_seeds": done,
        "batches": batches,
        "generation_jobs": jobs,
        "concurrency": conc,
        "entries": round(seeds_total * passed / done),
        "requests": round(seeds_total * per_seed["requests"]),
        "prompt_tokens": round(seeds_total * per_seed["prompt_tokens"]),
        "completion_tokens": round(seeds_total * per_seed["completion_tokens"]),
        "cost_usd": round(seeds_total * per_seed["cost_usd"], 2),
        "seconds_per_dialogue_slot": round(s, 3) if s is not None else None,
        "generation_hours": round(gen_s / 3600, 2) if gen_s is not None else None,
        "loop_seconds_per_batch": round(per_batch_loop, 1),
        "wall_hours": round(total_s / 3600, 2) if total_s is not None else None,
        "assumes": "the endpoint answers as fast at this load as measured here; batches run one after another",
    }


SUMMARY_KINDS = ("generate_reports", "usage", "check_reports", "decontam_reports", "split_reports", "train_reports",
                 "teacher_evals", "student_evals", "stages")  # fmt: skip


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``summary`` step, with the ``summary`` section (the projection's settings): each batch's reports and
    stage record by kind (:data:`SUMMARY_KINDS`, each a list in batch order, absent or empty where the part is off:
    :mod:`aiev.report.batches`), ``paths.dedup_report``, ``batches_report``, ``dataset_report``, ``benchmarks``;
    the summary is the step's report (``paths.output``), its Markdown ``paths.markdown``."""
    handed = per_batch(**{k: kind_of(paths, k) for k in SUMMARY_KINDS})
    dedup_report, batches_report = paths.dedup_report, paths.batches_report
    dataset_report, benchmarks = getattr(paths, "dataset_report", None), getattr(paths, "benchmarks", None)
    rows = [batch_row(k, files) for k, files in enumerate(handed)]
    dedup = read_json_if_exists(Path(dedup_report)) or {}
    batches = read_json_if_exists(Path(batches_report)) or {}
    proj = section["projection"]
    seeds_total = proj["seeds"] or dedup.get("kept") or 0
    totals = {
        k: _sum(rows, k)
        for k in ("seeds", "passed", "rejected", "rounds", "rounds_multi_round_entries", "check_removed",
                  "decontam_removed", "kept",
                  "train", "test", "requests", "prompt_tokens", "completion_tokens", "cost_usd")
    }  # fmt: skip
    dataset = read_json_if_exists(Path(dataset_report)) if dataset_report else None
    info = {
        "seeds_after_dedup": dedup.get("kept"),
        "batch_size": batches.get("batch_size"),
        "batches_run": len(rows),
        "batches": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "totals": totals,
        "dataset_entries": dataset.get("entries") if dataset else None,
        "paper": PAPER,
        "benchmarks": benchmark_table(benchmarks or []),
        "paper_benchmarks": PAPER_BENCHMARKS,
        "projection": project(
            rows, seeds_total, batches.get("batch_size") or 1, proj["generation_jobs"], proj["concurrency"]
        ),
    }
    with atomic_open(paths.markdown) as fh:
        fh.write(render_markdown(info))
    return info


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}".rstrip("0").rstrip(".") if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) or "–"
    return str(v)


def render_markdown(info: dict[str, Any]) -> str:
    lines = ["# Run summary", ""]
    lines += ["## Batches", ""]
    cols = ["batch", "stage", "seeds", "passed", "passed_by_rounds", "rejected_by_reason", "check_removed_by_reason",
            "mean_mutation_score", "decontam_removed", "train", "test", "teacher_pass_at_1", "student_pass_at_1",
            "next", "prompt_tokens", "prompt_cache", "completion_tokens", "cost_usd"]  # fmt: skip
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for b in info["batches"]:
        lines.append("| " + " | ".join(_fmt(b.get(c)) for c in cols) + " |")
    lines += ["", "Why each stage was chosen:", ""]
    lines += [f"- batch {b['batch']}: {b.get('reason') or '–'}" for b in info["batches"]]
    lines += ["", "## Totals beside the paper's", "", "| | this run | paper |", "|---|---|---|"]
    t, p = info["totals"], info["paper"]
    for key, paper_key in (("seeds", "seeds"), ("passed", "entries"), ("rounds", "rounds"),
                           ("rounds_multi_round_entries", "rounds_multi_round_entries"),
                           ("decontam_removed", "decontam_removed")):  # fmt: skip
        lines.append(f"| {key} | {_fmt(t.get(key))} | {_fmt(p[paper_key])} |")
    if info.get("benchmarks"):
        scored = {c for r in info["benchmarks"].values() for c in r}
        cols = [c for c in BENCHMARK_COLUMNS if c in scored]
        lines += ["", "## Benchmarks (greedy pass@1, %)", "", "| model | " + " | ".join(cols) + " |",
                  "|" + "---|" * (len(cols) + 1)]  # fmt: skip
        rows = list(info["benchmarks"].items()) + [(f"{k} (paper)", v) for k, v in info["paper_benchmarks"].items()]
        for model, row in rows:
            lines.append(f"| {model} | " + " | ".join(_fmt(row.get(c)) for c in cols) + " |")
        subsets = {m: {k: v for k, v in r.items() if k.endswith("_tasks")} for m, r in info["benchmarks"].items()}
        if any(subsets.values()):
            lines += ["", f"Scored on a subset (benchmark.limit): {subsets}"]
        notes = [f"- {m}: {n}" for m, r in info["benchmarks"].items() for n in r.get("notes", [])]
        if notes:
            lines += ["", *notes]
    pr = info["projection"]
    lines += ["", "## Projection to the whole seed set", ""]
    if "note" in pr:
        lines.append(pr["note"])
    else:
        lines += [f"- {k}: {_fmt(v)}" for k, v in pr.items()]
    return "\n".join(lines) + "\n"
