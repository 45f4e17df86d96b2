rule evaluate:
    input:
        tasks="results/tasks/{suite}/tasks.parquet",
        samples="results/samples/{model}/{suite}/seed{seed}.parquet",
    output:
        "results/evaluations/{model}/{suite}/seed{seed}.parquet",
    log:
        "results/logs/evaluate/{model}/{suite}/seed{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{suite}/seed{seed}.tsv"
    conda:
        "../envs/evaluation.yaml"
    threads: 1
    resources:
        mem_mb=6000,
    params:
        evaluation=cfg("evaluation"),
        code=code("testtime/evaluation", "testtime/prompting.py", "testtime/stages.py"),
    script:
        "../workflow_scripts/evaluate.py"
