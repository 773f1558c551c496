# Generation: one AIEV dialogue per seed, `generate.shards` parallel jobs per batch, merged per batch.
# The stage of batch k and its model come from `generation` in common.smk, which reads the `decide_stage`
# checkpoint of batch k-1 (teaching: the teacher plays both agents; self-learning: batch k-1's student, served
# inside the job). Resumable state lives in results/.state/ (not an output).


rule generate:
    input:
        seeds=batch_file,
        image=sandbox_image,
        model=generation_model,
    output:
        dialogues="results/batch_{k}/shards/{s}.dialogues.jsonl",
        rejects="results/batch_{k}/shards/{s}.rejects.jsonl",
        report="results/batch_{k}/shards/{s}.report.json",
    log:
        "results/logs/generate/batch_{k}.shard_{s}.log",
    conda:
        "../envs/aiev.yaml"
    threads: config["generate"]["sandbox_workers"]
    resources:
        llm_endpoint=1,  # jobs sharing one endpoint at once: capped by --resources llm_endpoint=N
    params:
        config=sections("llm", "generate", "sandbox"),
        shards=config["generate"]["shards"],
        state="results/.state/batch_{k}/shard_{s}",
        stage=generation_stage,
        serve=generation_serve,
    shell:
        "{params.serve} aiev generate --config {params.config:q} --batch {input.seeds} --batch-index {wildcards.k} "
        "--shard {wildcards.s} --shards {params.shards} --stage {params.stage} --state-dir {params.state} "
        "--dialogues {output.dialogues} --rejects {output.rejects} --report {output.report} 2> {log}"


rule merge_dialogues:
    input:
        unpack(shard_outputs),
    output:
        dialogues="results/batch_{k}/dialogues.jsonl",
        rejects="results/batch_{k}/rejects.jsonl",
        usage="results/batch_{k}/usage.json",
        report=report(
            "results/batch_{k}/generate_report.json",
            category="Generation",
            caption="../docs/report/generate.rst",
            labels={"batch": "{k}", "what": "dialogues, rounds, rejections, usage"},
        ),
    log:
        "results/logs/generate/batch_{k}.merge.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("llm"),
        shards=merge_shard_args,
    shell:
        "aiev merge-dialogues --config {params.config:q} {params.shards} --dialogues {output.dialogues} "
        "--rejects {output.rejects} --usage {output.usage} --report {output.report} 2> {log}"
