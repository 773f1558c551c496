# The stage decision after each batch (paper section 3.1), a checkpoint: the generation of batch k+1 reads its
# `next` (teaching or self-learning) through `generation` in common.smk.


checkpoint decide_stage:
    input:
        teacher="results/batch_{k}/eval/teacher.json",
        student="results/batch_{k}/eval/student.json",
        previous=previous_stage,
    output:
        stage=report(
            "results/batch_{k}/stage.json",
            category="Loop",
            caption="../docs/report/stage.rst",
            labels={"batch": "{k}", "what": "teacher vs student, next stage"},
        ),
    log:
        "results/logs/evaluate/batch_{k}.decide_stage.log",
    conda:
        "../envs/aiev.yaml"
    params:
        config=sections("stage"),
        previous=previous_stage_arg,
    shell:
        "aiev decide-stage --config {params.config:q} --batch-index {wildcards.k} --teacher {input.teacher} "
        "--student {input.student} {params.previous} --output {output.stage} 2> {log}"
