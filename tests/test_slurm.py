"""The slurm profile against a real SLURM cluster: the one-node cluster of scripts/slurm-cluster.sh, which .ci/run
starts (and stops, also on failure) around the tests, setting AIEV_SLURM_TESTS=1. Every run here is
`snakemake --profile profiles/slurm` with CI's overrides (tests/slurm/profile: account, partition, small
resources): the tiny loop end to end, its results equal to a local run's and every job COMPLETED in sacct; the
training launched under SLURM; then the faults: a job killed for memory retried with more, a failing batch that
costs the others nothing, snakemake itself killed mid-run, and the node set DOWN under a running job.

README's test command runs these tests in two pytest sessions at once (scripts/run-tests.sh: the tiny loop, and
the rest): they spend most of their time waiting for SLURM. They share the cluster, except the test that sets the
node DOWN, which would kill the other session's jobs: it holds the cluster alone (:func:`the_cluster`)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from tests.conftest import write_jsonl
from tests.test_workflow import loop_config, smk

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(
        os.environ.get("AIEV_SLURM_TESTS") != "1" or shutil.which("sbatch") is None,
        reason="needs the local SLURM cluster: scripts/slurm-cluster.sh start, then AIEV_SLURM_TESTS=1 (.ci/run)",
    ),
]

REPO = Path(__file__).resolve().parents[1]
#: The lock the SLURM sessions take the cluster by (scripts/run-tests.sh names one per test run).
LOCK = Path(os.environ.get("AIEV_SLURM_LOCK") or Path(tempfile.gettempdir()) / "aiev-slurm-tests.lock")


@pytest.fixture(autouse=True)
def the_cluster(request):
    """Each SLURM test shares the cluster with the other session's, but one marked ``slurm_alone`` holds it
    alone: it waits until no other test runs on it, and none starts until it is done."""
    alone = request.node.get_closest_marker("slurm_alone") is not None
    with open(LOCK, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_UN)


HOST = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout.strip()


def slurm_cmd(workdir: Path, *args: str) -> list[str]:
    profiles = ["--profile", str(REPO / "profiles" / "slurm"), "--workflow-profile", str(REPO / "tests/slurm/profile")]
    return ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--verbose", *profiles, *args]


def slurm_smk(workdir: Path, env: dict, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run(slurm_cmd(workdir, *args), env=env, capture_output=True, text=True, timeout=1800)
    if ok:
        assert out.returncode == 0, (out.stdout + out.stderr)[-6000:]
    return out


def slurm_jobs(text: str) -> dict[str, str]:
    """SLURM job id -> rule, for every job this snakemake submitted (its log's lines)."""
    ids = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: .*?/rule_(\w+)/", text)
    return {jid: rule for jid, rule in ids}


def sacct(ids: list[str]) -> list[dict[str, str]]:
    """sacct's allocation records of these jobs (JobID, JobName, Comment (the rule), State, ExitCode, ReqMem)."""
    fields = ["JobID", "JobName", "Comment", "State", "ExitCode", "ReqMem", "NodeList", "Elapsed"]
    deadline = time.time() + 60
    while True:  # slurmdbd records a job's end a moment after it ends
        out = subprocess.run(["sacct", "-X", "-n", "-P", "-D", "-j", ",".join(ids), "-o", ",".join(fields)],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        rows = [dict(zip(fields, ln.split("|"), strict=True)) for ln in out.splitlines() if ln.strip()]
        if all(r["State"] not in ("RUNNING", "PENDING") for r in rows) or time.time() > deadline:
            return rows
        time.sleep(1)


def rule_of(record: dict[str, str]) -> str:
    """The rule of a SLURM job: the plugin's --comment is rule_NAME[_wildcards_VALUES]."""
    return record["Comment"].removeprefix("rule_").split("_wildcards_")[0]


def comparable(path: Path) -> list[dict]:
    """The entries of a run without what differs between any two runs (times, hosts, usage)."""
    keys = ("id", "seed_id", "batch", "stage", "model", "rounds", "passed", "reason", "problem", "solution", "tests")
    rows = []
    for line in path.read_text().splitlines():
        e = json.loads(line)
        msgs = [{k: m.get(k) for k in ("role", "content", "agent", "exit_code")} for m in e["messages"]]
        rows.append({**{k: e.get(k) for k in keys}, "messages": msgs})
    return sorted(rows, key=lambda r: r["id"])


@pytest.fixture
def tiny_student(tiny_model) -> Path:
    pytest.importorskip("fastapi")
    return tiny_model


def test_the_tiny_loop_through_slurm_equals_a_local_run(tmp_path, tool_env, tiny_student):
    """Two batches of the loop (generate, curate, train by 2 ranks, evaluate both models, decide) with a scripted
    teacher: every non-local job went through SLURM and COMPLETED, training ran as one rendezvous of 2 ranks in
    a SLURM job, and the results equal those of the same config run locally."""
    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer, dialogue_script

    bwrap_or_skip()
    with ScriptedServer(dialogue_script) as teacher, ThreadPoolExecutor(1) as pool:
        # The local run goes on beside the SLURM one (the scripted teacher answers from each request alone): the
        # SLURM run mostly waits on the plugin's status checks, so the test costs about the SLURM run's time.
        runs: dict = {}
        configs = {}
        for kind in ("local", "slurm"):
            work = tmp_path / kind
            work.mkdir()
            cfg = loop_config(REPO, work, teacher.url, tiny_student)
            data = yaml.safe_load(cfg.read_text())
            data["batches"]["max_batches"] = 2
            cfg.write_text(yaml.safe_dump(data))
            configs[kind] = cfg
            runs[kind] = work / "results"
        local = pool.submit(smk, REPO, tmp_path / "local", tool_env, "--configfile", str(configs["local"]), "--cores",
                            "1")  # fmt: skip
        start = time.monotonic()
        out = slurm_smk(tmp_path / "slurm", tool_env, "--configfile", str(configs["slurm"]))
        runs["seconds"] = time.monotonic() - start
        runs["log"] = out.stdout + out.stderr
        local.result()

    jobs = slurm_jobs(runs["log"])
    rules = sorted(set(jobs.values()))
    # every rule of the loop ran as SLURM jobs; seeds (a localrule: it may download) and the target did not
    assert {"dedup", "batches", "generate", "merge_dialogues", "decontaminate", "split", "format", "train",
            "evaluate", "decide_stage", "dataset", "summary"} <= set(rules), rules  # fmt: skip
    assert "seeds" not in rules and "all" not in rules
    records = sacct(list(jobs))
    assert len(records) == len(jobs) and {r["State"] for r in records} == {"COMPLETED"}, records
    assert {rule_of(r) for r in records} == set(rules)
    table = "\n".join(f"{r['JobID']:>6} {r['Comment']:<40} {r['State']:<10} {r['ExitCode']:<5} {r['ReqMem']:>7} "
                      f"{r['NodeList']} {r['Elapsed']}" for r in records)  # fmt: skip
    (REPO / "results").mkdir(exist_ok=True)
    (REPO / "results" / "ci-slurm-sacct.txt").write_text(
        f"# {len(records)} SLURM jobs, {runs['seconds']:.0f} s (tests/test_slurm.py)\n{table}\n"
    )  # fmt: skip
    print(table)

    # training: one SLURM job, one rendezvous, 2 ranks
    train_log = (runs["slurm"] / "logs" / "train" / "batch_0.log").read_text()
    joined = re.findall(r"\[rank (\d)\] joined: rank \d of (\d) on (\S+), rendezvous (\S+), SLURM job (\d+)", train_log)
    assert sorted(j[0] for j in joined) == ["0", "1"] and {j[1] for j in joined} == {"2"}, train_log[-3000:]
    assert len({j[3] for j in joined}) == 1 and {j[4] for j in joined} <= set(jobs)
    assert {jobs[j[4]] for j in joined} == {"train"} and {j[2] for j in joined} == {HOST}

    for k in (0, 1):
        for name in ("dialogues.jsonl", "rejects.jsonl", "train.jsonl", "test.jsonl"):
            assert comparable(runs["slurm"] / f"batch_{k}" / name) == comparable(runs["local"] / f"batch_{k}" / name)
        local, remote = (json.loads((runs[r] / f"batch_{k}" / "stage.json").read_text()) for r in ("local", "slurm"))
        assert (remote["stage"], remote["next"], remote["teacher"]["passed"], remote["teacher"]["n"]) == (
            local["stage"], local["next"], local["teacher"]["passed"], local["teacher"]["n"])  # fmt: skip

    def released(run: Path) -> list[str]:
        shards = sorted((run / "dataset" / "jsonl").glob("*.jsonl"))
        return [json.loads(x)["id"] for f in shards for x in f.read_text().splitlines()]

    assert released(runs["slurm"]) == released(runs["local"]) and released(runs["local"])


def twice(server) -> list[str]:
    """The last message of each request answered more than once (for the failure message)."""
    return [server.requests[i]["messages"][-1]["content"][:300] for i in first_of_repeated(server)]


def first_of_repeated(server) -> list[int]:
    """The index (arrival order) of the first asking of each request answered more than once."""
    import hashlib

    keys = {k for k, c in server.served.items() if c > 1}
    seen, out = set(), []
    for i, req in enumerate(server.requests):
        key = hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()
        if key in keys and key not in seen:
            seen.add(key)
            out.append(i)
    return out


def seeded_script(messages: list[dict[str, str]]) -> str:
    """The scripted teacher, its replies marked with the seed they belong to: every request of a dialogue is then
    unique to its seed, so `repeated` counts only what was paid twice."""
    from tests.scripted_server import dialogue_script

    seed = seed_of(messages)
    return dialogue_script(messages) + (f"\n(seed {seed})" if seed is not None else "")


def seed_of(messages: list[dict[str, str]]) -> int | None:
    found = re.search(r"[Ss]eed (\d+)", " ".join(m["content"] for m in messages))
    return int(found[1]) if found else None


def curation_config(work: Path, teacher_url: str, batches: int = 2, **extra) -> Path:
    """Seeds -> batches -> generate (scripted teacher) -> curate, no training: the batches are independent."""
    write_jsonl(work / "seeds.jsonl", [{"problem": f"Seed {i}: a function that adds two numbers. SCENARIO=pass1"}
                                       for i in range(3 * batches)])  # fmt: skip
    cfg = {
        "seeds": {"sources": [{"name": "local", "type": "jsonl", "path": "seeds.jsonl", "text_field": "problem"}]},
        "dedup": {"near": False, "workers": 1},
        "batches": {"batch_size": 3, "shuffle": False},
        "generate": {"enabled": True, "shards": 1, "max_rounds": 2, "sandbox_workers": 1},
        "llm": {"teacher": {"base_url": teacher_url, "model": "scripted", "serve": None}, "timeout_s": 30,
                "max_retries": 1},
        "decontam": {"benchmarks": {"humaneval": str(REPO / "tests/data/benchmarks/humaneval/HumanEval.jsonl")},
                     "workers": 1},
        **extra,
    }  # fmt: skip
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_job_killed_for_memory_is_retried_with_more(tmp_path, tool_env):
    """dedup asks for 100 MB on its first attempt (the cgroup kills it: OUT_OF_MEMORY) and for more on the
    retry, which completes: the run succeeds."""
    work = tmp_path
    write_jsonl(work / "seeds.jsonl", [{"problem": f"Write function number {i} that adds."} for i in range(4)])
    cfg = {"seeds": {"sources": [{"name": "local", "type": "jsonl", "path": "seeds.jsonl", "text_field": "problem"}]},
           "batches": {"batch_size": 2}}  # fmt: skip
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = slurm_smk(work, tool_env, "--configfile", str(work / "config.yaml"), "--retries", "2",
                    "--set-resources", "dedup:mem_mb=100 if attempt == 1 else 4000")  # fmt: skip
    dedup = [j for j, r in slurm_jobs(out.stdout + out.stderr).items() if r == "dedup"]
    records = sacct(dedup)
    assert [(r["State"], r["ReqMem"]) for r in records] == [("OUT_OF_MEMORY", "100M"), ("COMPLETED", "4000M")]
    assert (work / "results" / "seeds" / "batches_report.json").exists()


def test_a_failing_batch_costs_the_others_nothing(tmp_path, tool_env):
    """The teacher fails every request of batch 1: its generation job fails, batch 0 is finished all the same
    (--keep-going); with the teacher mended, the next run runs batch 1 only and asks nothing of batch 0 again."""
    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer

    bwrap_or_skip()
    broken = {"on": True}

    def script(messages):
        if broken["on"] and seed_of(messages) in (3, 4, 5):
            raise RuntimeError("the teacher is down for batch 1")
        return seeded_script(messages)

    with ScriptedServer(script) as teacher:
        cfg = curation_config(tmp_path, teacher.url)
        first = slurm_smk(tmp_path, tool_env, "--configfile", str(cfg), "--keep-going", ok=False)
        assert first.returncode != 0
        assert (tmp_path / "results" / "batch_0" / "sft.jsonl").exists()
        assert not (tmp_path / "results" / "batch_1" / "dialogues.jsonl").exists()
        failed = [r for r in sacct(list(slurm_jobs(first.stdout + first.stderr))) if r["State"] != "COMPLETED"]
        assert {rule_of(r) for r in failed} == {"generate"}, failed
        batch0 = (tmp_path / "results" / "batch_0" / "sft.jsonl").stat().st_mtime_ns
        asked = teacher.received
        broken["on"] = False
        second = slurm_smk(tmp_path, tool_env, "--configfile", str(cfg))
        rerun = set(slurm_jobs(second.stdout + second.stderr).values())
        assert "dedup" not in rerun and "batches" not in rerun and "generate" in rerun
        assert (tmp_path / "results" / "batch_0" / "sft.jsonl").stat().st_mtime_ns == batch0
        assert (tmp_path / "results" / "batch_1" / "sft.jsonl").exists()
        assert [seed_of(r["messages"]) for r in teacher.requests[asked:] if seed_of(r["messages"]) in (0, 1, 2)] == []
        assert teacher.repeated == 0, twice(teacher)  # no identical request answered twice: nothing paid twice


def test_snakemake_killed_mid_run_then_run_again_redoes_nothing_and_pays_nothing_twice(tmp_path, tool_env):
    """kill -9 of snakemake while a generation job runs on SLURM (its job goes on: nobody cancels it). After
    it ends, `snakemake --unlock` and the same command finish the run: finished jobs are not redone, and no
    request is answered twice (the interrupted job resumes from its stored replies)."""
    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer

    bwrap_or_skip()
    with ScriptedServer(seeded_script, latency_s=1.5) as teacher:
        cfg = curation_config(tmp_path, teacher.url)
        log = tmp_path / "first.log"
        with open(log, "w") as fh:
            head = subprocess.Popen(slurm_cmd(tmp_path, "--configfile", str(cfg)), env=tool_env, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.time() + 600
        while time.time() < deadline and teacher.received < 2:
            assert head.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        first = slurm_jobs(log.read_text())
        while subprocess.run(["squeue", "-h", "-j", ",".join(first)], capture_output=True, text=True).stdout.strip():
            time.sleep(1)  # the orphaned jobs finish on their own
        done_before = {rule_of(r) for r in sacct(list(first)) if r["State"] == "COMPLETED"}
        subprocess.run(slurm_cmd(tmp_path, "--configfile", str(cfg), "--unlock"), env=tool_env, check=True,
                       capture_output=True)  # fmt: skip
        second = slurm_smk(tmp_path, tool_env, "--configfile", str(cfg))
        rerun = slurm_jobs(second.stdout + second.stderr)
        assert not ({"dedup", "batches"} & done_before & set(rerun.values()))
        assert {r["State"] for r in sacct(list(rerun))} == {"COMPLETED"}
        assert (tmp_path / "results" / "batch_1" / "sft.jsonl").exists()
        assert teacher.repeated == 0, twice(teacher)  # every reply was paid once, across the kill


@pytest.mark.slurm_alone
def test_a_node_set_down_under_a_running_job_gets_it_requeued(tmp_path, tool_env):
    """The node is set DOWN while a generation job runs: SLURM kills it (NODE_FAIL) and, the profile asking for
    --requeue, puts it back in the queue under the same job id; once the node is back it runs again and
    completes, resuming from its stored replies (nothing is paid twice). snakemake-executor-plugin-slurm 2.8.0
    then passes `--exclude=None assigned` to every later sbatch (its issue #485), which stops the run: the same
    command run again finishes it without redoing the requeued job. (Once the plugin is fixed the first run
    finishes by itself, which this test also accepts.)"""
    from tests.generate.test_dialogue import bwrap_or_skip
    from tests.scripted_server import ScriptedServer

    bwrap_or_skip()
    with ScriptedServer(seeded_script, latency_s=1.5) as teacher:
        cfg = curation_config(tmp_path, teacher.url, batches=1)
        log = tmp_path / "run.log"
        with open(log, "w") as fh:
            run = subprocess.Popen(slurm_cmd(tmp_path, "--configfile", str(cfg)), env=tool_env, stdout=fh,
                                   stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.time() + 600
            while time.time() < deadline and teacher.received < 3:  # some replies stored, others in flight
                assert run.poll() is None, log.read_text()[-3000:]
                time.sleep(0.2)
            subprocess.run(["scontrol", "update", f"nodename={HOST}", "state=down", "reason=aiev-ci"], check=True)
            at_failure = teacher.received
            time.sleep(5)
        finally:
            subprocess.run(["scontrol", "update", f"nodename={HOST}", "state=resume"], check=False)
        first = run.wait(timeout=900)
        text = log.read_text()
        if first != 0:
            assert "--exclude=None assigned" in text and "Unable to open file assigned" in text, text[-5000:]
            again = slurm_smk(tmp_path, tool_env, "--configfile", str(cfg))
            assert "generate" not in slurm_jobs(again.stdout + again.stderr).values()
        # only what was in flight when the node died (the job's 3 dialogues at once) is asked again: a reply the
        # endpoint sent but the dying job never stored; every stored reply was reused
        assert all(i >= at_failure - 3 for i in first_of_repeated(teacher)), (at_failure, twice(teacher))
    gen = [j for j, r in slurm_jobs(text).items() if r == "generate"]
    assert len(gen) == 1  # one submission: SLURM ran it again under the same id
    out = subprocess.run(["sacct", "-n", "-P", "-D", "-X", "-j", gen[0], "-o", "JobID,State"], capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    states = [ln.split("|")[1] for ln in out.splitlines() if ln.strip()]
    assert states == ["NODE_FAIL", "COMPLETED"], states
    assert (tmp_path / "results" / "batch_0" / "sft.jsonl").exists()


def test_doctor_checks_the_slurm_prerequisites(tool_env):
    """`aiev doctor --slurm`: on this cluster with CI's overrides everything is found; with the profile as
    shipped, the placeholder account and partitions are named with their fix."""
    import sys

    def doctor(*profiles: str) -> dict[str, dict]:
        cmd = [sys.executable, "-m", "aiev", "doctor", "--config", '{"generate": {"enabled": false}}', "--json"]
        out = subprocess.run([*cmd, "--slurm", *profiles], cwd=REPO, env=tool_env, capture_output=True, text=True)
        return {f["check"]: f for f in json.loads(out.stdout)["findings"] if f["check"].startswith("slurm")}

    ci = doctor("profiles/slurm", "tests/slurm/profile")
    assert {f["status"] for f in ci.values()} == {"ok"}, ci
    assert {"slurm accounting", "slurm account", "slurm partition debug"} <= set(ci)
    shipped = doctor("profiles/slurm")
    assert shipped["slurm account"]["status"] == "FAIL" and "my_account" in shipped["slurm account"]["detail"]
    assert shipped["slurm partition gpu"]["status"] == "FAIL"
