"""Evaluate every sample of one seed in isolated worker processes."""

from _common import setup

from testtime import provenance
from testtime.records import read_parquet, read_provenance, write_parquet
from testtime.stages import evaluate_samples


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    evaluation = snakemake.params.evaluation
    # Workers are forked from this process: it must not initialise CUDA before they are done
    # (device_info below runs after evaluation).
    samples = read_parquet(snakemake.input.samples)
    tasks = read_parquet(snakemake.input.tasks)
    records = evaluate_samples(samples, tasks, evaluation, lanes=snakemake.threads)
    log.info("%d records: %d correct; error kinds %s", len(records), int(records["correct"].sum()), records["error_kind"].value_counts().to_dict())
    upstream = read_provenance(snakemake.input.samples)
    prov = provenance.build(
        {"evaluation": evaluation, "upstream_config_hash": upstream.get("config_hash")},
        model=upstream.get("model"),
        suite=upstream.get("suite"),
        suite_revision=upstream.get("suite_revision"),
        seed=upstream.get("seed"),
        **provenance.device_info(evaluation["device"]),
    )
    write_parquet(records, snakemake.output[0], prov)


main(snakemake)  # noqa: F821
