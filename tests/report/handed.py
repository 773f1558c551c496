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


def run_summary(section: dict, **paths) -> dict:
    """The ``summary`` step as the CLI runs it (the contract writes ``output``)."""
    from argparse import Namespace

    from aiev.report.steps import STEPS
    from aiev.steps import run_step

    step = next(s for s in STEPS if s.name == "summary")
    return run_step(step, {"summary": section}, Namespace(**paths))


def run_dataset(cfg: dict, **paths) -> dict:
    from argparse import Namespace

    from aiev.report import dataset

    return dataset.run(cfg, Namespace(**paths))


def run_plots(**paths) -> dict:
    from argparse import Namespace

    from aiev.report import plots

    return plots.run(Namespace(**paths))
