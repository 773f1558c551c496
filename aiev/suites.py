"""The benchmark names, in one place: the suites models are scored on (``benchmark.suites``), the benchmark
files decontamination compares against (``curate.decontam.benchmarks``), and MultiPL-E's languages with
the toolchain that builds and runs each.

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

#: Debian's javatuples jar (libjavatuples-java), which MultiPL-E's Java programs compile and run against.
JAVATUPLES = "/usr/share/java/javatuples.jar"
#: Where the toolchains come from, when one is missing.
TOOLCHAIN_HINT = "scripts/system-deps.sh test installs the MultiPL-E toolchains"


@dataclass(frozen=True)
class Language:
    """A MultiPL-E language: its code in file and suite names, its name in prompts, its Markdown fence, and how
    its program is built and run in the sandbox (:mod:`aiev.scoring.multiple`): the program's ``file``, the
    ``command`` sh runs in the scratch directory, the ``tools`` and ``needs_files`` that must be there, and the
    ``hint`` of where to get them."""

    code: str
    name: str
    fence: str
    file: str
    command: str
    tools: tuple[str, ...]
    needs_files: tuple[str, ...] = ()
    hint: str = TOOLCHAIN_HINT


#: MultiPL-E's languages of the paper's Table 2, in its order.
MULTIPLE: dict[str, Language] = {
    lang.code: lang
    for lang in (
        Language(
            "java",
            "Java",
            "java",
            "Problem.java",
            f"javac -J-Xmx512m -encoding UTF8 -cp {JAVATUPLES} Problem.java"
            f" && java -Xmx512m -ea -cp .:{JAVATUPLES} Problem",
            ("javac", "java"),
            (JAVATUPLES,),
        ),
        Language("js", "JavaScript", "javascript", "main.js", "node main.js", ("node",)),
        Language("cpp", "C++", "cpp", "main.cpp", "g++ -std=c++17 -o main main.cpp && ./main", ("g++",)),
        Language("php", "PHP", "php", "main.php", "php main.php", ("php",)),
        Language(
            "swift",
            "Swift",
            "swift",
            "main.swift",
            "swiftc -o main main.swift && ./main",
            ("swiftc",),
            hint="no Swift toolchain: Debian's `swift` package is OpenStack Swift, not the language (the Apptainer "
            "image of containers/multipl-e.def has swift.org's)",
        ),
        Language("rs", "Rust", "rust", "main.rs", "rustc -o main main.rs && ./main", ("rustc",)),
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
