"""Stage 1 (rules/seeds.smk): seed sources, de-duplication, batches."""
