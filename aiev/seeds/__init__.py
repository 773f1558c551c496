"""Part 1 of the pipeline (rules/seeds.smk): seed sources, de-duplication, batches."""
