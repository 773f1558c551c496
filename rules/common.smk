# Input functions and helpers shared by all .smk files (no step logic: that lives in the aiev package).
import json
import shlex


def sections(*names):
    """Config sections as compact JSON, passed to `aiev <step> --config`.

    Only these sections travel, so a change elsewhere in the config does not re-run the step
    (Snakemake re-runs a job when its params change)."""
    return json.dumps(
        {n: config[n] for n in names}, sort_keys=True, separators=(",", ":")
    )


wildcard_constraints:
    k=r"\d+",
    s=r"\d+",


# The one place that names a batch file (aiev.seeds.batches writes the same pattern).
BATCH_FILE = "results/seeds/batches/batch_{k}.jsonl"


def batch_ids(wildcards=None):
    """Batch indices written by the `batches` checkpoint (evaluated once it has run)."""
    checkpoints.batches.get()
    return sorted(int(k) for k in glob_wildcards(BATCH_FILE).k)


def batch_file(wildcards):
    checkpoints.batches.get()
    return BATCH_FILE.format(k=wildcards.k)


def generation(wildcards):
    """Who generates batch k, decided in one place: the stage, the role that plays both agents, and the
    `aiev serve` prefix when that role's model is served inside the job. Until the stage checkpoint exists
    (the loop's issue), every batch is in the teaching stage."""
    stage, role = "teaching", "teacher"
    return {"stage": stage, "serve": serve_prefix(role)}


def generation_stage(wildcards):
    return generation(wildcards)["stage"]


def generation_serve(wildcards):
    return generation(wildcards)["serve"]


def serve_prefix(role):
    """`aiev serve --role ROLE --config ... --` when llm.ROLE.serve is set (the server spec is read from the
    config by aiev itself), else nothing."""
    if not config["llm"][role].get("serve"):
        return ""
    return f"aiev serve --role {role} --config {shlex.quote(sections('llm'))} --"


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
    return out
