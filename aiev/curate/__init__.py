"""Part 3 of the pipeline (rules/curate.smk): benchmark snippets and decontamination, the 9:1 split, the SFT format."""
