"""Draw K samples per selected task for one seed, with raw log-probabilities."""

import json
from pathlib import Path

from _common import leased
from testtime import provenance
from testtime.records import read_parquet, write_parquet
from testtime.sampling.loop import sample_job


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    import torch

    torch.set_num_threads(snakemake.threads)
    sampling, model = snakemake.params.sampling, snakemake.params.model
    checkpoint = snakemake.params.checkpoint
    adapter = snakemake.input.checkpoint[0] if snakemake.input.checkpoint else None  # checkpoint.use: trained
    tasks = read_parquet(snakemake.input.tasks)
    split = json.loads(Path(snakemake.input.split).read_text())
    seed = int(snakemake.wildcards.seed)
    samples, engine = sample_job(
        sampling, model, snakemake.params.model_path, tasks, seed, snakemake.wildcards.suite, adapter, len(lease.devices)
    )
    log.info("sampled checkpoint %s with %s", checkpoint, engine)
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
        engine=engine,
        **provenance.device_info(sampling["device"]),
    )
    write_parquet(samples, snakemake.output[0], prov)


leased(snakemake, main)  # noqa: F821
