# SDPO (reference-protocol §10): one job per step, results/sdpo/{model}/{suite}/{variant}/seed{seed}/step{step}/.
# Step s+1 reads step s's files, so a killed run resumes at the step it was in. Table 9 is built
# from every run's steps; nothing on Figure 4's DAG asks for it.


rule sdpo_step:
    """One SDPO step: update the previous step's adapter with per-token teacher advantages, sample, evaluate, score."""
    input:
        unpack(sdpo_step_input),
    output:
        adapter=directory(sdpo_step_file("{model}", "{suite}", "{variant}", "{seed}", "{step}", "adapter")),
        optimizer=sdpo_step_file("{model}", "{suite}", "{variant}", "{seed}", "{step}", "optimizer.pt"),
        rollouts=sdpo_step_file("{model}", "{suite}", "{variant}", "{seed}", "{step}", "rollouts.parquet"),
        evaluations=sdpo_step_file("{model}", "{suite}", "{variant}", "{seed}", "{step}", "evaluations.parquet"),
        metrics=sdpo_step_file("{model}", "{suite}", "{variant}", "{seed}", "{step}", "metrics.json"),
    log:
        "results/logs/sdpo_step/{model}/{suite}/{variant}/seed{seed}/step{step}.log",
    benchmark:
        "results/benchmarks/sdpo_step/{model}/{suite}/{variant}/seed{seed}/step{step}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("training")
    resources:
        **stage_resources("training"),
    params:
        run=lambda wc: sdpo_step_settings(sdpo_run(wc), int(wc.step)),
        sampling=ttt_sampling(),
        evaluation=cfg("evaluation"),
        model=lambda wc: cfg("models", wc.model),
        model_path=lambda wc: model_dir_path(wc.model),
        checkpoint=lambda wc: sdpo_start(wc.model),
        code=code("sdpo_step"),
    script:
        "../workflow_scripts/sdpo_step.py"


rule sdpo_table9:
    """Table 9: step-0 and final-step fast_1 of every SDPO variant and seed, with the published values."""
    input:
        metrics=sdpo_table_input,
    output:
        table=report(
            sdpo_table_file("{model}", "{suite}"),
            caption="../report/captions/table9.rst",
            category="Tables",
        ),
        provenance=report(
            sdpo_table_file("{model}", "{suite}") + ".provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/sdpo_table9/{model}/{suite}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        sdpo=cfg("sdpo"),
        code=code("sdpo_table"),
    script:
        "../workflow_scripts/sdpo_table.py"
