wildcard_constraints:
    shard=r"\d+",


EVAL_SHARDS = config["resources"]["evaluation"]["shards"]


rule evaluate:
    """Judge one shard (whole tasks) of a seed's samples in isolated worker processes."""
    input:
        tasks=tasks_file("{suite}"),
        samples=samples_file("{model}", "{suite}", "{seed}"),
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
        code=code("evaluate"),
    script:
        "../workflow_scripts/evaluate.py"


rule merge_evaluations:
    """Concatenate the evaluation shards of one seed into the seed's evaluation records."""
    input:
        shards=expand(
            "results/evaluations/{{model}}/{{suite}}/seed{{seed}}/shard{shard}.parquet",
            shard=range(EVAL_SHARDS),
        ),
    output:
        evaluations_file("{model}", "{suite}", "{seed}"),
    log:
        "results/logs/merge_evaluations/{model}/{suite}/seed{seed}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        code=code("merge_evaluations"),
    script:
        "../workflow_scripts/merge_evaluations.py"
