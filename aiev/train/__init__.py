"""Part 4 of the pipeline (rules/train.smk): the student's SFT on a batch, DeepSpeed ZeRO-3, one code path from
2 CPU processes to 10 nodes x 4 GPUs (``scripts/launch_train.sh`` starts ``aiev.train.worker`` once per process)."""
