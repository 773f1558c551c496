"""Stage 3 (rules/curate.smk): benchmark snippets and decontamination, the 9:1 split, the SFT format."""
