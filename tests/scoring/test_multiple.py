"""MultiPL-E in the sandbox: reference completions of the committed 3-task excerpt pass in every language whose
toolchain is here, a wrong one fails, and a language without a toolchain is reported skipped with its reason."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiev.config import load_config
from aiev.scoring import multiple, samples
from tests.conftest import write_jsonl
from tests.generate.test_dialogue import bwrap_or_skip
from tests.scoring import sample, score

EXCERPT = Path(__file__).resolve().parents[1] / "data" / "benchmarks" / "multipl-e"

# Our completions of the excerpt (MultiPL-E ships none), each with the verdict MultiPL-E's own evaluator gave it
# where one was recorded (benchmarks/multiple_upstream.py): "reference" ones are right, "wrong" ones are not,
# "broken" ones do not build.
CASES = json.loads((EXCERPT / "upstream_verdicts.json").read_text(encoding="utf-8"))["cases"]
REFERENCE = {lang: {c["task"]: c["completion"] for c in CASES if c["lang"] == lang and c["kind"] == "reference"}
             for lang in sorted({c["lang"] for c in CASES})}  # fmt: skip


def upstream_agrees(lang: str, kinds: tuple[str, ...], per_task: dict[str, str]) -> None:
    """Our verdicts equal the upstream evaluator's (its OK is a pass, any other status a failure)."""
    recorded = [c for c in CASES if c["lang"] == lang and c["kind"] in kinds and c["upstream"]]
    for c in recorded:
        assert per_task[c["task"]] == ("pass" if c["upstream"] == "OK" else "fail"), (c["task"], c["upstream"])
    assert recorded or lang == "js"  # js: no upstream evaluator that runs (docs/scoring.md)


def needs_toolchain(lang: str) -> None:
    """The sandbox and the language's toolchain, or a skip naming what is missing (CI installs both)."""
    bwrap_or_skip()
    problem = multiple.toolchain_problem(lang)
    if problem:
        pytest.skip(f"{lang}: {problem}")


def run_suite(tmp_path: Path, lang: str, completions: dict[str, str]) -> dict:
    write_jsonl(tmp_path / f"{lang}.jsonl", [{"name": k, "completion": v} for k, v in completions.items()])
    cfg = load_config({"benchmark": {"data": {"multipl_e": str(EXCERPT)}, "workers": 2}})
    return score(cfg, suite=f"multipl-e-{lang}", samples=tmp_path / f"{lang}.jsonl",
                        output=tmp_path / f"{lang}.json")  # fmt: skip


@pytest.mark.parametrize("lang", sorted(REFERENCE))
def test_reference_completions_pass(tmp_path, lang):
    needs_toolchain(lang)
    report = run_suite(tmp_path, lang, REFERENCE[lang])
    assert json.loads((tmp_path / f"{lang}.json").read_text()) == report
    upstream_agrees(lang, ("reference",), report["per_task"])
    if lang == "php":
        # a quirk of the data set, kept as it scores: its strlen task redeclares a PHP builtin, so every
        # completion fails with a fatal error (docs/scoring.md)
        assert "Cannot redeclare strlen()" in report["failures"].pop("HumanEval_23_strlen")
        assert report["n"] == 3 and report["failures"] == {}
    else:
        assert report["n"] == 3 and report["pass@1"] == 1.0, report["failures"]


@pytest.mark.parametrize("lang", sorted(REFERENCE))
def test_wrong_and_broken_completions_fail_as_upstream_says(tmp_path, lang):
    needs_toolchain(lang)
    faulty = {c["task"]: c["completion"] for c in CASES if c["lang"] == lang and c["kind"] in ("wrong", "broken")}
    report = run_suite(tmp_path, lang, faulty)
    assert [report["per_task"][t] for t in faulty] == ["fail", "fail"]
    upstream_agrees(lang, ("wrong", "broken"), report["per_task"])


@pytest.mark.parametrize("lang", ["js", "cpp", "java", "rs"])
def test_a_wrong_completion_fails_and_a_missing_one_is_counted(tmp_path, lang):
    needs_toolchain(lang)
    refs = dict(REFERENCE[lang])
    refs.pop("HumanEval_95_check_dict_case")
    refs["HumanEval_89_encrypt"] = refs["HumanEval_89_encrypt"].replace("+ 4", "+ 3")
    report = run_suite(tmp_path, lang, refs)
    assert report["per_task"] == {"HumanEval_23_strlen": "pass", "HumanEval_89_encrypt": "fail",
                                  "HumanEval_95_check_dict_case": "fail"}  # fmt: skip
    assert report["missing"] == ["HumanEval_95_check_dict_case"] and report["pass@1"] == round(1 / 3, 6)
    assert report["rescored"] == 1 and report["flaky"] == {}  # the wrong one again; the missing one is not re-run


def test_stop_tokens_cut_the_completion_as_multipl_e_does():
    assert multiple.truncate("  return 1;\n}\n\nfunction extra() {}", ["\nfunction", "\n//"]) == "  return 1;\n}\n"


def test_swift_is_reported_skipped_with_its_reason(tmp_path):
    (tmp_path / "s.jsonl").write_text("")
    report = score(load_config({}), suite="multipl-e-swift", samples=tmp_path / "s.jsonl",
                        output=tmp_path / "o.json")  # fmt: skip
    assert report["n"] == 0 and report["pass@1"] is None and "OpenStack Swift" in report["skipped"]


def test_a_toolchain_outside_usr_is_not_used(monkeypatch, tmp_path):
    """The sandbox sees /usr only: a rustup rustc first on PATH is no toolchain, the distribution's one behind it
    is (the sandbox's own PATH finds it)."""
    cargo = tmp_path / "cargo" / "bin"
    cargo.mkdir(parents=True)
    (cargo / "rustc").write_text("#!/bin/sh\n")
    (cargo / "rustc").chmod(0o755)
    monkeypatch.setenv("PATH", str(cargo))
    assert "outside /usr" in multiple.toolchain_problem("rs")
    real = multiple.shutil.which
    monkeypatch.setattr(multiple.shutil, "which", lambda tool, path=None: real(tool, path=path) or (
        "/usr/bin/rustc" if path == "/usr/bin" and tool == "rustc" else None))  # fmt: skip
    monkeypatch.setenv("PATH", f"{cargo}:/usr/bin")
    assert multiple.toolchain_problem("rs") is None
    monkeypatch.setattr(multiple.shutil, "which", lambda tool, path=None: None)
    assert "not installed" in multiple.toolchain_problem("js")


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_samples_from_a_served_model_then_scored(tmp_path, mode):
    """A chat model answers with the whole function in a fence (a helper line before it, chatter after): the
    completion is what follows the prompt's first line of the function, and it passes. A base model (completion)
    continues the prompt and is stopped at the task's stop tokens."""
    bwrap_or_skip()
    from tests.scripted_server import ScriptedServer

    lang = "js"
    if multiple.toolchain_problem(lang):
        pytest.skip(multiple.toolchain_problem(lang))
    tasks = multiple.read_tasks(EXCERPT / f"humaneval-{lang}.jsonl")
    by_prompt = {samples.chat_prompt(f"multipl-e-{lang}", t): t for t in tasks}
    by_raw = {t["prompt"]: t for t in tasks}

    def chat(messages):
        t = by_prompt[messages[-1]["content"]]
        code = "// helper\n" + t["prompt"] + REFERENCE[lang][t["task_id"]]
        return f"Here it is.\n```javascript\n{code}```\nDone."

    def complete(prompt):
        return REFERENCE[lang][by_raw[prompt]["task_id"]] + "\nfunction unrelated() {}\n"

    with ScriptedServer(chat, completion_script=complete) as server:
        cfg = load_config({"llm": {"teacher": {"base_url": server.url, "model": "scripted", "serve": None,
                                               "mode": mode}},
                           "benchmark": {"data": {"multipl_e": str(EXCERPT)}}})  # fmt: skip
        out = sample(cfg, suite=f"multipl-e-{lang}", role="teacher", samples=tmp_path / "s.jsonl",
                               state_dir=tmp_path / "state")  # fmt: skip
        if mode == "chat":
            asked = [r["messages"][-1]["content"] for r in server.requests]
            assert all(a.startswith("Write a solution to the following problem in JavaScript:\n```javascript\n")
                       for a in asked)  # fmt: skip
    assert out["n"] == 3 and out["empty"] == 0 and out["mode"] == mode
    rows = [json.loads(x) for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    if mode == "chat":
        assert all("helper" not in r["completion"] and "Done." not in r["completion"] for r in rows)
    report = score(cfg, suite=f"multipl-e-{lang}", samples=tmp_path / "s.jsonl", output=tmp_path / "o.json")
    assert report["pass@1"] == 1.0, report["failures"]


def test_the_toolchain_is_asked_inside_the_sandbox_for_an_image():
    """What the Apptainer path asks its image, asked here of the bubblewrap sandbox (which sees the host's /usr)."""
    bwrap_or_skip()
    from aiev.scoring.samplefile import sandbox_for

    sandbox = sandbox_for(load_config({}), "multipl-e")
    assert multiple.image_toolchain_problem(sandbox, "swift").startswith("swiftc is not in the sandbox image")
    if not multiple.toolchain_problem("js"):
        assert multiple.image_toolchain_problem(sandbox, "js") is None


def test_rust_is_a_debug_build_as_upstream_so_an_overflow_fails(tmp_path):
    """MultiPL-E's rust evaluator runs ``rustc`` without ``-O``: integer overflow panics. This completion is right
    only when the addition wraps (a release build), so upstream's verdict, and ours, is a failure."""
    bwrap_or_skip()
    problem = multiple.toolchain_problem("rs")
    if problem:
        pytest.skip(f"rs: {problem}")
    wraps = "    let x: u8 = 255;\n    (x + string.len() as u8).wrapping_sub(255) as isize\n"
    report = run_suite(tmp_path, "rs", {"HumanEval_23_strlen": wraps})
    assert report["per_task"]["HumanEval_23_strlen"] == "fail"
    assert "overflow" in report["failures"]["HumanEval_23_strlen"]
