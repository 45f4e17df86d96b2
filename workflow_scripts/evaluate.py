"""Evaluate the samples of one shard of one seed's tasks in isolated worker processes."""

from _common import leased
from testtime import provenance
from testtime.evaluation.batch import evaluate_samples
from testtime.records import read_parquet, read_provenance, write_parquet
from testtime.scheduling import job_environment, shard_tasks


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    evaluation = snakemake.params.evaluation
    shard, n_shards = int(snakemake.wildcards.shard), int(snakemake.params.shards)
    # Workers are forked from this process: it must not initialise CUDA before they are done
    # (device_info below runs after evaluation).
    samples = read_parquet(snakemake.input.samples)
    tasks = read_parquet(snakemake.input.tasks)
    mine = shard_tasks(samples["problem_id"], shard, n_shards)
    samples = samples[samples["problem_id"].isin(mine)]
    log.info("shard %d of %d: tasks %s, %d samples", shard, n_shards, mine, len(samples))
    records = evaluate_samples(samples, tasks, evaluation, lanes=snakemake.threads)
    log.info(
        "%d records: %d correct; error kinds %s",
        len(records),
        int(records["correct"].sum()) if len(records) else 0,
        records["error_kind"].value_counts().to_dict() if len(records) else {},
    )
    device = provenance.device_info(evaluation["device"]) if len(records) else {"device": evaluation["device"]}
    job = job_environment()  # inside the lease: CUDA_VISIBLE_DEVICES as the job saw it
    upstream = read_provenance(snakemake.input.samples)
    prov = provenance.build(
        {"evaluation": evaluation, "upstream_config_hash": upstream.get("config_hash")},
        model=upstream.get("model"),
        suite=upstream.get("suite"),
        suite_revision=upstream.get("suite_revision"),
        seed=upstream.get("seed"),
        shard={"index": shard, "of": n_shards, "tasks": [int(t) if str(t).isdigit() else t for t in mine]},
        job=job,
        **device,
    )
    write_parquet(records, snakemake.output[0], prov)


leased(snakemake, main)  # noqa: F821
