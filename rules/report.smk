# What the run produced: the released data set (every kept entry, one file) and the run summary with its
# projection to the whole seed set.


rule dataset:
    input:
        unpack(dataset_inputs),
    output:
        entries="results/dataset/entries.jsonl",
        report="results/dataset/dataset_report.json",
    log:
        "results/logs/report/dataset.log",
    conda:
        "../envs/aiev.yaml"
    params:
        args=dataset_args,
    shell:
        "aiev dataset {params.args} --output {output.entries} --report {output.report} 2> {log}"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        summary="results/summary.json",
        markdown=report(
            "results/summary.md",
            category="Summary",
            caption="../docs/report/summary.rst",
        ),
    log:
        "results/logs/report/summary.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("summary"),
        args=summary_args,
    shell:
        "aiev summary --config {params.config:q} {params.args} --dedup-report {input.dedup} "
        "--batches-report {input.batches} --dataset-report {input.dataset} --output {output.summary} "
        "--markdown {output.markdown} 2> {log}"
