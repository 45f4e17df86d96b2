# RLVR (reference-protocol §8): one job per step, results/rlvr/{model}/{run}/step{step}/. Step s+1
# reads step s's files, so a run killed during step s resumes at step s. Table 5 and the
# training curve are built from every step's metrics.


rule rlvr_step:
    """One RLVR step: update the previous step's adapter on its batch, sample the next batch, evaluate, score."""
    input:
        unpack(rlvr_step_input),
    output:
        adapter=directory(rlvr_step_file("{model}", "{run}", "{step}", "adapter")),
        optimizer=rlvr_step_file("{model}", "{run}", "{step}", "optimizer.pt"),
        rollouts=rlvr_step_file("{model}", "{run}", "{step}", "rollouts.parquet"),
        evaluations=rlvr_step_file("{model}", "{run}", "{step}", "evaluations.parquet"),
        metrics=rlvr_step_file("{model}", "{run}", "{step}", "metrics.json"),
    log:
        "results/logs/rlvr_step/{model}/{run}/step{step}.log",
    benchmark:
        "results/benchmarks/rlvr_step/{model}/{run}/step{step}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("training")
    resources:
        **stage_resources("training"),
    params:
        run=lambda wc: rlvr_step_settings(rlvr_checked(wc), int(wc.step)),
        sampling=ttt_sampling(),
        evaluation=cfg("evaluation"),
        model=lambda wc: cfg("models", wc.model),
        model_path=lambda wc: model_dir_path(wc.model),
        code=code("rlvr_step"),
    script:
        "../workflow_scripts/rlvr_step.py"


rule rlvr_table5:
    """Table 5: the RLVR progression (training-batch correctness and speedup per step, checkpoints marked)."""
    input:
        metrics=rlvr_table_input,
    output:
        table=report(
            rlvr_table_file("{model}", "{suite}", "{run}"),
            caption="../report/captions/table5.rst",
            category="Tables",
        ),
        provenance=report(
            rlvr_table_file("{model}", "{suite}", "{run}") + ".provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/rlvr_table5/{model}/{suite}/{run}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        run=lambda wc: rlvr_checked(wc),
        checkpoints=lambda wc: checkpoint_steps(rlvr_checked(wc)),
        code=code("rlvr_table"),
    script:
        "../workflow_scripts/rlvr_table.py"


rule rlvr_curve:
    """The RLVR training curve (correctness, fast_1 and reward per step) from Table 5."""
    input:
        table=lambda wc: rlvr_table_file(wc.model, rlvr_checked(wc)["suite"], wc.run),
        table_provenance=lambda wc: rlvr_table_file(wc.model, rlvr_checked(wc)["suite"], wc.run) + ".provenance.json",
    output:
        figure=report(
            rlvr_curve_file("{model}", "{run}"),
            caption="../report/captions/rlvr_curve.rst",
            category="Figures",
        ),
        provenance=report(
            rlvr_curve_file("{model}", "{run}") + ".provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/rlvr_curve/{model}/{run}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        figure="rlvr_curve",
        style=cfg("figures", "rlvr_curve"),
        code=code("figure"),
    script:
        "../workflow_scripts/figure.py"
