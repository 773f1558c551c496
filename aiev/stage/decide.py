"""Who generates the next batch (paper section 3.1): "If the teacher model performs better, we continue executing
the Teaching Stage. If the student model performs better, we move to the Self-Learning Stage", where the student
itself is the questioner and the programmer.

The policy (config ``stage``), applied in this order:

1. ``force: teacher|student``: the scores are ignored (tests, ablations).
2. ``sticky: true`` and the batch was already generated in the self-learning stage: it stays (our choice; the paper
   does not say whether the switch is final, so the default decides again after every batch).
3. Fewer than ``min_test_entries`` test tasks: the scores cannot decide; the stage stays as it was.
4. ``compare: higher`` (the paper): the student must pass strictly more of the same tasks (a tie stays in teaching);
   ``higher_or_equal``: a tie goes to the student. Counts are compared, not rounded rates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

STAGES = ("teaching", "self-learning")


def _score(summary: dict[str, Any]) -> dict[str, Any]:
    keep = ("model", "identity", "n", "passed", "pass_at_1", "test_file")
    return {k: summary.get(k) for k in keep}


def decide(
    section: dict[str, Any],
    teacher: dict[str, Any],
    student: dict[str, Any],
    previous: dict[str, Any] | None = None,
    batch: int | None = None,
) -> dict[str, Any]:
    """The stage record of one batch: both scores, the policy, ``stage`` (who generated this batch) and ``next``."""
    if teacher.get("test_file") != student.get("test_file") or teacher.get("n") != student.get("n"):
        raise ValueError(
            f"the two evaluations are not of the same test split: teacher {teacher.get('test_file')} "
            f"(n = {teacher.get('n')}), student {student.get('test_file')} (n = {student.get('n')})"
        )
    current = previous["next"] if previous else "teaching"
    n, t, s = teacher["n"], teacher["passed"], student["passed"]
    if section["force"] == "teacher":
        nxt, reason = "teaching", "forced by stage.force: teacher"
    elif section["force"] == "student":
        nxt, reason = "self-learning", "forced by stage.force: student"
    elif section["sticky"] and current == "self-learning":
        nxt, reason = "self-learning", "stage.sticky: the self-learning stage, once reached, is kept"
    elif n < section["min_test_entries"]:
        nxt, reason = current, f"{n} test task(s), fewer than stage.min_test_entries = {section['min_test_entries']}"
        reason += f": the scores cannot decide, the stage stays {current}"
    elif s > t or (section["compare"] == "higher_or_equal" and s == t):
        nxt = "self-learning"
        reason = f"the student passed {s}/{n}, the teacher {t}/{n}: " + (
            "higher" if s > t else "a tie, and ties go to the student"
        )
    else:
        nxt = "teaching"
        reason = f"the student passed {s}/{n}, the teacher {t}/{n}: " + (
            "a tie stays in teaching (stage.compare: higher)" if s == t else "the teacher is better"
        )
    return {
        "batch": batch,
        "stage": current,
        "teacher": _score(teacher),
        "student": _score(student),
        "policy": {k: section[k] for k in ("compare", "sticky", "force", "min_test_entries")},
        "next": nxt,
        "reason": reason,
    }


def run(section: dict[str, Any], paths: Any) -> dict[str, Any]:
    """The ``decide-stage`` step, with the ``stage`` section (``paths``: ``teacher``, ``student``, ``previous``,
    ``batch_index``; the record is the step's report, ``output``)."""

    def load(path: str | Path) -> dict[str, Any]:
        return json.loads(Path(path).read_text(encoding="utf-8"))

    prev = load(paths.previous) if paths.previous else None
    if prev is not None and prev.get("next") not in STAGES:
        raise ValueError(f"{paths.previous}: 'next' must be one of {', '.join(STAGES)}")
    return decide(section, load(paths.teacher), load(paths.student), prev, paths.batch_index)
