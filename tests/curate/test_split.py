"""The per-batch 9:1 train/test split: size rule, eligibility, determinism, the CLI."""

from __future__ import annotations

import json
import random

import pytest

from aiev.cli import main as aiev_main
from aiev.curate.split import held_out_size, is_eligible


def _entry(i: int, eligible: bool) -> dict:
    row = {"id": f"s:{i}", "passed": eligible, "solution": None, "tests": None, "messages": []}
    if eligible:
        row |= {"solution": f"def f{i}(): return {i}", "tests": f"assert f{i}() == {i}"}
    return row


def _write(path, rows: list[dict | str]) -> list[str]:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return lines


def cli(argv: list[str]) -> int:
    return aiev_main(["split", *argv])


def _run(tmp_path, lines_in, *extra: str, name: str = "a") -> tuple[list[str], list[str], dict]:
    src = tmp_path / f"{name}.jsonl"
    src.write_text("\n".join(lines_in) + "\n", encoding="utf-8")
    train, test, report = (tmp_path / f"{name}.{x}" for x in ("train.jsonl", "test.jsonl", "report.json"))
    argv = ["--input", str(src), "--train", str(train), "--test", str(test), "--report", str(report), *extra]
    assert cli(argv) == 0
    read = lambda p: p.read_text(encoding="utf-8").splitlines()  # noqa: E731
    return read(train), read(test), json.loads(report.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("total", "eligible", "fraction", "expected"),
    [
        (10, 10, 0.1, 1),
        (4, 4, 0.1, 0),  # 0.4 rounds down
        (5, 5, 0.1, 1),  # 0.5 rounds up
        (15, 15, 0.1, 2),  # 1.5 rounds up
        (30, 30, 0.05, 2),  # 1.5, exactly
        (2000, 2000, 0.1, 200),
        (2000, 150, 0.1, 150),  # capped by the eligible count
        (0, 0, 0.1, 0),
    ],
)
def test_held_out_size(total, eligible, fraction, expected):
    assert held_out_size(total, eligible, fraction) == expected


def test_eligibility():
    assert is_eligible(_entry(1, True))
    assert not is_eligible(_entry(1, False))
    assert not is_eligible(_entry(1, True) | {"tests": "  \n"})
    assert not is_eligible(_entry(1, True) | {"solution": ""})
    assert not is_eligible(_entry(1, True) | {"passed": "true"})
    assert not is_eligible(_entry(1, True) | {"tests": ["assert 1"]})


def test_split_rule_and_order(tmp_path):
    rng = random.Random(0)
    rows = [_entry(i, rng.random() < 0.6) for i in range(95)]
    lines = [json.dumps(r) for r in rows]
    train, test, rep = _run(tmp_path, lines)
    n_eligible = sum(is_eligible(r) for r in rows)
    assert rep["total"] == 95 and rep["eligible"] == n_eligible
    assert rep["test"] == len(test) == 10 and rep["train"] == len(train) == 85  # floor(9.5 + 0.5)
    assert all(is_eligible(json.loads(x)) for x in test)  # only runnable unit tests in the test split
    # byte-identical lines, input order kept, nothing lost
    assert train == [x for x in lines if x not in set(test)]
    assert test == [x for x in lines if x in set(test)]
    assert rep["test_ids"] == sorted(json.loads(x)["id"] for x in test)


def test_deterministic_and_order_independent(tmp_path):
    lines = [json.dumps(_entry(i, i % 3 != 0)) for i in range(200)]
    train1, test1, rep1 = _run(tmp_path, lines, name="a")
    train2, test2, _ = _run(tmp_path, lines, name="b")
    assert (train1, test1) == (train2, test2)
    shuffled = lines[:]
    random.Random(1).shuffle(shuffled)
    _, _, rep3 = _run(tmp_path, shuffled, name="c")
    assert rep3["test_ids"] == rep1["test_ids"]  # the choice depends on (seed, id), not on the order
    _, _, rep4 = _run(tmp_path, lines, "--seed", "1", name="d")
    assert rep4["test_ids"] != rep1["test_ids"] and rep4["seed"] == 1
    _, test5, rep5 = _run(tmp_path, lines, "--test-fraction", "0.25", name="e")
    assert rep5["test"] == len(test5) == 50


def test_few_eligible_and_bad_rows(tmp_path, caplog):
    rows = [json.dumps(_entry(i, i < 2)) for i in range(40)]
    rows[5:5] = ["{broken", json.dumps({"passed": True})]
    train, test, rep = _run(tmp_path, rows)
    assert rep["test"] == len(test) == 2  # round(0.1 * 40) = 4, capped by the 2 eligible entries
    assert rep["train"] == len(train) == 38
    assert [(b["line"], b["reason"].split(":")[0]) for b in rep["bad_rows"]] == [(6, "invalid-json"), (7, "bad-row")]
    assert "2 bad rows" in caplog.text


def test_config_section(tmp_path):
    lines = [json.dumps(_entry(i, True)) for i in range(20)]
    cfg = json.dumps({"split": {"test_fraction": 0.5, "seed": 3}})
    _, test, rep = _run(tmp_path, lines, "--config", cfg)
    assert len(test) == 10 and rep["seed"] == 3 and rep["test_fraction"] == 0.5
