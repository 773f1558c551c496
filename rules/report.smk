# What the run produced: the released data set (every kept entry, Hugging Face datasets layout with its card)
# and the run summary with its projection to the whole seed set.
from aiev.report.plots import FIGURES, PLOTS


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
    shell:
        "aiev dataset --config {params.config:q} --train {input.train:q} --test {input.test:q} "
        "--generate-reports {input.generate:q} --check-reports {input.check:q} "
        "--decontam-reports {input.decontam:q} --stages {input.stages:q} "
        "--output $(dirname {output.report:q}) --report {output.report:q} 2> {log}"


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
    shell:
        "aiev summary --config {params.config:q} --generate-reports {input.generate:q} "
        "--usage {input.usage:q} --check-reports {input.check:q} --decontam-reports {input.decontam:q} "
        "--split-reports {input.split:q} --train-reports {input.train:q} "
        "--teacher-evals {input.teacher:q} --student-evals {input.student:q} --stages {input.stages:q} "
        "--benchmarks {input.benchmarks:q} --dedup-report {input.dedup} "
        "--batches-report {input.batches} --dataset-report {input.dataset} --output {output.summary} "
        "--markdown {output.markdown} 2> {log}"


rule plots:
    input:
        unpack(plots_inputs),
    output:
        # one labelled report() output per plot and table: aiev.report.plots.FIGURES is their one list
        **{
            f.output: report(
                f"results/report/{f.file}",
                category=f.category,
                caption=f"../docs/report/{f.caption}",
                labels=f.labels,
            )
            for f in FIGURES
        },
        numbers="results/report/plots.json",
        captions=expand("results/report/{plot}.rst", plot=PLOTS),
    log:
        "results/logs/report/plots.log",
    conda:
        "../envs/aiev.yaml"
    shell:
        "aiev plots --summary {input.summary} --check-reports {input.check:q} "
        "--decontam-reports {input.decontam:q} --students {input.students:q} "
        "--outdir $(dirname {output.numbers:q}) 2> {log}"
