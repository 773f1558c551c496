# Input functions and helpers shared by all .smk files (no step logic: that lives in the aiev package).
import json
import os
import shlex
import sys

# The rules read names from this checkout's aiev package (the benchmark suites, the report's figures), also where
# snakemake itself runs without aiev installed (--sdm conda): those modules need the standard library only.
sys.path.insert(0, workflow.basedir)
from aiev.suites import family, wildcard_pattern


def sections(*names):
    """Config sections as compact JSON, passed to `aiev <step> --config`, as a params function.

    Only these sections travel, so a change elsewhere in the config does not re-run the step
    (Snakemake re-runs a job when its params change). A function, not a string: Snakemake fills a
    string param's {braces} with wildcards, so a value such as a server command template's {port}
    would fail the rule; a function's value is passed as it is."""
    text = json.dumps(
        {n: config[n] for n in names}, sort_keys=True, separators=(",", ":")
    )
    return lambda wildcards: text


wildcard_constraints:
    k=r"\d+",
    s=r"\d+",
    who="teacher|student",
    model=r"base|student_\d+",
    suite=wildcard_pattern(),


# The one place that names a batch file (aiev.seeds.batches writes the same pattern).
BATCH_FILE = "results/seeds/batches/batch_{k}.jsonl"


def batch_ids(wildcards=None):
    """Batch indices written by the `batches` checkpoint (evaluated once it has run)."""
    checkpoints.batches.get()
    return sorted(int(k) for k in glob_wildcards(BATCH_FILE).k)


def batch_file(wildcards):
    checkpoints.batches.get()
    return BATCH_FILE.format(k=wildcards.k)


def loop_enabled():
    """The paper's loop (train, evaluate both models, decide the next stage) runs after every batch."""
    return (
        config["generate"]["enabled"]
        and config["train"]["enabled"]
        and config["evaluate"]["enabled"]
    )


def student_dir(k):
    return f"results/batch_{k}/student"


def generation(wildcards):
    """Who generates batch k, decided in one place. Batch 0, and every batch when the loop is off: the teaching
    stage (the teacher plays both agents). Batch k > 0: what the `decide_stage` checkpoint of batch k-1 wrote;
    in the self-learning stage the student trained on batch k-1 is served inside the job and plays both agents.
    """
    k = int(wildcards.k)
    stage = "teaching"
    if k > 0 and loop_enabled():
        with open(checkpoints.decide_stage.get(k=k - 1).output.stage) as fh:
            stage = json.load(fh)["next"]
    if stage == "self-learning":
        model = student_dir(k - 1)
        return {"stage": stage, "model": model, "serve": serve_prefix("student", model)}
    return {"stage": stage, "model": [], "serve": serve_prefix("teacher")}


def decided_stages():
    """Every batch's stage record, read through the `decide_stage` checkpoint in batch order. The targets that
    cover all batches (rule all, the summary) ask for them this way so that each decision is registered before
    the jobs of the next batch are built: a re-run after batches 0..k finished (preemption, more batches) then
    builds batch k+1's generation with its real stage (Snakemake 9 leaves an input function that reads an
    already finished checkpoint unevaluated, <TBD>, when the job is first built during a checkpoint update).
    """
    return [checkpoints.decide_stage.get(k=k).output.stage for k in batch_ids()]


def generation_stage(wildcards):
    return generation(wildcards)["stage"]


def generation_model(wildcards):
    """The student checkpoint that generates batch k (self-learning), an input so a retrained one re-runs it."""
    return generation(wildcards)["model"]


def generation_serve(wildcards):
    return generation(wildcards)["serve"]


def check_sections(wildcards):
    """check-tests reads the llm section only when it asks the batch's model for a second solution."""
    if config["check_tests"]["second_solution"]:
        return sections("check_tests", "sandbox", "llm")(wildcards)
    return sections("check_tests", "sandbox")(wildcards)


def check_serve(wildcards):
    """The batch's model served inside the check job, as in generation, when a second solution is asked."""
    return (
        generation_serve(wildcards) if config["check_tests"]["second_solution"] else ""
    )


def check_model(wildcards):
    return (
        generation_model(wildcards) if config["check_tests"]["second_solution"] else []
    )


def check_stage(wildcards):
    """Who wrote batch k, for the second solution only (else the decision is not read: no dependency on it)."""
    if config["check_tests"]["second_solution"]:
        return generation_stage(wildcards)
    return "teaching"


def evaluated_model(wildcards):
    return student_dir(wildcards.k) if wildcards.who == "student" else []


def evaluation_serve(wildcards):
    if wildcards.who == "student":
        return serve_prefix("student", student_dir(wildcards.k))
    return serve_prefix("teacher")


def benchmark_checkpoint(name):
    """What a benchmark model name stands for: `base` (train.base_model) or `student_K` (batch K's student)."""
    if name == "base":
        return config["train"]["base_model"]
    return student_dir(name.removeprefix("student_"))


def benchmark_model(wildcards):
    """The checkpoint as an input, when it is a local path (a hub id is not a file)."""
    path = benchmark_checkpoint(wildcards.model)
    return path if wildcards.model != "base" or os.path.exists(path) else []


def benchmark_serve(wildcards):
    return serve_prefix("student", benchmark_checkpoint(wildcards.model))


def benchmark_mode(wildcards):
    """The base model is prompted by completion unless benchmark.base_mode says chat; students as llm.student."""
    if wildcards.model != "base":
        return ""
    return f"--mode {config['benchmark']['base_mode']}"


def benchmark_image(wildcards):
    """With Apptainer, the suite's image (benchmark.images) is an input: rebuilding it re-scores."""
    if config["sandbox"]["backend"] != "apptainer":
        return []
    images = config["benchmark"]["images"]
    return images.get(family(wildcards.suite)) or config["sandbox"]["image"]


def benchmark_models():
    """The models scored on the benchmark suites (config benchmark.models)."""
    wanted = config["benchmark"]["models"]
    ks = batch_ids()
    names = ["base"] if "base" in wanted else []
    if "every" in wanted:
        names += [f"student_{k}" for k in ks]
    elif "final" in wanted and ks:
        names.append(f"student_{ks[-1]}")
    return names


def benchmark_outputs():
    if not (config["benchmark"]["enabled"] and config["train"]["enabled"]):
        return []
    return expand(
        "results/benchmarks/{model}/{suite}.json",
        model=benchmark_models(),
        suite=config["benchmark"]["suites"],
    )


def previous_stage(wildcards):
    """Batch k-1's stage record: its `next` is the stage batch k was generated in."""
    k = int(wildcards.k)
    return f"results/batch_{k - 1}/stage.json" if k > 0 else []


def previous_stage_arg(wildcards, input):
    return f"--previous {shlex.quote(input.previous)}" if input.previous else ""


def serve_prefix(role, model=None):
    """`aiev serve --role ROLE [--model CHECKPOINT] --config ... --` when llm.ROLE.serve is set (the server spec is
    read from the config by aiev itself), else nothing."""
    if not config["llm"][role].get("serve"):
        return ""
    flag = f" --model {shlex.quote(model)}" if model else ""
    return f"aiev serve --role {role}{flag} --config {shlex.quote(sections('llm')(None))} --"


def sandbox_image(wildcards):
    """The Apptainer image is an input of the rules that execute code, so rebuilding it re-runs them."""
    if config["sandbox"]["backend"] == "apptainer":
        return config["sandbox"]["image"]
    return []


def benchmark_files(wildcards):
    """Local benchmark files named in decontam.benchmarks (null entries load the way users do)."""
    return [p for p in config["decontam"]["benchmarks"].values() if p]


def shard_outputs(wildcards):
    shards = range(config["generate"]["shards"])
    base = f"results/batch_{wildcards.k}/shards"
    return {
        "dialogues": [f"{base}/{s}.dialogues.jsonl" for s in shards],
        "rejects": [f"{base}/{s}.rejects.jsonl" for s in shards],
        "reports": [f"{base}/{s}.report.json" for s in shards],
    }


def merge_shard_args(wildcards, input):
    return " ".join(
        f"--shard {shlex.quote(d)} {shlex.quote(r)} {shlex.quote(p)}"
        for d, r, p in zip(input.dialogues, input.rejects, input.reports)
    )


def train_inputs(wildcards):
    """Batch k's SFT records (cumulative: those of batches 0..k) and, incremental, batch k-1's student."""
    k = int(wildcards.k)
    ks = range(k + 1) if config["train"]["across_batches"] == "cumulative" else [k]
    out = {"sft": [f"results/batch_{j}/sft.jsonl" for j in ks]}
    if config["train"]["across_batches"] == "incremental" and k > 0:
        out["previous"] = f"results/batch_{k - 1}/student"
    return out


def train_args(wildcards, input):
    args = " ".join(f"--sft {shlex.quote(p)}" for p in input.sft)
    if "previous" in input.keys():
        args += f" --previous {shlex.quote(input.previous)}"
    return args


def per_batch(name, on=True):
    """Every batch's file `name` (below results/batch_K), in batch order, as one input of a report
    rule; none when its part is off. A report step takes each kind by its own argument.
    """
    return [f"results/batch_{k}/{name}" for k in batch_ids()] if on else []


def summary_inputs(wildcards):
    """Every report the run summary reads, per batch (only those of the parts that run)."""
    return {
        "generate": per_batch("generate_report.json"),
        "usage": per_batch("usage.json"),
        "check": per_batch("check_report.json"),
        "decontam": per_batch("decontam_report.json"),
        "split": per_batch("split_report.json"),
        "train": per_batch("train_report.json", config["train"]["enabled"]),
        "teacher": per_batch("eval/teacher.json", loop_enabled()),
        "student": per_batch("eval/student.json", loop_enabled()),
        "stages": decided_stages() if loop_enabled() else [],
        "dedup": "results/seeds/dedup_report.json",
        "batches": "results/seeds/batches_report.json",
        "dataset": "results/dataset/dataset_report.json",
        "benchmarks": benchmark_outputs(),
    }


def plots_inputs(wildcards):
    """What the plots read beside the summary: each batch's test-check and decontamination reports and, trained,
    its student."""
    return {
        "summary": "results/summary.json",
        "check": per_batch("check_report.json"),
        "decontam": per_batch("decontam_report.json"),
        "students": (
            [student_dir(k) for k in batch_ids()] if config["train"]["enabled"] else []
        ),
    }


# The config sections that decide the data set's entries (their hash goes into its card), and its own.
DATASET_SECTIONS = (
    "seeds",
    "dedup",
    "batches",
    "sandbox",
    "llm",
    "generate",
    "decontam",
    "split",
    "train",
    "evaluate",
    "stage",
    "dataset",
)


def dataset_inputs(wildcards):
    """What the data set and its card are made of: each batch's splits and reports (stage records when the loop
    runs) and, with Apptainer, the sandbox image (its hash is in the card)."""
    return {
        "train": per_batch("train.jsonl"),
        "test": per_batch("test.jsonl"),
        "generate": per_batch("generate_report.json"),
        "check": per_batch("check_report.json"),
        "decontam": per_batch("decontam_report.json"),
        "stages": decided_stages() if loop_enabled() else [],
        "image": sandbox_image(wildcards),
    }


def all_outputs(wildcards):
    ks = batch_ids()
    out = [
        "results/seeds/seeds_report.json",
        "results/seeds/dedup_report.json",
        "results/seeds/batches_report.json",
    ]
    out += expand(BATCH_FILE, k=ks)
    if config["generate"]["enabled"]:
        files = [
            "usage.json",
            "rejects.jsonl",
            "decontam_report.json",
            "test.jsonl",
            "sft.jsonl",
        ]
        out += expand("results/batch_{k}/{f}", k=ks, f=files)
        if config["train"]["enabled"]:
            out += expand("results/batch_{k}/student", k=ks)
        if loop_enabled():
            out += decided_stages()
        out += ["results/dataset/README.md", "results/summary.json"]
        out += ["results/report/plots.json"]
    return out
