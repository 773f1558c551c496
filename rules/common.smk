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


def batch_ids(wildcards=None):
    """Batch indices written by the `batches` checkpoint (evaluated once it has run)."""
    outdir = checkpoints.batches.get().output.outdir
    return sorted(int(k) for k in glob_wildcards(f"{outdir}/batch_{{k}}.jsonl").k)


def batch_file(wildcards):
    return f"{checkpoints.batches.get().output.outdir}/batch_{wildcards.k}.jsonl"


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


def all_outputs(wildcards):
    ks = batch_ids()
    out = [
        "results/seeds/seeds_report.json",
        "results/seeds/dedup_report.json",
        "results/seeds/batches_report.json",
    ]
    out += expand("results/seeds/batches/batch_{k}.jsonl", k=ks)
    if config["generate"]["enabled"]:
        files = [
            "usage.json",
            "rejects.jsonl",
            "decontam_report.json",
            "test.jsonl",
            "sft.jsonl",
        ]
        out += expand("results/batch_{k}/{f}", k=ks, f=files)
    return out


def serve_prefix(wildcards):
    """`aiev serve ... --` when the teacher is served inside the job (llm.teacher.serve), else nothing."""
    serve = config["llm"]["teacher"].get("serve")
    if not serve:
        return ""
    parts = ["aiev", "serve", "--engine", serve["engine"], "--model", serve["model"]]
    if serve.get("name"):
        parts += ["--name", serve["name"]]
    if serve.get("command"):
        parts += ["--command", serve["command"]]
    for arg in serve.get("args", []):
        parts += [f"--arg={arg}"]
    parts += ["--startup-timeout", str(serve.get("startup_timeout_s", 900))]
    return shlex.join(parts) + " --"
