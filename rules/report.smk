# What the run produced: the released data set (every kept entry, Hugging Face datasets layout with its card)
# and the run summary with its projection to the whole seed set.


# results/dataset/ is written whole beside itself and renamed into place (docs/dataset.md); its parts are
# the outputs (the summary reads dataset_report.json, so the folder itself cannot be a directory() output).
rule dataset:
    input:
        unpack(dataset_inputs),
    output:
        card="results/dataset/README.md",
        parquet=directory("results/dataset/data"),
        jsonl=directory("results/dataset/jsonl"),
        report="results/dataset/dataset_report.json",
    log:
        "results/logs/report/dataset.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections(*DATASET_SECTIONS),
        args=dataset_args,
    shell:
        "aiev dataset --config {params.config:q} {params.args} --output results/dataset "
        "--report {output.report} 2> {log}"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        summary="results/summary.json",
        markdown=report(
            "results/summary.md",
            category="Summary",
            caption="../docs/report/summary.rst",
            labels={"what": "run summary and projection"},
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


rule plots:
    input:
        summary="results/summary.json",
        batches=plots_inputs,
    output:
        rounds=report(
            "results/report/rounds.svg",
            category="Generation",
            caption="../docs/report/plot_rounds.rst",
            labels={"batch": "all", "what": "pass rate by feedback round"},
        ),
        rejections=report(
            "results/report/rejections.svg",
            category="Generation",
            caption="../docs/report/plot_rejections.rst",
            labels={"batch": "all", "what": "rejections by reason"},
        ),
        usage=report(
            "results/report/usage.svg",
            category="Generation",
            caption="../docs/report/plot_usage.rst",
            labels={"batch": "all", "what": "tokens and cost"},
        ),
        checks=report(
            "results/report/checks.svg",
            category="Curation",
            caption="../docs/report/plot_checks.rst",
            labels={"batch": "all", "what": "test checks: mutation scores, removals"},
        ),
        decontam=report(
            "results/report/decontam.svg",
            category="Curation",
            caption="../docs/report/plot_decontam.rst",
            labels={"batch": "all", "what": "removals per benchmark"},
        ),
        stages=report(
            "results/report/stages.svg",
            category="Loop",
            caption="../docs/report/plot_stages.rst",
            labels={"batch": "all", "what": "teacher vs student, stage timeline"},
        ),
        loss=report(
            "results/report/loss.svg",
            category="Loop",
            caption="../docs/report/plot_loss.rst",
            labels={"batch": "all", "what": "training loss"},
        ),
        benchmarks=report(
            "results/report/benchmarks.svg",
            category="Benchmarks",
            caption="../docs/report/plot_benchmarks.rst",
            labels={"what": "pass@1 beside the paper's"},
        ),
        benchmarks_table=report(
            "results/report/benchmarks.html",
            category="Benchmarks",
            caption="../docs/report/table_benchmarks.rst",
            labels={"what": "pass@1 table"},
        ),
        batches_table=report(
            "results/report/batches.html",
            category="Summary",
            caption="../docs/report/table_batches.rst",
            labels={"what": "per batch table"},
        ),
        numbers="results/report/plots.json",
        captions=expand(
            "results/report/{plot}.rst",
            plot=[
                "rounds",
                "rejections",
                "usage",
                "checks",
                "decontam",
                "stages",
                "loss",
                "benchmarks",
            ],
        ),
    log:
        "results/logs/report/plots.log",
    conda:
        "../envs/aiev.yaml"
    params:
        args=plots_args,
    shell:
        "aiev plots --summary {input.summary} {params.args} --outdir results/report 2> {log}"
