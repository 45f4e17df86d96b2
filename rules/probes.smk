# NLL over-sharpening probe: score (one job: base loaded once, adapters switched), then analyse.


rule probe_score:
    """The fixed Best-of-N samples of one seed re-scored under every checkpoint of a TTT run."""
    input:
        unpack(probe_input),
    output:
        "results/probes/{run}/seed{seed}/nll.parquet",
    log:
        "results/logs/probe_score/{run}/seed{seed}.log",
    benchmark:
        "results/benchmarks/probe_score/{run}/seed{seed}.tsv"
    conda:
        "../envs/sampling.yaml"
    threads: stage_threads("probes")
    resources:
        **stage_resources("probes"),
    params:
        probe={key: config["probe"][key] for key in ("chunk", "span")},
        run=lambda wc: {
            **{key: probe_run(wc)[key] for key in ("autocast", "device", "shard")},
            **rollout_backend(),
        },
        prompt_variant=config["sampling"]["prompt_variant"],
        model=lambda wc: cfg("models", probe_run(wc)["model"]),
        model_path=lambda wc: model_dir_path(probe_run(wc)["model"]),
        checkpoint=lambda wc: ttt_start(wc.run),
        code=code("probe_score"),
    script:
        "../workflow_scripts/probe_score.py"


rule probe_analysis:
    """Spearman rho(NLL, speedup) per step, overall and in the bottom quartile, and mean NLL."""
    input:
        scores="results/probes/{run}/seed{seed}/nll.parquet",
        evaluations=lambda wc: evaluations_file(RUN["model"], RUN["suite"], wc.seed),
    output:
        table=report(
            "results/tables/probes/{run}/seed{seed}/probe.csv",
            caption="../report/captions/probe.rst",
            category="Tables",
        ),
        provenance=report(
            "results/tables/probes/{run}/seed{seed}/probe.csv.provenance.json",
            caption="../report/captions/provenance.rst",
            category="Provenance",
        ),
    log:
        "results/logs/probe_analysis/{run}/seed{seed}.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    params:
        bottom_quartile=config["probe"]["bottom_quartile"],
        code=code("probe_analysis"),
    script:
        "../workflow_scripts/probe_analysis.py"
