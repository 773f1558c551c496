"""Code-interpreter SFT formatting: golden files, masking invariants, the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from aiev.cli import main as aiev_main
from aiev.curate import format as fmt
from aiev.records import record_errors

GOLDEN = Path(__file__).parent / "golden"
CASES = ["format_single_round", "format_multi_round_pip"]
UPDATE = os.environ.get("AIEV_UPDATE_GOLDEN") == "1"  # rewrite the expected files after a deliberate change


def _load(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES)
def test_fixtures_are_valid_entries(case):
    assert record_errors(_load(f"{case}.input.json"), "entry") == []


@pytest.mark.parametrize("case", CASES)
def test_golden(case):
    got = fmt.format_entry(_load(f"{case}.input.json"), fmt.DEFAULT_TOKENS)
    path = GOLDEN / f"{case}.sft.json"
    if UPDATE:
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    assert got == json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", CASES)
def test_segments_invariants(case):
    entry = _load(f"{case}.input.json")
    rec = fmt.format_entry(entry, fmt.DEFAULT_TOKENS)
    roles = [m["role"] for m in rec["messages"]]
    assert roles == ["user", "assistant"] * entry["rounds"]
    for msg in rec["messages"]:
        assert msg["content"] == "".join(s["text"] for s in msg["segments"])
        assert all(s["text"] for s in msg["segments"])
        if msg["role"] == "user":
            assert not any(s["train"] for s in msg["segments"])
    executions = [m for m in entry["messages"] if m["role"] == "execution"]
    masked = "".join(s["text"] for m in rec["messages"] for s in m["segments"] if not s["train"])
    trained = "".join(s["text"] for m in rec["messages"] for s in m["segments"] if s["train"])
    for ex in executions:
        if ex.get("install") is None or ex["install"]["exit_code"] == 0:
            assert ex["content"] in masked and ex["content"] not in trained
    answers = [m["content"] for m in entry["messages"] if m["role"] == "assistant"]
    n_blocks = sum(a.count("```") // 2 for a in answers)
    assert trained.count("<|code_start|>") + trained.count("<|bash_start|>") == n_blocks
    assert trained.count("<|code_end|>") + trained.count("<|bash_end|>") == n_blocks
    assert rec["special_tokens"] == ["<|bash_start|>", "<|bash_end|>", "<|code_start|>", "<|code_end|>"]
    assert (rec["id"], rec["seed_id"]) == (entry["id"], entry["seed_id"])


def test_install_placement_and_custom_tokens():
    entry = _load("format_multi_round_pip.input.json")
    tokens = {"bash_start": "[B]", "bash_end": "[/B]", "code_start": "[C]", "code_end": "[/C]"}
    rec = fmt.format_entry(entry, tokens)
    first, second = rec["messages"][1]["segments"], rec["messages"][3]["segments"]
    # round 1: the install failed, so the program never ran: the failure follows the bash block
    assert first[0]["text"].endswith("pip install numpyy\n```[/B]") and first[0]["train"]
    assert first[1]["text"].startswith("\npip install failed") and not first[1]["train"]
    assert "exit code" not in "".join(s["text"] for s in first[2:] if not s["train"])
    # round 2: the install result after the bash block, the program's result after the last code block
    assert second[1] == {"text": "\npip install numpy: exit code 0\n" + _tail_lines(entry, 5), "train": False}
    assert second[-1]["text"].startswith("\nexit code 1\nstderr:\nTraceback") and not second[-1]["train"]
    assert second[-2]["text"].endswith("```[/C]")
    assert rec["special_tokens"] == ["[B]", "[/B]", "[C]", "[/C]"]


def _tail_lines(entry: dict, message: int) -> str:
    return "\n".join(entry["messages"][message]["install"]["stdout"].strip().splitlines()[-3:])


def test_execution_without_answer_is_rejected():
    entry = _load("format_single_round.input.json")
    entry["messages"] = [entry["messages"][0], entry["messages"][2]]
    with pytest.raises(fmt.FormatError):
        fmt.format_entry(entry, fmt.DEFAULT_TOKENS)


def test_cli(tmp_path, caplog):
    single = _load("format_single_round.input.json")
    multi = _load("format_multi_round_pip.input.json")
    failed = dict(single, id="failed:1", passed=False, reason="max_rounds", solution=None, tests=None)
    sneaky = dict(single, id="sneaky:1")
    sneaky["messages"] = [dict(single["messages"][0], content="Explain <|code_start|> please"), *single["messages"][1:]]
    lines = [json.dumps(single), json.dumps(failed), "[1, 2]", json.dumps({"id": "x"}), json.dumps(multi)]
    lines.append(json.dumps(sneaky))
    src = tmp_path / "train.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out, report = tmp_path / "sft.jsonl", tmp_path / "format.json"
    assert aiev_main(["format", "--input", str(src), "--output", str(out), "--report", str(report)]) == 0
    recs = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in recs] == ["stdlib:12", "oss:7"]
    assert recs[0] == json.loads((GOLDEN / "format_single_round.sft.json").read_text(encoding="utf-8"))
    rep = json.loads(report.read_text(encoding="utf-8"))
    assert (rep["formatted"], rep["not_passed"], rep["bad"]) == (2, 1, 3)
    assert rep["not_passed_ids"] == ["failed:1"]
    assert [r["line"] for r in rep["bad_rows"]] == [3, 4, 6]
    assert rep["bad_by_reason"] == {"not-an-object": 1, "invalid-entry": 1, "special-token-in-text": 1}
    assert rep["tokens"]["code_start"] == "<|code_start|>"
    assert rep["blocks"] == {"bash": 3, "code": 8}
    assert "3 bad rows" in caplog.text


def test_cli_config_tokens(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text((GOLDEN / "format_single_round.input.json").read_text(encoding="utf-8").replace("\n", "") + "\n")
    cfg = json.dumps({"format": {"tokens": {"code_start": "<CODE>", "code_end": "</CODE>"}}})
    out, report = tmp_path / "sft.jsonl", tmp_path / "r.json"
    assert (
        aiev_main(["format", "--config", cfg, "--input", str(src), "--output", str(out), "--report", str(report)]) == 0
    )
    rec = json.loads(out.read_text(encoding="utf-8"))
    assert rec["special_tokens"] == ["<|bash_start|>", "<|bash_end|>", "<CODE>", "</CODE>"]
    assert "<CODE>```python\ndef mean" in rec["messages"][1]["content"]
