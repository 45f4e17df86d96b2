# NLL over-sharpening probe: score (one job: base loaded once, adapters switched), then analyse.


rule probe_score:
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
        probe={"chunk": config["probe"]["chunk"]},
        run=lambda wc: {key: probe_run(wc)[key] for key in ("autocast", "device")},
        prompt_variant=config["sampling"]["prompt_variant"],
        model=lambda wc: cfg("models", probe_run(wc)["model"]),
        model_path=lambda wc: model_dir_path(probe_run(wc)["model"]),
        code=code("testtime/probes.py", "testtime/scoring.py", "testtime/ttt.py", "testtime/prompting.py", "testtime/sampling"),
    script:
        "../workflow_scripts/probe_score.py"


rule probe_analysis:
    input:
        scores="results/probes/{run}/seed{seed}/nll.parquet",
        evaluations=lambda wc: f"results/evaluations/{RUN['model']}/{RUN['suite']}/seed{wc.seed}.parquet",
    output:
        table="results/tables/probes/{run}/seed{seed}/probe.csv",
        provenance="results/tables/probes/{run}/seed{seed}/probe.csv.provenance.json",
    log:
        "results/logs/probe_analysis/{run}/seed{seed}.log",
    conda:
        "../envs/analysis.yaml"
    localrule: True
    params:
        bottom_quartile=config["probe"]["bottom_quartile"],
        code=code("testtime/probes.py"),
    script:
        "../workflow_scripts/probe_analysis.py"
