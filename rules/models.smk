rule materialize_model:
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/materialize_model/{model}.log",
    benchmark:
        "results/benchmarks/materialize_model/{model}.tsv"
    conda:
        "../envs/sampling.yaml"
    resources:
        mem_mb=4000,
    params:
        source=lambda wc: config["models"][wc.model]["source"],
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        code=code("testtime/models.py"),
    script:
        "../workflow_scripts/materialize_model.py"
