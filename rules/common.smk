# Input functions and helpers shared by all .smk files (no step logic: that lives in the aiev package).
import json


def section(name):
    """One config section as compact JSON, passed to `aiev <step> --config`.

    Only that section travels, so a change elsewhere in the config does not re-run the step
    (Snakemake re-runs a job when its params change)."""
    return json.dumps({name: config[name]}, sort_keys=True, separators=(",", ":"))


def batch_ids(wildcards=None):
    """Batch indices written by the `batches` checkpoint (evaluated once it has run)."""
    outdir = checkpoints.batches.get().output.outdir
    return sorted(int(k) for k in glob_wildcards(f"{outdir}/batch_{{k}}.jsonl").k)


def all_outputs(wildcards):
    return [
        "results/seeds/seeds_report.json",
        "results/seeds/dedup_report.json",
        "results/seeds/batches_report.json",
    ] + expand("results/seeds/batches/batch_{k}.jsonl", k=batch_ids())
