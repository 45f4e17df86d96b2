wildcard_constraints:
    shard=r"\d+",


EVAL_SHARDS = config["resources"]["evaluation"]["shards"]


rule evaluate:
    input:
        tasks="results/tasks/{suite}/tasks.parquet",
        samples="results/samples/{model}/{suite}/seed{seed}.parquet",
    output:
        "results/evaluations/{model}/{suite}/seed{seed}/shard{shard}.parquet",
    log:
        "results/logs/evaluate/{model}/{suite}/seed{seed}/shard{shard}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}/{suite}/seed{seed}/shard{shard}.tsv"
    conda:
        "../envs/evaluation.yaml"
    threads: stage_threads("evaluation")
    resources:
        **stage_resources("evaluation"),
    params:
        evaluation=cfg("evaluation"),
        shards=EVAL_SHARDS,
        code=code("testtime/evaluation", "testtime/prompting.py", "testtime/stages.py", "testtime/scheduling.py"),
    script:
        "../workflow_scripts/evaluate.py"


rule merge_evaluations:
    input:
        shards=expand("results/evaluations/{{model}}/{{suite}}/seed{{seed}}/shard{shard}.parquet", shard=range(EVAL_SHARDS)),
    output:
        "results/evaluations/{model}/{suite}/seed{seed}.parquet",
    log:
        "results/logs/merge_evaluations/{model}/{suite}/seed{seed}.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        code=code("testtime/records.py"),
    script:
        "../workflow_scripts/merge_evaluations.py"
