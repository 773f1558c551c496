"""The benchmark names, in one place: the suites models are scored on (``benchmark.suites``), the benchmark
files decontamination compares against (``curate.decontam.benchmarks``), and MultiPL-E's languages.

Every other list derives from these tables: the scorers (:mod:`aiev.scoring.scorers`), the benchmark loaders
(:mod:`aiev.curate.benchdata`), the rules' ``{suite}`` wildcard and image choice (rules/common.smk imports this
module), and the config schema's enums (tests/test_suites.py holds the schema to them).

| suite | family (scorer, image) | decontamination files |
|---|---|---|
| ``humaneval``, ``mbpp`` | ``evalplus`` | ``humaneval``, ``humanevalplus``, ``mbpp``, ``mbppplus`` |
| ``multipl-e-LANG`` | ``multipl-e`` | ``multiple-LANG`` |
| ``ds1000`` | ``ds1000`` | ``ds1000`` |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    """A MultiPL-E language: its code in file and suite names, its name in prompts, its Markdown fence."""

    code: str
    name: str
    fence: str


#: MultiPL-E's languages of the paper's Table 2, in its order.
MULTIPLE: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language("java", "Java", "java"),
        Language("js", "JavaScript", "javascript"),
        Language("cpp", "C++", "cpp"),
        Language("php", "PHP", "php"),
        Language("swift", "Swift", "swift"),
        Language("rs", "Rust", "rust"),
    )
}

EVALPLUS_SUITES = ("humaneval", "mbpp")
DS1000_SUITE = "ds1000"
MULTIPLE_PREFIX = "multipl-e-"
#: Every suite ``aiev benchmark`` scores, and the family (scorer and Apptainer image) of each.
FAMILIES: dict[str, str] = {
    **dict.fromkeys(EVALPLUS_SUITES, "evalplus"),
    **{f"{MULTIPLE_PREFIX}{code}": "multipl-e" for code in MULTIPLE},
    DS1000_SUITE: "ds1000",
}
SUITES = tuple(FAMILIES)

#: Every benchmark file decontamination can compare against.
DECONTAM_NAMES: tuple[str, ...] = (
    "humaneval",
    "humanevalplus",
    "mbpp",
    "mbppplus",
    "ds1000",
    *(f"multiple-{code}" for code in MULTIPLE),
)


class UnknownSuite(ValueError):
    """A suite name that is none of :data:`SUITES`."""


def family(suite: str) -> str:
    """``evalplus``, ``multipl-e`` or ``ds1000``."""
    try:
        return FAMILIES[suite]
    except KeyError:
        raise UnknownSuite(f"unknown suite {suite!r}: one of {', '.join(SUITES)}") from None


def language(suite: str) -> Language:
    """The MultiPL-E language of a ``multipl-e-LANG`` suite."""
    if family(suite) != "multipl-e":
        raise UnknownSuite(f"{suite!r} is not a MultiPL-E suite")
    return MULTIPLE[suite.removeprefix(MULTIPLE_PREFIX)]


def wildcard_pattern() -> str:
    """The regular expression the rules' ``{suite}`` wildcard is constrained to."""
    return "|".join(SUITES)
