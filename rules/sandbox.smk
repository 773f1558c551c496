# The Apptainer images candidates run in (used when sandbox.backend is apptainer): the code-interpreter sandbox,
# and the benchmark suites' toolchains (multipl-e, ds1000; config benchmark.images). Each image is an input of the
# rules that execute code in it, so rebuilding it re-runs them.


localrules:
    sandbox_image,


rule sandbox_image:
    # A localrule: building pulls the base image, which needs the internet of a login node.
    input:
        "containers/{image}.def",
    output:
        "results/sandbox/{image}.sif",
    log:
        "results/logs/sandbox_image.{image}.log",
    wildcard_constraints:
        image="sandbox|multipl-e|ds1000",
    conda:
        "../envs/apptainer.yaml"
    shell:
        "aiev sandbox image {input} {output} > {log} 2>&1"
