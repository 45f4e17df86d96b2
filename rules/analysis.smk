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


rule table2:
    """Best-of-N scaling curve (Table 2) from the Best-of-N evaluations of every seed."""
    input:
        evaluations=expand("results/evaluations/{{model}}/{{suite}}/seed{seed}.parquet", seed=SEEDS),
    output:
        table="results/tables/{model}/{suite}/table2.csv",
        by_seed="results/tables/{model}/{suite}/table2_by_seed.csv",
        provenance="results/tables/{model}/{suite}/table2.csv.provenance.json",
    log:
        "results/logs/table2/{model}/{suite}.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        scaling=cfg("scaling"),
        code=code("testtime/analysis.py"),
    script:
        "../workflow_scripts/table2.py"


TTT_TABLE_CODE = code("testtime/tables.py", "testtime/analysis.py")


rule table6:
    """Main TTT trajectories (Table 6), BoA / early stop / final / oracle per run, BoA mean and std."""
    input:
        metrics=lambda wc: metrics_of(experiment_runs("main")),
    output:
        table="results/tables/ttt/table6.csv",
        per_task="results/tables/ttt/table6_per_task.csv",
        selection="results/tables/ttt/table6_selection.csv",
        summary="results/tables/ttt/table6_summary.json",
        provenance="results/tables/ttt/table6.csv.provenance.json",
    log:
        "results/logs/table6.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        spec={"runs": EXPERIMENTS["main"], "patience": EXPERIMENTS["early_stop_patience"]},
        code=TTT_TABLE_CODE,
    script:
        "../workflow_scripts/ttt_tables.py"


rule table4:
    """Subset 2: Best-of-N against TTT steps (Table 4)."""
    input:
        unpack(table4_input),
    output:
        table="results/tables/ttt/table4.csv",
        per_task="results/tables/ttt/table4_per_task.csv",
        provenance="results/tables/ttt/table4.csv.provenance.json",
    log:
        "results/logs/table4.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        spec=canonical(EXPERIMENTS["subset2"]),
        code=TTT_TABLE_CODE,
    script:
        "../workflow_scripts/ttt_tables.py"


rule table10:
    """Learning-rate sensitivity (Table 10)."""
    input:
        metrics=lambda wc: metrics_of(experiment_runs("lr_sweep")),
    output:
        table="results/tables/ttt/table10.csv",
        provenance="results/tables/ttt/table10.csv.provenance.json",
    log:
        "results/logs/table10.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        spec={"lrs": {run: ttt_run(run)["lr"] for run in EXPERIMENTS["lr_sweep"]}},
        code=TTT_TABLE_CODE,
    script:
        "../workflow_scripts/ttt_tables.py"


rule table12:
    """Per-task isolated TTT (Table 12)."""
    input:
        metrics=lambda wc: metrics_of(experiment_runs("isolated")),
    output:
        table="results/tables/ttt/table12.csv",
        provenance="results/tables/ttt/table12.csv.provenance.json",
    log:
        "results/logs/table12.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        spec={"runs": EXPERIMENTS["isolated"]},
        code=TTT_TABLE_CODE,
    script:
        "../workflow_scripts/ttt_tables.py"


rule transfer_table:
    """Cross-subset transfer (§5.6): adapted checkpoints on the other subset."""
    input:
        unpack(transfer_table_input),
    output:
        table="results/tables/ttt/transfer.csv",
        provenance="results/tables/ttt/transfer.csv.provenance.json",
    log:
        "results/logs/transfer_table.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        spec={"transfers": canonical(EXPERIMENTS["transfer"])},
        code=TTT_TABLE_CODE,
    script:
        "../workflow_scripts/ttt_tables.py"
