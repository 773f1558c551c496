# Seeds: read the sources, remove duplicates, cut into batches (paper: 186K seeds, batches of 2000).


localrules:
    seeds,


rule seeds:
    # A localrule: Hugging Face sources need the internet, which login nodes have and compute nodes often lack.
    output:
        seeds="results/seeds/seeds.jsonl",
        report=report(
            "results/seeds/seeds_report.json",
            category="Seeds",
            caption="../docs/report/seeds.rst",
            labels={"what": "seeds per source, skipped rows"},
        ),
    log:
        "results/logs/seeds.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("seeds"),
    shell:
        "aiev seeds --config {params.config:q} --output {output.seeds} --report {output.report} 2> {log}"


rule dedup:
    input:
        "results/seeds/seeds.jsonl",
    output:
        seeds="results/seeds/dedup.jsonl",
        report=report(
            "results/seeds/dedup_report.json",
            category="Seeds",
            caption="../docs/report/dedup.rst",
            labels={"what": "duplicates dropped"},
        ),
    log:
        "results/logs/dedup.log",
    benchmark:
        "results/logs/timing/dedup.tsv"
    conda:
        "../envs/aiev.yaml"
    threads: config["dedup"]["workers"]
    params:
        config=sections("dedup"),
    shell:
        "aiev dedup --config {params.config:q} --workers {threads} --input {input} "
        "--output {output.seeds} --report {output.report} 2> {log}"


checkpoint batches:
    input:
        "results/seeds/dedup.jsonl",
    output:
        outdir=directory("results/seeds/batches"),
        report="results/seeds/batches_report.json",
    log:
        "results/logs/batches.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("batches"),
    shell:
        "aiev batches --config {params.config:q} --input {input} --outdir {output.outdir} "
        "--report {output.report} 2> {log}"
