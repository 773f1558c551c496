"""Stage 2 (rules/generate.smk): the AIEV dialogues of a batch, per shard, resumable, then merged."""
