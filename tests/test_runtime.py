"""The step runtime: one resume (a store owned by a fingerprint of settings and code, a stale one set aside and
reported), the code found from the step's imports, the counters, and the contract that writes every report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from aiev.runtime import Resume, Tally, code_modules, code_sha256
from aiev.steps import Step, StepFailed, run_step


def test_a_store_resumes_under_the_same_settings_and_is_set_aside_under_others(tmp_path):
    first = Resume(tmp_path, "work", {"a": 1, "b": {"c": 2}}, ("aiev.runtime",))
    store = first.open()
    store.add({"id": "x", "value": 1})
    store.close()
    again = Resume(tmp_path, "work", {"a": 1, "b": {"c": 2}}, ("aiev.runtime",))
    assert set(again.open().done) == {"x"} and again.stale is None
    changed = Resume(tmp_path, "work", {"a": 1, "b": {"c": 3}}, ("aiev.runtime",))
    assert changed.open().done == {}  # nothing of the old settings mixed in
    stale = changed.report()["stale_store"]
    assert stale["changed"] == ["b.c"] and stale["entries"] == 1 and stale["fingerprint"] == first.fingerprint
    assert json.loads((Path(stale["path"]) / "work.jsonl").read_text())["id"] == "x"  # kept, not dropped
    assert json.loads((tmp_path / "work.fingerprint.json").read_text())["fingerprint"] == changed.fingerprint


def test_the_code_of_a_step_is_found_from_its_imports(tmp_path, monkeypatch):
    """A module the step's root imports (at the top or inside a function) joins the fingerprint, and a change to
    its source changes it; a module nothing imports does not."""
    # the finder reads modules named aiev.*: lay a namespace beside the real package under that name
    root = tmp_path / "aiev"
    root.mkdir()
    monkeypatch.setattr(sys.modules["aiev"], "__path__", [*sys.modules["aiev"].__path__, str(root)])
    (root / "probe_root.py").write_text("def f():\n    from aiev import probe_leaf\n    return probe_leaf\n")
    (root / "probe_leaf.py").write_text("X = 1\n")
    (root / "probe_other.py").write_text("Y = 1\n")
    code_modules.cache_clear()
    found = code_modules(("aiev.probe_root",))
    assert {"aiev.probe_root", "aiev.probe_leaf"} <= set(found) and "aiev.probe_other" not in found
    before = code_sha256(("aiev.probe_root",))
    (root / "probe_other.py").write_text("Y = 2\n")
    assert code_sha256(("aiev.probe_root",)) == before
    (root / "probe_leaf.py").write_text("X = 2\n")
    assert code_sha256(("aiev.probe_root",)) != before
    code_modules.cache_clear()


def test_the_step_contract_writes_the_report_also_when_the_step_fails(tmp_path):
    def ok(cfg, args):
        return {"kept": Tally().count(["a", "b", "a"]).of(["a", "b", "c"])}

    def failing(cfg, args):
        raise StepFailed({"finished": 3}, RuntimeError("endpoint down"))

    args = argparse.Namespace(report=tmp_path / "r.json")
    assert run_step(Step("ok", "", lambda p: None, ok, report="report"), {}, args) == {"kept": {"a": 2, "b": 1, "c": 0}}
    assert json.loads((tmp_path / "r.json").read_text()) == {"kept": {"a": 2, "b": 1, "c": 0}}
    with pytest.raises(RuntimeError, match="endpoint down"):
        run_step(Step("bad", "", lambda p: None, failing, report="report"), {}, args)
    assert json.loads((tmp_path / "r.json").read_text()) == {"finished": 3}


def test_every_step_with_a_report_flag_has_the_contract_write_it():
    """No step writes its report by hand: a step with ``--report`` (or its summary flag) names it to the
    contract, and no module of a part calls write_json on the report it returns."""
    from aiev.cli import STEPS, build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))

    # the data set's report lies inside the data set's folder, which is written whole and renamed into place
    inside_its_output = {"dataset"}
    missing = []
    for name, step in STEPS.items():
        flags = {a.dest for a in sub.choices[name]._actions}
        if "report" in flags and step.report is None and name not in inside_its_output:
            missing.append(name)
    assert not missing, missing
