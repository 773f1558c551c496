"""The Snakemake workflow, run for real on a tiny config: outputs, nothing stale, minimal re-runs."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml

from benchmarks.shared_data import BENCHMARK_DATA
from tests.conftest import write_jsonl

pytestmark = pytest.mark.workflow


def smk(repo: Path, workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), "--cores", "1", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


def audited(env: dict, folder: Path) -> dict:
    """``env`` with every aiev process recording what it reads under results/ into ``folder`` (aiev.io)."""
    return dict(env, AIEV_AUDIT_READS=str(folder))


def assert_reads_declared(repo: Path, workdir: Path, env: dict, audit: Path, *args: str) -> set[str]:
    """Every file under results/ that a job's aiev processes read is one of the job's declared inputs or outputs
    (or inside one that is a folder): what Snakemake thinks a job reads is what it reads. The jobs come from
    ``snakemake --detailed-summary`` (each output's rule, log and recorded inputs); an aiev process belongs to
    the job whose log its stderr is."""
    jobs: dict[str, dict] = {}
    # rule all's DAG leaves out the seed jobs while a checkpoint is pending (the loop's next decision): ask for them
    for targets in ([], ["results/seeds/batches_report.json"]):
        summary = smk(repo, workdir, env, *targets, *args, "--detailed-summary").stdout.splitlines()
        for line in summary[summary.index(next(x for x in summary if x.startswith("output_file\t"))) + 1 :]:
            output, _date, rule, logs, inputs, *_ = line.split("\t")
            for log in set(logs.split(",")) - {"-"}:
                job = jobs.setdefault(log, {"rule": rule, "declared": {log}})
                job["declared"] |= {output, *(set(inputs.split(",")) - {"-"})}
    records = [json.loads(p.read_text()) for p in sorted(audit.glob("*.json"))]
    assert records, f"no aiev process recorded its reads in {audit}"
    problems, checked = [], set()
    for r in records:
        log = os.path.relpath(r["stderr"], workdir)
        job = jobs.get(log)
        if job is None:
            problems.append(f"{' '.join(r['argv'][:2])}: its stderr ({log}) is no job's log")
            continue
        rule = job["rule"]
        checked.add(rule)
        declared = {d.rstrip("/") for d in job["declared"]}
        for path, how in r["reads"].items():
            if any(path == d or path.startswith(d + "/") for d in declared):
                continue
            if how == "list" and any(d.startswith(path + "/") for d in declared):
                continue  # a folder above its own outputs, listed for its own leftovers (aiev.io.atomic_dir)
            if path.startswith("results/.state/") and f"/{rule}/" in path:
                continue  # its resume store: undeclared on purpose (Snakemake deletes a failed job's outputs)
            problems.append(f"rule {rule} ({' '.join(r['argv'][:2])}) {'lists' if how == 'list' else 'reads'} {path}")
    assert not problems, "\n".join(sorted(set(problems)))
    return checked


def planned_jobs(out: subprocess.CompletedProcess) -> dict[str, int]:
    """Rule -> count from the 'Job stats' table of a dry run."""
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    return {m[0]: int(m[1]) for m in re.findall(r"^(\w+)\s+(\d+)$", table, re.M) if m[0] != "total"}


def test_real_run_then_nothing_stale_then_only_batching_reruns(repo, tmp_path, tool_env):
    write_jsonl(
        tmp_path / "seeds.jsonl",
        [
            {"problem": "Write a function that merges two sorted lists into one sorted list."},
            {"problem": "Write a function that merges two sorted lists into one sorted list."},
            {"problem": "Implement a stack with push, pop and a constant-time max operation."},
        ],
    )
    cfg = tmp_path / "config.yaml"
    cfg.write_text((repo / "tests" / "data" / "workflow.yaml").read_text())

    smk(repo, tmp_path, tool_env, "--configfile", str(cfg))
    res = tmp_path / "results" / "seeds"
    batch_files = sorted((res / "batches").glob("batch_*.jsonl"))
    dedup_report = json.loads((res / "dedup_report.json").read_text())
    assert dedup_report["dropped_exact"] == 1
    kept = dedup_report["kept"]
    sizes = [len(p.read_text().splitlines()) for p in batch_files]
    assert sum(sizes) == kept and max(sizes) == 8 and len(batch_files) == -(-kept // 8)
    for name in ("seeds", "dedup", "batches"):
        assert (tmp_path / "results" / "logs" / f"{name}.log").exists()

    # a second invocation finds nothing to do
    assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n")) == {}

    # changing batch_size re-runs only the batching (and the target rule), not seeds or dedup
    data = yaml.safe_load(cfg.read_text())
    data["batches"]["batch_size"] = 5
    cfg.write_text(yaml.safe_dump(data))
    assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n")) == {
        "batches": 1,
        "all": 1,
    }
    seeds_mtime = (res / "seeds.jsonl").stat().st_mtime_ns
    smk(repo, tmp_path, tool_env, "--configfile", str(cfg))
    assert (res / "seeds.jsonl").stat().st_mtime_ns == seeds_mtime
    sizes = [len(p.read_text().splitlines()) for p in sorted((res / "batches").glob("batch_*.jsonl"))]
    assert max(sizes) == 5 and sum(sizes) == kept and len(sizes) == -(-kept // 5)


def test_generation_and_curation_through_the_dag(repo, tmp_path, tool_env, request):
    """seeds -> dedup -> batches -> generate (2 shards) -> merge -> check tests -> decontaminate -> split -> format,
    for real: a scripted OpenAI-compatible server plays the teacher, programs run in the sandbox, and one dialogue
    whose solution is HumanEval/0 is removed by decontamination."""
    import gzip

    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer, dialogue_script

    bwrap_or_skip()
    humaneval = BENCHMARK_DATA / "humaneval" / "HumanEval.jsonl.gz"
    if not humaneval.exists():  # a fresh clone without ../shared: the committed excerpt has HumanEval/0 too
        humaneval = repo / "tests" / "data" / "benchmarks" / "humaneval" / "HumanEval.jsonl"
    with (gzip.open if humaneval.suffix == ".gz" else open)(humaneval, "rt") as fh:
        task0 = json.loads(fh.readline())
    leaked = task0["prompt"] + task0["canonical_solution"]

    def script(messages):
        if "SCENARIO=leak" in messages[1]["content"] and messages[0]["content"].startswith("You are the questioner"):
            # the problem asks for the function the leaked solution defines (else check-tests removes it first)
            return "Implement has_close_elements(numbers, threshold). [SCENARIO=leak]"
        if "SCENARIO=leak" in messages[1]["content"] and messages[0]["content"].startswith("You are the programmer"):
            tests = (
                "assert has_close_elements([1.0, 2.0, 3.0], 0.5) is False\n"
                "assert has_close_elements([1.0, 2.8, 3.0], 0.3) is True\n"
            )
            return f"```python\n{leaked}```\n```python\n{tests}```\n"
        return dialogue_script(messages)

    scenarios = ["pass1", "fix", "never", "leak", "pass1", "fix", "pass1", "fix", "pass1", "fix", "pass1", "fix"]
    write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"problem": f"Seed number {i} about adding numbers. SCENARIO={sc}"} for i, sc in enumerate(scenarios)],
    )
    with ScriptedServer(script) as server:
        cfg = {
            "seeds": {"sources": [{"name": "local", "type": "jsonl", "path": "seeds.jsonl", "text_field": "problem"}]},
            "dedup": {"near": False, "workers": 1},
            "batches": {"batch_size": 100, "shuffle": False},
            "generate": {"enabled": True, "shards": 2, "max_rounds": 2},
            "llm": {"teacher": {"base_url": server.url, "model": "scripted", "serve": None}, "timeout_s": 10},
            "decontam": {"benchmarks": {"humaneval": str(humaneval)}, "workers": 1},
            "evaluate": {"enabled": False},  # the loop has its own tests (test_loop_*)
        }
        student = None
        if importlib.util.find_spec("deepspeed") is not None:  # the train rule too, on a tiny local model
            student = request.getfixturevalue("tiny_model")
            cfg["train"] = {"enabled": True, "base_model": str(student), "procs_per_node": 2, "micro_batch_size": 1,
                            "gradient_accumulation_steps": 1, "max_steps": 2, "max_seq_len": 512}  # fmt: skip
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        audit = tmp_path / "audit"
        smk(repo, tmp_path, audited(tool_env, audit), "--configfile", str(tmp_path / "config.yaml"))
        assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(tmp_path / "config.yaml"), "-n")) == {}
    checked = assert_reads_declared(repo, tmp_path, tool_env, audit, "--configfile", str(tmp_path / "config.yaml"))
    assert {"generate", "merge_dialogues", "check_tests", "decontaminate", "split", "dataset", "summary"} <= checked
    b = tmp_path / "results" / "batch_0"
    dialogues = [json.loads(x) for x in (b / "dialogues.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (b / "rejects.jsonl").read_text().splitlines()]
    assert len(dialogues) == 11 and len(rejects) == 1 and rejects[0]["seed_id"] == "local:3"
    check = json.loads((b / "check_report.json").read_text())  # every passing entry's tests checked, all kept
    assert (check["mode"], check["entries"], check["removed"], check["resumed"]) == ("filter", 11, 0, 0)
    assert check["mutants"] > 11 and len(check["mutation_scores"]) == 11
    assert all(json.loads(x)["quality"]["checks_executed"] >= 1 for x in (b / "checked.jsonl").read_text().splitlines())
    removed = [json.loads(x) for x in (b / "removed.jsonl").read_text().splitlines()]
    assert [(r["id"], r["benchmark"], r["task_id"]) for r in removed] == [("local:4", "humaneval", "HumanEval/0")]
    train = (b / "train.jsonl").read_text().splitlines()
    test = (b / "test.jsonl").read_text().splitlines()
    assert len(train) + len(test) == 10 and len(test) == 1
    sft = [json.loads(x) for x in (b / "sft.jsonl").read_text().splitlines()]
    assert len(sft) == len(train)
    usage = json.loads((b / "usage.json").read_text())
    assert usage["entries"] == 12 and usage["requests"] > 0
    if student is not None:
        metrics = json.loads((b / "student" / "metrics.json").read_text())
        assert metrics["steps"] == 2 and metrics["world_size"] == 2 and metrics["records"] == len(sft)
        assert (b / "student" / "model.safetensors").is_file()


@pytest.mark.parametrize("mode", ["incremental", "cumulative"])
def test_train_inputs_across_batches(repo, tmp_path, tool_env, mode):
    """Batch k's training: incremental continues from batch k-1's student on batch k's records; cumulative trains
    the base model on the records of batches 0..k (the dry run's shell commands show the inputs)."""
    write_jsonl(tmp_path / "seeds.jsonl", [{"problem": f"Write function number {i} of the set."} for i in range(3)])
    cfg = yaml.safe_load((repo / "tests" / "data" / "workflow.yaml").read_text())
    cfg["batches"]["max_batches"] = 3
    cfg["generate"] = {"enabled": True}
    cfg["llm"] = {"teacher": {"base_url": "http://127.0.0.1:9/v1", "serve": None}}
    cfg["train"] = {"enabled": True, "across_batches": mode, "base_model": "some/model"}
    cfg["evaluate"] = {"enabled": False}  # without the loop every batch is planned at once (teaching)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    smk(repo, tmp_path, tool_env, "results/seeds/batches_report.json", "--configfile", str(tmp_path / "config.yaml"))
    out = smk(repo, tmp_path, tool_env, "--configfile", str(tmp_path / "config.yaml"), "-n", "-p")
    assert planned_jobs(out)["train"] == 3
    lines = {
        int(m.group(1)): m.group(0)
        for m in re.finditer(r"aiev train .*?--output results/batch_(\d)/student", out.stdout)
    }
    if mode == "incremental":
        assert "--sft results/batch_2/sft.jsonl --previous results/batch_1/student" in lines[2]
        assert "--previous" not in lines[0]
    else:
        assert (
            "--sft results/batch_0/sft.jsonl --sft results/batch_1/sft.jsonl --sft results/batch_2/sft.jsonl"
            in lines[2]
        )
        assert "--previous" not in lines[2]


def loop_config(repo: Path, tmp_path: Path, teacher_url: str, student: Path, **stage) -> Path:
    """Two batches of 6 seeds through the whole loop: a scripted teacher, a tiny local student trained for 2 steps
    by 2 DeepSpeed processes and served by `transformers serve` in the jobs that use it."""
    write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"problem": f"Seed {i}: a function that adds two numbers. SCENARIO={sc}"}
         for i, sc in enumerate(["pass1", "pass1", "fix", "pass1", "never", "pass1"] * 3)],
    )  # fmt: skip
    humaneval = repo / "tests" / "data" / "benchmarks" / "humaneval" / "HumanEval.jsonl"
    cfg = {
        "seeds": {"sources": [{"name": "local", "type": "jsonl", "path": "seeds.jsonl", "text_field": "problem"}]},
        "dedup": {"near": False, "workers": 1},
        "batches": {"batch_size": 6, "shuffle": False, "max_batches": 3},
        "generate": {"enabled": True, "shards": 1, "max_rounds": 2, "sandbox_workers": 1},
        "llm": {
            "teacher": {"base_url": teacher_url, "model": "scripted", "serve": None},
            "student": {"serve": {"engine": "transformers", "startup_timeout_s": 120}},
            "sampling": {"max_tokens": 24},
            "timeout_s": 60,
        },
        "decontam": {"benchmarks": {"humaneval": str(humaneval)}, "workers": 1},
        "train": {"enabled": True, "base_model": str(student), "procs_per_node": 2, "micro_batch_size": 1,
                  "gradient_accumulation_steps": 1, "max_steps": 2, "max_seq_len": 256, "save_every_steps": 0},
        "evaluate": {"sandbox_workers": 1},
        "stage": stage,
        "summary": {"projection": {"seeds": 186000, "generation_jobs": 10, "concurrency": 8}},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def tiny_student(tiny_model) -> Path:
    """The tiny model as the base of a student that `transformers serve` serves (it needs FastAPI)."""
    pytest.importorskip("fastapi")
    return tiny_model


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("branch", ["teacher-stays", "student-takes-over"])
def test_loop_each_branch(repo, tmp_path, tool_env, tiny_student, branch):
    """The paper's loop for real: generate -> curate -> train -> evaluate both -> decide (checkpoint) -> the next
    batch generated by whoever won. Two batches first (a second run then does nothing), then the dry run of the
    third shows the decided branch's jobs, then it runs; then: the summary's settings changed re-run only the
    summary; the teacher's model changed re-runs generation and everything after."""
    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer, dialogue_script

    bwrap_or_skip()
    stage = {} if branch == "teacher-stays" else {"force": "student"}
    two = ["results/batch_1/stage.json"]
    with ScriptedServer(dialogue_script) as teacher:
        cfg = loop_config(repo, tmp_path, teacher.url, tiny_student, **stage)
        if branch == "teacher-stays" and os.environ.get("CI") == "true":
            assert importlib.util.find_spec("evalplus") is not None, "CI scores benchmarks: evalplus must be installed"
        if branch == "teacher-stays" and importlib.util.find_spec("evalplus") is not None:
            # the base model (prompted by completion) and the final student (chat) on 2 tasks of each suite,
            # generated by the served tiny model and scored in the sandbox (evalplus, MultiPL-E, DS-1000)
            data = yaml.safe_load(cfg.read_text())
            excerpt = repo / "tests" / "data" / "benchmarks"
            data["benchmark"] = {"enabled": True, "models": ["base", "final"], "limit": 2, "workers": 1,
                                 "suites": ["humaneval", "mbpp", "multipl-e-js", "ds1000"],
                                 "data": {"humaneval": str(excerpt / "evalplus" / "HumanEvalPlus-v0.1.10.jsonl"),
                                          "mbpp": str(excerpt / "evalplus" / "MbppPlus-v0.2.0.jsonl"),
                                          "multipl_e": str(excerpt / "multipl-e"),
                                          "ds1000": str(excerpt / "ds1000" / "ds1000-libraries.jsonl")}}  # fmt: skip
            cfg.write_text(yaml.safe_dump(data))
        audit = tmp_path / "audit"
        smk(repo, tmp_path, audited(tool_env, audit), *two, "--configfile", str(cfg), "--cores", "2")
        assert planned_jobs(smk(repo, tmp_path, tool_env, *two, "--configfile", str(cfg), "-n")) == {}
        checked = assert_reads_declared(repo, tmp_path, tool_env, audit, "--configfile", str(cfg))
        assert {"train", "evaluate", "decide_stage", "generate"} <= checked, checked
        res = tmp_path / "results"
        s0 = read_json(res / "batch_0" / "stage.json")
        s1 = read_json(res / "batch_1" / "stage.json")
        assert s0["stage"] == "teaching" and s0["teacher"]["n"] == 1 and s0["policy"]["compare"] == "higher"
        assert s0["student"]["passed"] == 0  # a 2-step tiny random model writes no code
        assert s0["student"]["identity"]["file"] == "student"  # its name and content hash, never a path
        assert len(s0["student"]["identity"]["sha256"]) == 64
        batch1 = [json.loads(x) for f in ("dialogues.jsonl", "rejects.jsonl")
                  for x in (res / "batch_1" / f).read_text().splitlines()]  # fmt: skip
        assert len(batch1) == 6
        gen_log = (res / "logs" / "generate" / "batch_1.shard_0.log").read_text()
        if branch == "teacher-stays":
            assert s0["next"] == "teaching" and s1["stage"] == "teaching"
            assert {e["stage"] for e in batch1} == {"teaching"} and {e["model"] for e in batch1} == {"scripted"}
            assert "starting transformers" not in gen_log
        else:
            assert s0["next"] == "self-learning" and "forced" in s0["reason"] and s1["stage"] == "self-learning"
            # batch 1 was generated by batch 0's student, served inside the job, playing both agents
            assert {e["stage"] for e in batch1} == {"self-learning"}
            assert {e["model"] for e in batch1} == {"results/batch_0/student"}
            identities = {e["provenance"]["model_identity"]["sha256"] for e in batch1}
            assert identities == {s0["student"]["identity"]["sha256"]}
            usage = read_json(res / "batch_1" / "usage.json")
            served = re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200', gen_log)
            assert "starting transformers" in gen_log and "results/batch_0/student" in gen_log
            sent = read_json(res / "batch_1" / "shards" / "0.report.json")["this_run"]
            # every request the dialogues made reached the served student, or was an identical one's cached reply
            assert sent["requests"] > 0 and len(served) == sent["requests"]
            assert sent["requests"] + sent["cached"] == usage["requests"]

        # the dry run of batch 2 follows the decision of batch 1
        out = smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n", "-p")
        plan = planned_jobs(out)
        assert plan["generate"] == 1 and plan["train"] == 1 and plan["evaluate"] == 2 and plan["decide_stage"] == 1
        # (the data set and the summary are planned once batch 2's decision exists: rule all reads every decision)
        gen_cmd = next(ln for ln in out.stdout.splitlines() if "aiev generate" in ln and "--batch-index 2" in ln)
        if branch == "teacher-stays":
            assert "--stage teaching" in gen_cmd and "aiev serve" not in gen_cmd
        else:
            assert "--stage self-learning" in gen_cmd
            assert "aiev serve --role student --model results/batch_1/student" in gen_cmd
        audit = tmp_path / "audit-all"
        smk(repo, tmp_path, audited(tool_env, audit), "--configfile", str(cfg), "--cores", "2")
        assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n")) == {}
        checked = assert_reads_declared(repo, tmp_path, tool_env, audit, "--configfile", str(cfg))
        assert {"generate", "train", "evaluate", "decide_stage", "dataset", "summary", "plots"} <= checked, checked
        if "benchmark" in yaml.safe_load(cfg.read_text()):
            assert {"benchmark_generate", "benchmark_score"} <= checked, checked

    stages = [read_json(res / f"batch_{k}" / "stage.json") for k in range(3)]
    batch2 = [json.loads(x) for f in ("dialogues.jsonl", "rejects.jsonl")
              for x in (res / "batch_2" / f).read_text().splitlines()]  # fmt: skip
    assert {e["stage"] for e in batch2} == {stages[1]["next"]} and stages[2]["stage"] == stages[1]["next"]
    gen_log = (res / "logs" / "generate" / "batch_2.shard_0.log").read_text()
    if branch == "teacher-stays":
        assert stages[1]["next"] == "teaching" and {e["model"] for e in batch2} == {"scripted"}
    else:
        # batch 1's own student generated batch 2; when batch 1 (all written by a 2-step tiny student, so all
        # rejected) had nothing to train on, its student is batch 0's checkpoint, hard-linked into its own folder,
        # so the jobs that read batch 1's student read only their declared input (the read audit above)
        assert {e["model"] for e in batch2} == {"results/batch_1/student"} and "results/batch_1/student" in gen_log
        report1 = read_json(res / "batch_1" / "train_report.json")
        if report1["trained"] is False and (res / "batch_0" / "student" / "config.json").exists():
            assert report1["linked"] is True
            assert os.path.samefile(
                res / "batch_1" / "student" / "config.json", res / "batch_0" / "student" / "config.json"
            )
            assert not (res / "batch_1" / "student" / "metrics.json").exists()
    summary = read_json(res / "summary.json")
    assert [b["stage"] for b in summary["batches"]] == [s["stage"] for s in stages]
    assert [b["next"] for b in summary["batches"]] == [s["next"] for s in stages]
    assert summary["totals"]["seeds"] == 18 and summary["paper"]["entries"] == 169000
    assert summary["projection"]["seeds"] == 186000 and summary["projection"]["batches"] == 31000
    # the released data set loads with `datasets` (its card's configs), and its counts are the summary's
    from datasets import load_dataset

    released = load_dataset(str(res / "dataset"), cache_dir=str(tmp_path / "hf-cache"))
    counts = {split: len(released[split]) for split in released}
    assert sum(counts.values()) == summary["totals"]["kept"] == summary["dataset_entries"]
    assert counts.get("train", 0) == summary["totals"]["train"] and counts.get("test", 0) == summary["totals"]["test"]
    assert {row["split"] for split in released for row in released[split]} <= {"train", "test"}
    card = (res / "dataset" / "README.md").read_text()
    assert card.startswith("---\n") and f"num_examples: {counts['train']}" in card
    assert "Run summary" in (res / "summary.md").read_text()
    if yaml.safe_load(cfg.read_text()).get("benchmark", {}).get("enabled"):
        for suite in ("humaneval", "mbpp", "multipl-e-js", "ds1000"):
            scores = read_json(res / "benchmarks" / "student_2" / f"{suite}.json")
            made = read_json(res / "benchmarks" / "student_2" / f"{suite}.generate.json")
            assert (scores["n"] == 2 and scores["limit"] == 2) or scores.get("skipped")  # no node: skipped, said why
            assert made["model"] == "results/batch_2/student" and made["mode"] == "chat"
            assert made["identity"]["sha256"] == stages[2]["student"]["identity"]["sha256"]
            base = read_json(res / "benchmarks" / "base" / f"{suite}.generate.json")
            assert base["mode"] == "completion" and base["model"] == str(tiny_student) and base["n"] == 2
            assert (res / "benchmarks" / "base" / f"{suite}.json").exists()
        md = (res / "summary.md").read_text()
        assert set(summary["benchmarks"]) == {"base", "student_2"} and "AutoCoder-33B (paper)" in md
        assert "| model | humaneval | humaneval+ | mbpp | mbpp+ | multipl-e-js | ds1000 |" in md

    if branch == "teacher-stays":
        check_report(repo, tmp_path, tool_env, cfg, summary)

    # only the summary's settings changed: only the summary (and the plots drawn from it) re-run
    data = yaml.safe_load(cfg.read_text())
    data["summary"]["projection"]["generation_jobs"] = 20
    cfg.write_text(yaml.safe_dump(data))
    plan = planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n"))
    assert plan == {"summary": 1, "plots": 1, "all": 1}, plan

    # the teacher's model changed: generation re-runs, and everything after it. The dry run plans batch 0's
    # chain up to its decision (the later batches are planned once that checkpoint has run again)
    data["llm"]["teacher"]["model"] = "scripted-2"
    cfg.write_text(yaml.safe_dump(data))
    plan = planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(cfg), "-n"))
    assert plan == {"generate": 1, "merge_dialogues": 1, "check_tests": 1, "decontaminate": 1, "split": 1, "format": 1,
                    "train": 1, "evaluate": 2, "decide_stage": 1, "all": 1}, plan  # fmt: skip


def test_the_student_takes_over_by_its_score(repo, tmp_path, tool_env, tiny_model):
    """The paper's switch with no `force`: on batch 0's test split the teacher's first answer is wrong (scenario
    `fix`: it only fixes its code after feedback), the student (a stand-in engine that serves the trained
    checkpoint's path and always writes the right code) passes; `decide_stage` compares the scores, chooses
    self-learning, and batch 1 is generated by that student, its identity in every entry's provenance."""
    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer, dialogue_script

    bwrap_or_skip()
    with ScriptedServer(dialogue_script) as teacher:
        cfg = loop_config(repo, tmp_path, teacher.url, tiny_model)
        data = yaml.safe_load(cfg.read_text())
        write_jsonl(tmp_path / "seeds.jsonl",
                    [{"problem": f"Seed {i}: add two numbers. SCENARIO={'fix' if i < 6 else 'pass1'}"}
                     for i in range(12)])  # fmt: skip
        data["batches"]["max_batches"] = 2
        solver = f"{sys.executable} {repo / 'tests' / 'fake_engine.py'} --port {{port}} --name {{name}} --solver"
        data["llm"]["student"] = {"serve": {"engine": "command", "command": solver, "startup_timeout_s": 60}}
        cfg.write_text(yaml.safe_dump(data))
        smk(repo, tmp_path, tool_env, "results/batch_1/stage.json", "--configfile", str(cfg), "--cores", "2")
    res = tmp_path / "results"
    s0, s1 = read_json(res / "batch_0" / "stage.json"), read_json(res / "batch_1" / "stage.json")
    assert (s0["teacher"]["n"], s0["teacher"]["passed"], s0["student"]["passed"]) == (1, 0, 1), s0
    assert s0["policy"].get("force") is None and "force" not in s0["reason"]
    assert s0["next"] == "self-learning" and s1["stage"] == "self-learning", s0["reason"]
    batch1 = [json.loads(x) for f in ("dialogues.jsonl", "rejects.jsonl")
              for x in (res / "batch_1" / f).read_text().splitlines()]  # fmt: skip
    assert len(batch1) == 6 and all(e["passed"] and e["rounds"] == 1 for e in batch1)
    assert {e["stage"] for e in batch1} == {"self-learning"}
    assert {e["provenance"]["model_identity"]["sha256"] for e in batch1} == {s0["student"]["identity"]["sha256"]}


def check_report(repo: Path, workdir: Path, env: dict, cfg: Path, summary: dict) -> None:
    """`snakemake --report` on the finished tiny run: every plot and table is in it with the captions' numbers of
    this run; headless Chromium opens it without a JavaScript error, and each plot, shown as a click shows it,
    is decoded and paints the page (screenshots)."""
    from tests.report.browser import chromium, open_report

    report = workdir / "results" / "report.html"
    smk(repo, workdir, env, "--configfile", str(cfg), "--report", str(report))
    html = report.read_text()
    names = ["rounds", "rejections", "usage", "checks", "decontam", "stages", "loss", "benchmarks"]
    for name in names:
        assert f"results/report/{name}.svg" in html, name
    for name in ("results/report/batches.html", "results/report/benchmarks.html", "results/summary.md"):
        assert name in html
    t = summary["totals"]
    # the captions state this run's numbers (rendered from results/report/*.rst into the report)
    assert f"{t['passed']} of {t['seeds']} dialogues passed" in html
    assert f"{t['rejected']} dialogues rejected" in html
    assert f"{t['requests']:,} requests" in html and "The teacher generated every batch" in html
    assert "AIEV-INSTRUCT with aiev" in html and "batches of 6" in html  # the workflow description, with its config
    if chromium() is None:  # (the rest of the loop test goes on; under CI that is a failure)
        if os.environ.get("CI") == "true":
            pytest.fail("no chromium under CI=true: the report must be opened (scripts/system-deps.sh test)")
        warnings.warn("no chromium (scripts/system-deps.sh test installs it): the report was not opened", stacklevel=1)
        return
    from PIL import Image

    seen = open_report(report, workdir / "shots")
    assert seen["errors"] == [], seen["errors"]
    shown = {Path(p).stem: v for p, v in seen["shown"].items()}
    assert set(shown) == set(names)
    pictures = set()
    for name, v in shown.items():
        assert v["size"][0] > 300 and v["size"][1] > 100, (name, v["size"])  # the SVG decoded to its size
        pane = Image.open(v["screenshot"]).convert("L").crop((300, 0, 1400, 1000))
        dark = sum(pane.histogram()[:128])
        assert dark > 2000, (name, dark)  # axes, bars, lines and labels drawn
        pictures.add(pane.tobytes())
    assert len(pictures) == len(names)  # each click showed a different plot


def test_rulegraph_shows_the_loop(repo, tmp_path, tool_env):
    write_jsonl(tmp_path / "seeds.jsonl", [{"problem": "Write a function."}])
    cfg = yaml.safe_load((repo / "tests" / "data" / "workflow.yaml").read_text())
    cfg["generate"] = {"enabled": True}
    cfg["train"] = {"enabled": True}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    smk(repo, tmp_path, tool_env, "results/seeds/batches_report.json", "--configfile", str(tmp_path / "config.yaml"))
    out = smk(repo, tmp_path, tool_env, "--configfile", str(tmp_path / "config.yaml"), "--rulegraph")
    labels = set(re.findall(r'label = "(\w+)"', out.stdout))
    loop = {"generate", "merge_dialogues", "check_tests", "decontaminate", "split", "format", "train", "evaluate",
            "decide_stage"}  # fmt: skip
    # (the data set and the summary join the graph once every batch's decision exists: rule all reads them)
    assert loop | {"all"} <= labels, labels
