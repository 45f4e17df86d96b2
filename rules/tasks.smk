rule prepare_tasks:
    """Load a task suite, split it like the paper, mark the eval subset that gets sampled."""
    input:
        unpack(suite_input),
    output:
        tasks=tasks_file("{suite}"),
        split=split_file("{suite}"),
    log:
        "results/logs/prepare_tasks/{suite}.log",
    conda:
        "../envs/workflow.yaml"
    threads: stage_threads("tasks")
    resources:
        **stage_resources("tasks"),
    params:
        suite=lambda wc: suite_params(wc.suite),
        code=code("prepare_tasks"),
    script:
        "../workflow_scripts/prepare_tasks.py"
