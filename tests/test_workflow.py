"""The Snakemake workflow, run for real on a tiny config: outputs, nothing stale, minimal re-runs."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl

pytestmark = pytest.mark.workflow


def smk(repo: Path, workdir: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    cmd = ["snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), "--cores", "1", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


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


def test_generation_and_curation_through_the_dag(repo, tmp_path, tool_env):
    """seeds -> dedup -> batches -> generate (2 shards) -> merge -> decontaminate -> split -> format, for real:
    a scripted OpenAI-compatible server plays the teacher, programs run in the sandbox, and one dialogue whose
    solution is HumanEval/0 is removed by decontamination."""
    import gzip

    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer, dialogue_script

    bwrap_or_skip()
    humaneval = repo.parent / "shared" / "data" / "benchmarks" / "humaneval" / "HumanEval.jsonl.gz"
    if not humaneval.exists():  # a fresh clone without ../shared: the committed excerpt has HumanEval/0 too
        humaneval = repo / "tests" / "data" / "benchmarks" / "humaneval" / "HumanEval.jsonl"
    with (gzip.open if humaneval.suffix == ".gz" else open)(humaneval, "rt") as fh:
        task0 = json.loads(fh.readline())
    leaked = task0["prompt"] + task0["canonical_solution"]

    def script(messages):
        if "SCENARIO=leak" in messages[1]["content"] and messages[0]["content"].startswith("You are the programmer"):
            tests = "assert has_close_elements([1.0, 2.0, 3.0], 0.5) is False\n"
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
        }
        student = None
        if importlib.util.find_spec("deepspeed") is not None:  # the train rule too, on a tiny local model
            from tests.train.test_train import make_tiny_model, tiny_tokenizer

            student = tmp_path / "tiny-model"
            student.mkdir()
            make_tiny_model(student, tiny_tokenizer(student))
            cfg["train"] = {"enabled": True, "base_model": str(student), "procs_per_node": 2, "micro_batch_size": 1,
                            "gradient_accumulation_steps": 1, "max_steps": 2, "max_seq_len": 512}  # fmt: skip
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
        smk(repo, tmp_path, tool_env, "--configfile", str(tmp_path / "config.yaml"))
        assert planned_jobs(smk(repo, tmp_path, tool_env, "--configfile", str(tmp_path / "config.yaml"), "-n")) == {}
    b = tmp_path / "results" / "batch_0"
    dialogues = [json.loads(x) for x in (b / "dialogues.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (b / "rejects.jsonl").read_text().splitlines()]
    assert len(dialogues) == 11 and len(rejects) == 1 and rejects[0]["seed_id"] == "local:3"
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
