# The student's SFT per batch (paper section 4.2): DeepSpeed ZeRO-3 through scripts/launch_train.sh, which starts
# one torchrun per node. DeepSpeed checkpoints live in results/.state/ (not an output): a re-run resumes.


rule train:
    input:
        unpack(train_inputs),
    output:
        student=directory("results/batch_{k}/student"),
        report="results/batch_{k}/train_report.json",
    log:
        "results/logs/train/batch_{k}.log",
    conda:
        "../envs/aiev.yaml"
    threads: config["train"]["procs_per_node"]
    resources:
        # on SLURM: one allocation of train.nodes nodes, one task (a torchrun agent) per node; the slurm profile
        # adds `mpi`, so the launcher runs once, without srun, on the first node (scripts/launch_train.sh)
        nodes=config["train"]["nodes"],
        tasks=config["train"]["nodes"],
    params:
        config=sections("train", "format"),
        args=train_args,
        state="results/.state/batch_{k}/train",
        launcher=f"{workflow.basedir}/scripts/launch_train.sh",
    shell:
        "aiev train --config {params.config:q} {params.args} --launcher {params.launcher:q} "
        "--output {output.student} --state-dir {params.state} --report {output.report} 2> {log}"
