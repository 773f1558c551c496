# The paper's benchmark tables (HumanEval(+), MBPP(+), MultiPL-E, DS-1000): samples from each scored model, then
# each suite's scorer in the sandbox (aiev/scoring/, docs/scoring.md).


rule benchmark_generate:
    input:
        model=benchmark_model,
    output:
        samples="results/benchmarks/{model}/{suite}.samples.jsonl",
        report="results/benchmarks/{model}/{suite}.generate.json",
    log:
        "results/logs/benchmark/{model}.{suite}.generate.log",
    conda:
        "../envs/aiev.yaml"
    resources:
        llm_endpoint=1,
    params:
        config=sections("llm", "evaluate", "benchmark"),
        serve=benchmark_serve,
        mode=benchmark_mode,
        state="results/.state/benchmarks/{model}/{suite}",
    shell:
        "{params.serve} aiev benchmark generate --config {params.config:q} --suite {wildcards.suite} --role student "
        "{params.mode} --samples {output.samples} --state-dir {params.state} --output {output.report} 2> {log}"


rule benchmark_score:
    input:
        samples="results/benchmarks/{model}/{suite}.samples.jsonl",
        image=benchmark_image,
    output:
        "results/benchmarks/{model}/{suite}.json",
    log:
        "results/logs/benchmark/{model}.{suite}.score.log",
    conda:
        "../envs/aiev.yaml"
    threads: config["benchmark"]["workers"]
    params:
        config=sections("benchmark", "sandbox"),
    shell:
        "aiev benchmark score --config {params.config:q} --suite {wildcards.suite} --samples {input.samples} "
        "--output {output} 2> {log}"
