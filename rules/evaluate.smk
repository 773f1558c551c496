# pass@1 of the teacher and of the student on each batch's test split (paper section 3.1); rules/stage.smk
# compares them.


rule evaluate:
    input:
        test="results/batch_{k}/test.jsonl",
        model=evaluated_model,
        image=sandbox_image,
    output:
        results="results/batch_{k}/eval/{who}.jsonl",
        summary="results/batch_{k}/eval/{who}.json",
    log:
        "results/logs/evaluate/batch_{k}.{who}.log",
    conda:
        "../envs/aiev.yaml"
    threads: config["evaluate"]["sandbox_workers"]
    resources:
        llm_endpoint=1,
    params:
        config=sections("llm", "evaluate", "sandbox"),
        serve=evaluation_serve,
        state="results/.state/batch_{k}/eval_{who}",
    shell:
        "{params.serve} aiev evaluate --config {params.config:q} --role {wildcards.who} --test {input.test} "
        "--batch-index {wildcards.k} --state-dir {params.state} --results {output.results} "
        "--summary {output.summary} 2> {log}"
