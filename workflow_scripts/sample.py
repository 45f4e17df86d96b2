"""Draw K samples per selected task for one seed, with raw log-probabilities."""

import json
from pathlib import Path

from _common import leased
from testtime import provenance
from testtime.pg.policy import merge_checkpoint
from testtime.records import read_parquet, write_parquet
from testtime.sampling import make_backend
from testtime.sampling.loop import sample_tasks


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    import torch

    torch.set_num_threads(snakemake.threads)
    sampling, model = snakemake.params.sampling, snakemake.params.model
    options = {"dtype": model["dtype"], "chat_format": model["chat_format"], "stop_tokens": model["stop_tokens"]}
    if sampling["backend"] == "transformers":
        options["device"] = sampling["device"]
    elif sampling["backend"] == "vllm":
        options["device"] = sampling["device"]
        options["tensor_parallel_size"] = max(1, len(lease.devices))  # the job's GPUs (resources.sampling.gpus)
    backend = make_backend(sampling["backend"], snakemake.params.model_path, **options)
    checkpoint = snakemake.params.checkpoint
    if snakemake.input.checkpoint:  # checkpoint.use: trained, an RLVR adapter on this model
        if sampling["backend"] != "transformers":
            raise NotImplementedError(
                "checkpoint.use: trained samples through the transformers backend only; vLLM needs the "
                "adapter hot-loaded with a LoRARequest (issue 10, item 4)"
            )
        merge_checkpoint(backend, snakemake.input.checkpoint[0])
        log.info("sampling checkpoint %s (adapter %s merged)", checkpoint, snakemake.input.checkpoint[0])
    tasks = read_parquet(snakemake.input.tasks)
    split = json.loads(Path(snakemake.input.split).read_text())
    seed = int(snakemake.wildcards.seed)
    samples = sample_tasks(backend, tasks, sampling, seed, snakemake.wildcards.suite)
    samples.insert(0, "model", snakemake.wildcards.model)
    samples.insert(1, "suite", snakemake.wildcards.suite)
    log.info("%d samples, %.1f%% stopped before the token limit", len(samples), 100 * (samples["finish_reason"] == "stop").mean())
    prov = provenance.build(
        {"sampling": sampling, "model": model, "checkpoint": checkpoint},
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        suite_revision=split["suite_revision"],
        seed=seed,
        checkpoint=checkpoint,
        **provenance.device_info(sampling["device"]),
    )
    write_parquet(samples, snakemake.output[0], prov)


leased(snakemake, main)  # noqa: F821
