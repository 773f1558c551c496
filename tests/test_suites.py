"""The benchmark names have one home, aiev/suites.py: the schema's enums, the scorers' tables, the rules and the
summary's columns agree with it, and no other file spells a suite list out."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from aiev import suites
from aiev.scoring import multiple, plus, scorers
from aiev.scoring.samplefile import BenchmarkError

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "aiev" / "schemas" / "config.schema.yaml").read_text(encoding="utf-8"))


def test_the_schema_enums_are_the_packages_lists():
    benchmark = SCHEMA["properties"]["benchmark"]["properties"]
    assert benchmark["suites"]["items"]["enum"] == list(suites.SUITES)
    decontam = SCHEMA["properties"]["decontam"]["properties"]["benchmarks"]
    assert decontam["propertyNames"]["enum"] == list(suites.DECONTAM_NAMES)
    assert ", ".join(suites.DECONTAM_NAMES) in " ".join(decontam["description"].split())


def test_every_multipl_e_language_has_a_toolchain_and_every_evalplus_suite_its_data_variable():
    assert set(multiple.LANGS) == set(suites.MULTIPLE)
    assert tuple(s for s in suites.SUITES if suites.family(s) == "multipl-e") == multiple.SUITES
    assert plus.SUITES == {"humaneval": "HUMANEVAL_OVERRIDE_PATH", "mbpp": "MBPP_OVERRIDE_PATH"}


def test_family_and_language():
    assert [scorers.family(s) for s in ("humaneval", "mbpp", "ds1000", "multipl-e-rs")] == [
        "evalplus", "evalplus", "ds1000", "multipl-e"
    ]  # fmt: skip
    assert suites.language("multipl-e-cpp").name == "C++" and suites.language("multipl-e-js").fence == "javascript"
    with pytest.raises(BenchmarkError, match="unknown suite 'multipl-e-go'"):
        scorers.family("multipl-e-go")
    with pytest.raises(suites.UnknownSuite, match="not a MultiPL-E suite"):
        suites.language("mbpp")


def test_the_rules_suite_wildcard_matches_exactly_the_suites():
    pattern = re.compile(f"(?:{suites.wildcard_pattern()})")
    assert all(pattern.fullmatch(s) for s in suites.SUITES)
    assert not any(pattern.fullmatch(s) for s in ("multipl-e-go", "humanevalplus", "mbpp+", "ds1000x", ""))


#: Files that may name every MultiPL-E language, and why.
MAY_NAME_THEM = {
    "aiev/report/summary.py": "the paper's published scores, keyed by column (checked below)",
    "aiev/scoring/multiple.py": "how each language compiles and runs, keyed by aiev.suites.MULTIPLE (checked above)",
}


def test_no_other_file_spells_out_a_suite_list():
    """A suite or language list written a second time is what drifts: the rules import aiev.suites and the
    package derives from it. Prose may name languages, and a file may name one or two suites; a file whose code
    names three or more MultiPL-E languages (in any spelling) holds a second list."""
    codes = "|".join(suites.MULTIPLE)
    quoted = re.compile(rf"""["'](?:multipl-e-|multiple-)?({codes})["']""")
    offenders = {}
    for path in [*(REPO / "aiev").rglob("*.py"), *(REPO / "rules").glob("*.smk"), REPO / "Snakefile"]:
        rel = str(path.relative_to(REPO))
        if rel == "aiev/suites.py" or rel in MAY_NAME_THEM:
            continue
        code = re.sub(r'"""(.|\n)*?"""', "", path.read_text(encoding="utf-8"))  # docstrings may name them
        code = "\n".join(ln.split("#")[0] for ln in code.splitlines())
        named = set(quoted.findall(code))
        if len(named) >= 3 or "multipl-e-(" in code:
            offenders[rel] = sorted(named)
    assert not offenders, f"a MultiPL-E list outside aiev/suites.py: {offenders}"


def test_the_papers_scores_are_keyed_by_the_summarys_columns():
    from aiev.report.summary import BENCHMARK_COLUMNS, PAPER_BENCHMARKS

    assert BENCHMARK_COLUMNS[:4] == ["humaneval", "humaneval+", "mbpp", "mbpp+"] and BENCHMARK_COLUMNS[-1] == "ds1000"
    for model, scores in PAPER_BENCHMARKS.items():
        assert set(scores) <= set(BENCHMARK_COLUMNS), model
