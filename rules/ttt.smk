# Test-time training: one job per step, results/ttt/{run}/step{step}/. Step s+1 reads step s's
# files, so a run killed during step s resumes at step s and no finished step reruns.


rule ttt_step:
    """One TTT step: update the previous step's adapter on its rollouts, save, sample, evaluate, score."""
    input:
        unpack(ttt_step_input),
    output:
        adapter=directory(ttt_step_file("{run}", "{step}", "adapter")),
        optimizer=ttt_step_file("{run}", "{step}", "optimizer.pt"),
        rollouts=ttt_step_file("{run}", "{step}", "rollouts.parquet"),
        evaluations=ttt_step_file("{run}", "{step}", "evaluations.parquet"),
        metrics=ttt_step_file("{run}", "{step}", "metrics.json"),
    log:
        "results/logs/ttt_step/{run}/step{step}.log",
    benchmark:
        "results/benchmarks/ttt_step/{run}/step{step}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("training")
    resources:
        **stage_resources("training"),
    params:
        run=lambda wc: step_settings(ttt_run(wc.run), int(wc.step)),
        sampling=ttt_sampling(),
        evaluation=cfg("evaluation"),
        model=lambda wc: cfg("models", ttt_run(wc.run)["model"]),
        model_path=lambda wc: model_dir_path(ttt_run(wc.run)["model"]),
        checkpoint=lambda wc: ttt_start(wc.run),
        code=code("ttt_step"),
    script:
        "../workflow_scripts/ttt_step.py"


rule ttt_step0_shared:
    """Step 0 of a run whose step-0 settings equal an earlier run's (ttt.share_step0): that run's
    step 0, copied under this run's name."""
    input:
        unpack(ttt_step0_shared_input),
    output:
        adapter=directory(ttt_step_file("{run}", "0", "adapter")),
        optimizer=ttt_step_file("{run}", "0", "optimizer.pt"),
        rollouts=ttt_step_file("{run}", "0", "rollouts.parquet"),
        evaluations=ttt_step_file("{run}", "0", "evaluations.parquet"),
        metrics=ttt_step_file("{run}", "0", "metrics.json"),
    log:
        "results/logs/ttt_step0_shared/{run}.log",
    wildcard_constraints:
        run=step0_shared_runs(),
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        owner=lambda wc: STEP0_OWNERS[wc.run],
        code=code("ttt_step0_shared"),
    script:
        "../workflow_scripts/ttt_step0_shared.py"


ruleorder: ttt_step0_shared > ttt_step


rule ttt_transfer:
    """An adapted checkpoint of one run sampled and evaluated on another run's tasks (§9.5)."""
    input:
        unpack(transfer_input),
    output:
        rollouts="results/ttt/transfer/{name}/rollouts.parquet",
        evaluations="results/ttt/transfer/{name}/evaluations.parquet",
        metrics="results/ttt/transfer/{name}/metrics.json",
    log:
        "results/logs/ttt_transfer/{name}.log",
    benchmark:
        "results/benchmarks/ttt_transfer/{name}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("training")
    resources:
        **stage_resources("training"),
    params:
        spec=lambda wc: canonical(transfer_spec(wc.name)),
        target=lambda wc: step_settings(transfer_target(wc), 0),
        sampling=ttt_sampling(),
        evaluation=cfg("evaluation"),
        model=lambda wc: cfg("models", transfer_target(wc)["model"]),
        model_path=lambda wc: model_dir_path(transfer_target(wc)["model"]),
        checkpoint=lambda wc: ttt_start(transfer_spec(wc.name)["source"]),
        code=code("ttt_transfer"),
    script:
        "../workflow_scripts/ttt_transfer.py"
