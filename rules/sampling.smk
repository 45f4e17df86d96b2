rule sample:
    """K samples per selected task for one seed, with raw log-probabilities (one model load)."""
    input:
        tasks=tasks_file("{suite}"),
        split=split_file("{suite}"),
        model=lambda wc: model_dir_input(wc.model),
        checkpoint=lambda wc: checkpoint_adapter(wc.model),
    output:
        samples_file("{model}", "{suite}", "{seed}"),
    log:
        "results/logs/sample/{model}/{suite}/seed{seed}.log",
    benchmark:
        "results/benchmarks/sample/{model}/{suite}/seed{seed}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("sampling")
    resources:
        **stage_resources("sampling"),
    params:
        sampling=lambda wc: bon_sampling(wc.suite),
        model=lambda wc: cfg("models", wc.model),
        model_path=lambda wc: model_dir_path(wc.model),
        checkpoint=lambda wc: checkpoint_for(wc.model),
        code=code("sample"),
    script:
        "../workflow_scripts/sample.py"
