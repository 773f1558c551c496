"""What rules/common.smk hands each report step of a batch folder, kind by kind (the tests' copy of the results
layout: the steps themselves never spell a batch file's name)."""

from __future__ import annotations

from pathlib import Path

SUMMARY = {
    "generate_reports": "generate_report.json",
    "usage": "usage.json",
    "check_reports": "check_report.json",
    "decontam_reports": "decontam_report.json",
    "split_reports": "split_report.json",
    "train_reports": "train_report.json",
    "teacher_evals": "eval/teacher.json",
    "student_evals": "eval/student.json",
    "stages": "stage.json",
}
DATASET = {
    "train": "train.jsonl",
    "test": "test.jsonl",
    "generate_reports": "generate_report.json",
    "check_reports": "check_report.json",
    "decontam_reports": "decontam_report.json",
    "stages": "stage.json",
}
PLOTS = {"check_reports": "check_report.json", "decontam_reports": "decontam_report.json", "students": "student"}


def handed(kinds: dict[str, str], dirs: list[Path]) -> dict[str, list[Path]]:
    """Keyword arguments of a report step's ``run``: each kind's file in every batch folder, in batch order."""
    return {kind: [d / name for d in dirs] for kind, name in kinds.items()}


def argv(kinds: dict[str, str], dirs: list[Path]) -> list[str]:
    """The same as the step's command-line arguments (``--check-reports FILE ...``)."""
    out: list[str] = []
    for kind, files in handed(kinds, dirs).items():
        out += ["--" + kind.replace("_", "-"), *map(str, files)]
    return out
