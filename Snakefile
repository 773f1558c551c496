# AIEV-INSTRUCT as a Snakemake workflow. Logic lives in the `aiev` package; each rule runs one
# `aiev <step>` sub-command. See README.md and docs/.
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


report: "docs/report/workflow.rst"


validate(config, schema="schemas/config.schema.yaml")


include: "rules/common.smk"
include: "rules/seeds.smk"
include: "rules/sandbox.smk"
include: "rules/generate.smk"
include: "rules/curate.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/scoring.smk"
include: "rules/stage.smk"
include: "rules/report.smk"


rule all:
    default_target: True
    input:
        all_outputs,
