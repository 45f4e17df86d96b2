# Fetching remote sources: the only rules that touch the network. Models with an hf: source and
# suites with an hf:/github: source are downloaded once into the cache (retrieve.cache_dir) and
# exposed under results/retrieve/, with a manifest (resolved commit, sha256 of every file) beside.
# Local rules: on a cluster they run on the login node, which has the network.


rule retrieve_model:
    """Fetch an hf: model repository at its revision; link its files into results/retrieve/models/{model}/."""
    output:
        model=directory(retrieved_model_dir("{model}")),
        manifest=f"{retrieved_model_dir('{model}')}.provenance.json",
    log:
        "results/logs/retrieve_model/{model}.log",
    retries: 2
    localrule: True
    conda:
        "../envs/workflow.yaml"
    params:
        source=retrieved_model_source,
        files=cfg("retrieve", "model_files"),
        cache_dir=retrieve_cache_dir,
        code=code("retrieve_model"),
    script:
        "../workflow_scripts/retrieve_model.py"


rule retrieve_suite:
    """Fetch a KernelBench suite (hf: dataset or github: commit archive) and convert it to one parquet file."""
    output:
        suite="results/retrieve/suites/{host}/{owner}/{repo}/{revision}.parquet",
        manifest="results/retrieve/suites/{host}/{owner}/{repo}/{revision}.parquet.provenance.json",
    log:
        "results/logs/retrieve_suite/{host}/{owner}/{repo}/{revision}.log",
    retries: 2
    localrule: True
    conda:
        "../envs/workflow.yaml"
    params:
        source=retrieved_source,
        cache_dir=retrieve_cache_dir,
        code=code("retrieve_suite"),
    script:
        "../workflow_scripts/retrieve_suite.py"
