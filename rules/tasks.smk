rule prepare_tasks:
    output:
        tasks="results/tasks/{suite}/tasks.parquet",
        split="results/tasks/{suite}/split.json",
    log:
        "results/logs/prepare_tasks/{suite}.log",
    conda:
        "../envs/workflow.yaml"
    threads: stage_threads("tasks")
    resources:
        **stage_resources("tasks"),
    params:
        suite=lambda wc: cfg("suites", wc.suite),
        code=code("testtime/tasks", "testtime/stages.py"),
    script:
        "../workflow_scripts/prepare_tasks.py"
