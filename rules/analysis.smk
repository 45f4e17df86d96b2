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
        trajectory=ttt_table_file("table4_trajectory.csv"),
        selection=ttt_table_file("table4_selection.csv"),
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


# Best-of-N analyses of §12 and §17 (testtime.bon_analyses): one rule per paper output, each
# through the bon_analysis script, which looks the output's builder up in its registry.


rule table1:
    """Table 1: each selection strategy's pick, fast_1 and speedup per task and seed (§6.2)."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "table1.csv"),
            caption="../report/captions/table1.rst",
            category="Tables",
        ),
        provenance=table_file("{model}", "{suite}", "table1.csv.provenance.json"),
    log:
        "results/logs/table1/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="table1",
        settings=analysis_params(),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule table8:
    """Table 8: the Best-of-N oracle-selected speedup per task and seed (§16)."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "table8.csv"),
            caption="../report/captions/table8.rst",
            category="Tables",
        ),
        provenance=table_file("{model}", "{suite}", "table8.csv.provenance.json"),
    log:
        "results/logs/table8/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="table8",
        settings=analysis_params(),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule table11:
    """Table 11: surprisal quartiles of the correct samples with their task composition (§12.2)."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "table11.csv"),
            caption="../report/captions/table11.rst",
            category="Tables",
        ),
        provenance=table_file("{model}", "{suite}", "table11.csv.provenance.json"),
    log:
        "results/logs/table11/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="table11",
        settings=analysis_params("quartiles"),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule length_control:
    """§12.1: raw and length-controlled (partial) Spearman correlation of log-prob and speedup."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "length_control.json"),
            caption="../report/captions/length_control.rst",
            category="Analyses",
        ),
        provenance=table_file("{model}", "{suite}", "length_control.json.provenance.json"),
    log:
        "results/logs/length_control/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="length_control",
        settings=analysis_params(),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule logprob_variance:
    """§12.3-12.4: log-prob std per task, variance groups, surprisal-vs-confidence head-to-head."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "logprob_variance.csv"),
            caption="../report/captions/logprob_variance.rst",
            category="Analyses",
        ),
        provenance=table_file("{model}", "{suite}", "logprob_variance.csv.provenance.json"),
    log:
        "results/logs/logprob_variance/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="logprob_variance",
        settings=analysis_params("high_variance", "low_variance", "std_ddof"),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule full_l1:
    """§12.5: oracle task success over every task of the suite, with the failures."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "full_l1.json"),
            caption="../report/captions/full_l1.rst",
            category="Analyses",
        ),
        provenance=table_file("{model}", "{suite}", "full_l1.json.provenance.json"),
    log:
        "results/logs/full_l1/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="full_l1",
        settings=analysis_params(),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule table7:
    """Table 7: compute per method from the jobs' benchmark files and the records' token counts (§17)."""
    input:
        unpack(table7_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "table7.csv"),
            caption="../report/captions/table7.rst",
            category="Tables",
        ),
        provenance=table_file("{model}", "{suite}", "table7.csv.provenance.json"),
    log:
        "results/logs/table7/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        methods=ANALYSES["compute_methods"],
        sdpo_steps=config["sdpo"]["steps"] + 1,
        teacher_tokens=ANALYSES["sdpo_teacher_tokens"],
        gpus=stage_gpus,
        code=code("table7"),
    script:
        "../workflow_scripts/table7.py"


# The paper's open questions (§6.6) as experiments: the deployable selection here, the TTT
# remedies and the reward sparsification with the TTT tables below.


rule deployable_selection:
    """Open question 2: rank all K samples by score, evaluate the top m in order, stop at the first correct one."""
    input:
        unpack(bon_records_input),
    output:
        table=report(
            table_file("{model}", "{suite}", "deployable_selection.csv"),
            caption="../report/captions/deployable_selection.rst",
            category="Tables",
            subcategory="Open questions",
        ),
        provenance=table_file("{model}", "{suite}", "deployable_selection.csv.provenance.json"),
    log:
        "results/logs/deployable_selection/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        analysis="deployable_selection",
        settings=analysis_params(),
        code=code("bon_analysis"),
    script:
        "../workflow_scripts/bon_analysis.py"


rule ttt_remedies:
    """Open question 1: TTT with an entropy bonus or a KL penalty to the start against the paper's run (trajectory, NLL probe)."""
    input:
        unpack(remedies_input),
    output:
        table=report(
            ttt_table_file("remedies.csv"),
            caption="../report/captions/ttt_remedies.rst",
            category="Tables",
            subcategory="Open questions",
        ),
        provenance=ttt_table_file("remedies.csv.provenance.json"),
    log:
        "results/logs/ttt_remedies.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="remedies",
        spec=comparison_spec("remedies"),
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"


rule reward_sparsification:
    """Open question 3: TTT with the sparse fast_1 reward against the normalised reward (trajectory, BoA step)."""
    input:
        unpack(sparsification_input),
    output:
        table=report(
            ttt_table_file("reward_sparsification.csv"),
            caption="../report/captions/reward_sparsification.rst",
            category="Tables",
            subcategory="Open questions",
        ),
        provenance=ttt_table_file("reward_sparsification.csv.provenance.json"),
    log:
        "results/logs/reward_sparsification.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        table="reward_sparsification",
        spec=comparison_spec("reward_sparsification"),
        code=code("ttt_tables"),
    script:
        "../workflow_scripts/ttt_tables.py"
