"""The ``merge-dialogues`` step: a batch's shards put together in shard order (= batch order), with their usage
summed and priced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiev.io import read_records, write_json, write_jsonl
from aiev.llm.client import cost_usd
from aiev.runtime import Tally


def summarize_usage(entries: list[dict[str, Any]], prices: dict[str, dict[str, float]]) -> dict[str, Any]:
    total = {
        "entries": len(entries),
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": 0.0,
    }
    by_model: dict[str, dict[str, int]] = {}
    for e in entries:
        m = by_model.setdefault(e["model"], {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0})
        for k in ("requests", "prompt_tokens", "completion_tokens"):
            total[k] += e["usage"][k]
            m[k] += e["usage"][k]
    for model, m in by_model.items():
        total["cost_usd"] += cost_usd(prices, model, m["prompt_tokens"], m["completion_tokens"])
    total["cost_usd"] = round(total["cost_usd"], 6)
    total["by_model"] = by_model
    return total


def run(llm: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``merge-dialogues`` step: concatenate shard outputs in shard order (= batch order) and sum their
    usage, priced by ``llm.prices`` (``paths``: ``shard``, each shard's (dialogues, rejects, report);
    ``dialogues``, ``rejects``, ``usage``)."""
    prices = llm["prices"]
    passed: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    reports = []
    for d, r, rep in paths.shard:
        passed.extend(read_records(d))
        failed.extend(read_records(r))
        reports.append(json.loads(Path(rep).read_text(encoding="utf-8")))
    write_jsonl(paths.dialogues, passed)
    write_jsonl(paths.rejects, failed)
    summary = summarize_usage(passed + failed, prices)
    write_json(paths.usage, summary)
    rejected_by_reason = dict(Tally().count(e["reason"] for e in failed))
    rounds = Tally().count(str(e["rounds"]) for e in passed)
    info = {
        "passed": len(passed),
        "rejected": len(failed),
        "pass_rate": round(len(passed) / max(1, len(passed) + len(failed)), 4),
        "passed_by_rounds": dict(sorted(rounds.items(), key=lambda kv: int(kv[0]))),
        "rejected_by_reason": rejected_by_reason,
        "bad_seeds": [row for rep in reports for row in rep.get("bad_seeds", [])],
        "stale_stores": [rep["stale_store"] for rep in reports if rep.get("stale_store")],
        "rounds": sum(e["rounds"] for e in passed),
        "rounds_multi_round_entries": sum(e["rounds"] for e in passed if e["rounds"] > 1),
        "stage": reports[0].get("stage") if reports else None,
        "shard_runs": [rep.get("this_run", {}) for rep in reports],
        "usage": summary,
    }
    return info
