"""Apply the five selection strategies per task and seed; write Table 3 and its statistics."""

from _common import setup
from testtime import provenance
from testtime.records import read_parquet, read_provenance, write_parquet
from testtime.selection import join_records, select_records


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    records = join_records(
        [read_parquet(p) for p in snakemake.input.samples],
        [read_parquet(p) for p in snakemake.input.evaluations],
    )
    table, summary, stats = select_records(
        records, score=snakemake.params.selection["score"], span=snakemake.params.selection["span"]
    )
    upstream = [read_provenance(p) for p in snakemake.input.evaluations]
    prov = provenance.build(
        {"selection": snakemake.params.selection, "upstream_config_hashes": sorted({u.get("config_hash") for u in upstream})},
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        suite_revision=upstream[0].get("suite_revision"),
        device=upstream[0].get("device"),
        seeds=sorted(int(s) for s in records["seed"].unique()),
    )
    write_parquet(table, snakemake.output.selection, prov)
    summary.to_csv(snakemake.output.table, index=False)
    provenance.write_json_atomic(snakemake.output.table_provenance, prov)
    provenance.write_json_atomic(snakemake.output.stats, {**stats, "provenance": prov})
    log.info("Table 3:\n%s", summary.to_string(index=False))


main(snakemake)  # noqa: F821
