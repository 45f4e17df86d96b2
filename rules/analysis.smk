rule select_samples:
    input:
        samples=expand("results/samples/{{model}}/{{suite}}/seed{seed}.parquet", seed=SEEDS),
        evaluations=expand("results/evaluations/{{model}}/{{suite}}/seed{seed}.parquet", seed=SEEDS),
    output:
        selection="results/selection/{model}/{suite}/selection.parquet",
        table="results/tables/{model}/{suite}/table3.csv",
        table_provenance="results/tables/{model}/{suite}/table3.csv.provenance.json",
        stats="results/tables/{model}/{suite}/selection_stats.json",
    log:
        "results/logs/select_samples/{model}/{suite}.log",
    conda:
        "../envs/analysis.yaml"
    threads: stage_threads("analysis")
    resources:
        **stage_resources("analysis"),
    params:
        selection=cfg("selection"),
        code=code("testtime/analysis.py", "testtime/stages.py"),
    script:
        "../workflow_scripts/select_samples.py"
