# Curation per batch: check the tests (beyond the paper) -> decontaminate (paper section 3.2) -> split 9:1 ->
# code-interpreter SFT format.


rule check_tests:
    input:
        entries="results/batch_{k}/dialogues.jsonl",
        image=sandbox_image,
        model=check_model,
    output:
        kept="results/batch_{k}/checked.jsonl",
        removed="results/batch_{k}/check_removed.jsonl",
        report=report(
            "results/batch_{k}/check_report.json",
            category="Curation",
            caption="../docs/report/check_tests.rst",
            labels={
                "batch": "{k}",
                "what": "test checks: removals by reason, mutation scores",
            },
        ),
    log:
        "results/logs/curate/batch_{k}.check_tests.log",
    benchmark:
        "results/logs/timing/batch_{k}.check_tests.tsv"
    conda:
        "../envs/aiev.yaml"
    threads: config["check_tests"]["workers"]
    params:
        config=check_sections,
        state="results/.state/batch_{k}/check_tests",
        stage=check_stage,
        serve=check_serve,
    shell:
        "{params.serve} aiev check-tests --config {params.config:q} --workers {threads} --input {input.entries} "
        "--output {output.kept} --removed {output.removed} --report {output.report} "
        "--state-dir {params.state} --stage {params.stage} 2> {log}"


rule decontaminate:
    input:
        entries="results/batch_{k}/checked.jsonl",
        benchmarks=benchmark_files,
    output:
        kept="results/batch_{k}/clean.jsonl",
        removed="results/batch_{k}/removed.jsonl",
        report=report(
            "results/batch_{k}/decontam_report.json",
            category="Curation",
            caption="../docs/report/decontam.rst",
            labels={"batch": "{k}", "what": "removed entries, closest matches"},
        ),
    log:
        "results/logs/curate/batch_{k}.decontaminate.log",
    benchmark:
        "results/logs/timing/batch_{k}.decontaminate.tsv"
    conda:
        "../envs/aiev.yaml"
    threads: config["decontam"]["workers"]
    params:
        config=sections("decontam"),
    shell:
        "aiev decontaminate --config {params.config:q} --workers {threads} --input {input.entries} "
        "--output {output.kept} --removed {output.removed} --report {output.report} 2> {log}"


rule split:
    input:
        "results/batch_{k}/clean.jsonl",
    output:
        train="results/batch_{k}/train.jsonl",
        test="results/batch_{k}/test.jsonl",
        report="results/batch_{k}/split_report.json",
    log:
        "results/logs/curate/batch_{k}.split.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("split"),
    shell:
        "aiev split --config {params.config:q} --input {input} --train {output.train} --test {output.test} "
        "--report {output.report} 2> {log}"


rule format:
    input:
        "results/batch_{k}/train.jsonl",
    output:
        sft="results/batch_{k}/sft.jsonl",
        report="results/batch_{k}/format_report.json",
    log:
        "results/logs/curate/batch_{k}.format.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("format"),
    shell:
        "aiev format --config {params.config:q} --input {input} --output {output.sft} "
        "--report {output.report} 2> {log}"
