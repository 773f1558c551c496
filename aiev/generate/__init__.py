"""Part 2 of the pipeline (rules/generate.smk): the AIEV dialogues of a batch, per shard, resumable, then merged."""
