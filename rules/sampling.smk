rule sample:
    input:
        tasks="results/tasks/{suite}/tasks.parquet",
        split="results/tasks/{suite}/split.json",
        model=model_input,
    output:
        "results/samples/{model}/{suite}/seed{seed}.parquet",
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
        sampling=cfg("sampling"),
        model=lambda wc: cfg("models", wc.model),
        model_path=model_path,
        code=code("testtime/sampling", "testtime/scoring.py", "testtime/prompting.py", "testtime/stages.py"),
    script:
        "../workflow_scripts/sample.py"
