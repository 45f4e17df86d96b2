rule materialize_model:
    output:
        directory("results/models/{model}"),
    log:
        "results/logs/materialize_model/{model}.log",
    benchmark:
        "results/benchmarks/materialize_model/{model}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("models")
    resources:
        **stage_resources("models"),
    params:
        source=lambda wc: config["models"][wc.model]["source"],
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        code=code("testtime/models.py"),
    script:
        "../workflow_scripts/materialize_model.py"
