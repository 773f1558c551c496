# The Apptainer image of the code-interpreter sandbox (used when sandbox.backend is apptainer).
# It is an input of every rule that executes code, so rebuilding it re-runs them.


localrules:
    sandbox_image,


rule sandbox_image:
    # A localrule: building pulls the base image, which needs the internet of a login node.
    input:
        "containers/sandbox.def",
    output:
        "results/sandbox/sandbox.sif",
    log:
        "results/logs/sandbox_image.log",
    conda:
        "../envs/apptainer.yaml"
    shell:
        "apptainer build --force {output} {input} > {log} 2>&1"
