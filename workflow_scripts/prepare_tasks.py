"""Load a task suite, split it like the paper, and mark the eval subset that gets sampled."""

from _common import setup
from testtime import provenance
from testtime.records import write_parquet
from testtime.tasks import size_overrides_of
from testtime.tasks.prepare import prepare_tasks


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    spec = snakemake.params.suite
    tasks, info = prepare_tasks(spec)
    log.info(
        "suite %s: %d tasks, eval %s, sampled subset %s", snakemake.wildcards.suite, len(tasks), info["eval"], info["subset"]
    )
    # shrunken problem sizes are a deviation every downstream record inherits via suite_revision
    overrides = size_overrides_of(spec)
    prov = provenance.build(
        {"suite": spec}, suite=snakemake.wildcards.suite, suite_revision=info["suite_revision"], size_overrides=overrides
    )
    write_parquet(tasks, snakemake.output.tasks, prov)
    provenance.write_json_atomic(snakemake.output.split, {**info, "size_overrides": overrides, "provenance": prov})


main(snakemake)  # noqa: F821
