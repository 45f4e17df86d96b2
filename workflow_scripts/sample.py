"""Draw K samples per selected task for one seed, with raw log-probabilities."""

import json
from pathlib import Path

from _common import gpu_lease, setup

from testtime import provenance
from testtime.records import read_parquet, write_parquet
from testtime.sampling import make_backend
from testtime.stages import sample_tasks


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    with gpu_lease(snakemake) as lease:  # before anything touches CUDA
        if lease.devices:
            log.info("GPU lease: %s", lease.describe())
        run(snakemake, log, len(lease.devices))


def run(snakemake, log, n_gpus: int) -> None:  # noqa: ANN001
    import torch

    torch.set_num_threads(snakemake.threads)
    sampling, model = snakemake.params.sampling, snakemake.params.model
    options = {"dtype": model["dtype"], "chat_format": model["chat_format"], "stop_tokens": model["stop_tokens"]}
    if sampling["backend"] == "transformers":
        options["device"] = sampling["device"]
    elif sampling["backend"] == "vllm":
        options["tensor_parallel_size"] = max(1, n_gpus)  # the job's GPUs (resources.sampling.gpus)
    backend = make_backend(sampling["backend"], snakemake.params.model_path, **options)
    tasks = read_parquet(snakemake.input.tasks)
    split = json.loads(Path(snakemake.input.split).read_text())
    seed = int(snakemake.wildcards.seed)
    samples = sample_tasks(backend, tasks, sampling, seed, snakemake.wildcards.suite)
    samples.insert(0, "model", snakemake.wildcards.model)
    samples.insert(1, "suite", snakemake.wildcards.suite)
    log.info("%d samples, %.1f%% stopped before the token limit", len(samples), 100 * (samples["finish_reason"] == "stop").mean())
    prov = provenance.build(
        {"sampling": sampling, "model": model},
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        suite_revision=split["suite_revision"],
        seed=seed,
        **provenance.device_info(sampling["device"]),
    )
    write_parquet(samples, snakemake.output[0], prov)


main(snakemake)  # noqa: F821
