"""The stage decision: the paper's rule (strictly higher wins, a tie stays in teaching), sticky, force, too few
test tasks, and mismatched evaluations refused."""

from __future__ import annotations

import json
from argparse import Namespace

import pytest

from aiev.config import load_config
from aiev.stage.decide import decide
from aiev.stage.steps import STEPS
from aiev.steps import run_step


def policy(**kw):
    return load_config({"stage": kw})["stage"]


def score(passed: int, n: int = 10, test: str = "results/batch_0/test.jsonl") -> dict:
    return {"model": "m", "n": n, "passed": passed, "pass_at_1": passed / n if n else None, "test_file": test}


@pytest.mark.parametrize(
    ("teacher", "student", "compare", "expected"),
    [
        (7, 8, "higher", "self-learning"),
        (7, 7, "higher", "teaching"),  # the paper: a tie stays in teaching
        (7, 6, "higher", "teaching"),
        (7, 7, "higher_or_equal", "self-learning"),
        (7, 6, "higher_or_equal", "teaching"),
    ],
)
def test_the_paper_rule_and_its_tie(teacher, student, compare, expected):
    record = decide(policy(compare=compare), score(teacher), score(student), None, batch=0)
    assert record["next"] == expected and record["stage"] == "teaching"
    assert record["teacher"]["passed"] == teacher and record["student"]["passed"] == student
    assert f"{student}/10" in record["reason"] and record["policy"]["compare"] == compare


def test_the_default_policy_is_the_papers():
    assert policy() == {"compare": "higher", "sticky": False, "force": None, "min_test_entries": 1}


def test_not_sticky_decides_again_and_sticky_keeps_self_learning():
    before = {"next": "self-learning"}
    again = decide(policy(), score(9), score(3), before, batch=1)
    assert again["stage"] == "self-learning" and again["next"] == "teaching"
    kept = decide(policy(sticky=True), score(9), score(3), before, batch=1)
    assert kept["stage"] == "self-learning" and kept["next"] == "self-learning" and "sticky" in kept["reason"]
    # sticky does not switch by itself: from teaching the scores still decide
    assert decide(policy(sticky=True), score(9), score(3), {"next": "teaching"})["next"] == "teaching"


@pytest.mark.parametrize(("force", "expected"), [("teacher", "teaching"), ("student", "self-learning")])
def test_force_ignores_the_scores(force, expected):
    record = decide(policy(force=force), score(1), score(9) if force == "teacher" else score(0), None)
    assert record["next"] == expected and "forced" in record["reason"]


def test_too_few_test_tasks_keep_the_stage_as_it_was():
    record = decide(policy(min_test_entries=5), score(0, n=3), score(3, n=3), {"next": "teaching"}, batch=2)
    assert record["next"] == "teaching" and "fewer than stage.min_test_entries" in record["reason"]
    empty = decide(policy(), score(0, n=0), score(0, n=0), {"next": "self-learning"}, batch=2)
    assert empty["next"] == "self-learning" and "0 test task(s)" in empty["reason"]


def test_evaluations_of_different_splits_are_refused():
    with pytest.raises(ValueError, match="not of the same test split"):
        decide(policy(), score(1), score(1, test="results/batch_1/test.jsonl"))
    with pytest.raises(ValueError, match="not of the same test split"):
        decide(policy(), score(1, n=10), score(1, n=9))


def run(section: dict, **paths) -> dict:
    """The ``decide-stage`` step as the CLI runs it (the record written by the contract)."""
    return run_step(STEPS[0], {"stage": section}, Namespace(**paths))


def test_the_step_writes_stage_json_and_reads_the_previous_one(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(score(4)))
    (tmp_path / "s.json").write_text(json.dumps(score(5)))
    (tmp_path / "prev.json").write_text(json.dumps({"next": "teaching"}))
    out = tmp_path / "stage.json"
    rec = run(policy(), teacher=tmp_path / "t.json", student=tmp_path / "s.json", output=out,
              previous=tmp_path / "prev.json", batch_index=1)  # fmt: skip
    assert json.loads(out.read_text()) == rec and rec["next"] == "self-learning" and rec["batch"] == 1
    (tmp_path / "prev.json").write_text(json.dumps({"next": "maybe"}))
    with pytest.raises(ValueError, match="'next' must be one of"):
        run(policy(), teacher=tmp_path / "t.json", student=tmp_path / "s.json", output=out,
            previous=tmp_path / "prev.json", batch_index=None)  # fmt: skip
