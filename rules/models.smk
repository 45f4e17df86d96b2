rule materialize_model:
    """Convert the configured model once into a local safetensors directory."""
    input:
        lambda wc: retrieved_model_input(wc.model),
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
        source=lambda wc: model_load_path(wc.model),
        dtype=lambda wc: config["models"][wc.model]["dtype"],
        code=code("materialize_model"),
    script:
        "../workflow_scripts/materialize_model.py"
