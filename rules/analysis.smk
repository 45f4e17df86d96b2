# Selection (Table 3), Best-of-N scaling (Table 2) and the TTT tables (6, 4, 10, 12, transfer).


rule select_samples:
    """Apply every selection strategy per task and seed; write Table 3 and its statistics."""
    input:
        samples=expand(samples_file("{{model}}", "{{suite}}", "{seed}"), seed=SEEDS),
        evaluations=expand(evaluations_file("{{model}}", "{{suite}}", "{seed}"), seed=SEEDS),
    output:
        selection="results/selection/{model}/{suite}/selection.parquet",
        table=report(
            table_file("{model}", "{suite}", "table3.csv"),
            caption="../report/captions/table3.rst",
            category="Tables",
        ),
        table_provenance=report(
            table_file("{model}", "{suite}", "table3.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
        stats=report(
            table_file("{model}", "{suite}", "selection_stats.json"),
            caption="../report/captions/selection_stats.rst",
            category="Analyses",
        ),
    log:
        "results/logs/select_samples/{model}/{suite}.log",
    conda:
        "../envs/analysis.yaml"
    threads: stage_threads("analysis")
    resources:
        **stage_resources("analysis"),
    params:
        selection=cfg("selection"),
        code=code("select_samples"),
    script:
        "../workflow_scripts/select_samples.py"


rule table2:
    """Best-of-N scaling curve (Table 2) from the Best-of-N evaluations of every seed."""
    input:
        evaluations=expand(evaluations_file("{{model}}", "{{suite}}", "{seed}"), seed=SEEDS),
    output:
        table=report(
            table_file("{model}", "{suite}", "table2.csv"),
            caption="../report/captions/table2.rst",
            category="Tables",
        ),
        by_seed=table_file("{model}", "{suite}", "table2_by_seed.csv"),
        provenance=report(
            table_file("{model}", "{suite}", "table2.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/table2/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        scaling=cfg("scaling"),
        code=code("table2"),
    script:
        "../workflow_scripts/table2.py"


rule table6:
    """Main TTT trajectories (Table 6), BoA / early stop / final / oracle per run, BoA mean and std."""
    input:
        metrics=lambda wc: metrics_of(experiment_runs("main")),
    output:
        table=report(
            ttt_table_file("table6.csv"),
            caption="../report/captions/table6.rst",
            category="Tables",
        ),
        per_task=ttt_table_file("table6_per_task.csv"),
        selection=ttt_table_file("table6_selection.csv"),
        summary=ttt_table_file("table6_summary.json"),
        provenance=report(
            ttt_table_file("table6.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/table6.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="table6",
        spec={"runs": EXPERIMENTS["main"], "patience": EXPERIMENTS["early_stop_patience"]},
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"


rule table4:
    """Subset 2: Best-of-N against TTT steps (Table 4)."""
    input:
        unpack(table4_input),
    output:
        table=report(
            ttt_table_file("table4.csv"),
            caption="../report/captions/table4.rst",
            category="Tables",
        ),
        per_task=ttt_table_file("table4_per_task.csv"),
        provenance=report(
            ttt_table_file("table4.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/table4.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="table4",
        spec=canonical(EXPERIMENTS["subset2"]),
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"


rule table10:
    """Learning-rate sensitivity (Table 10)."""
    input:
        metrics=lambda wc: metrics_of(experiment_runs("lr_sweep")),
    output:
        table=report(
            ttt_table_file("table10.csv"),
            caption="../report/captions/table10.rst",
            category="Tables",
        ),
        provenance=report(
            ttt_table_file("table10.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/table10.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="table10",
        spec={"lrs": {run: ttt_run(run)["lr"] for run in EXPERIMENTS["lr_sweep"]}},
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"


rule table12:
    """Per-task isolated TTT (Table 12)."""
    input:
        metrics=lambda wc: metrics_of(experiment_runs("isolated")),
    output:
        table=report(
            ttt_table_file("table12.csv"),
            caption="../report/captions/table12.rst",
            category="Tables",
        ),
        provenance=report(
            ttt_table_file("table12.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/table12.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="table12",
        spec={"runs": EXPERIMENTS["isolated"]},
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"


rule transfer_table:
    """Cross-subset transfer (§5.6): adapted checkpoints on the other subset."""
    input:
        unpack(transfer_table_input),
    output:
        table=report(
            ttt_table_file("transfer.csv"),
            caption="../report/captions/transfer.rst",
            category="Tables",
        ),
        provenance=report(
            ttt_table_file("transfer.csv.provenance.json"),
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/transfer_table.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="transfer",
        spec={"transfers": canonical(EXPERIMENTS["transfer"])},
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"
