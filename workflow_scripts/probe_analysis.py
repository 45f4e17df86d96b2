"""NLL probe, statistics: Spearman rho(NLL, speedup) overall and in the bottom quartile, mean NLL, per step."""

from pathlib import Path

from _common import setup
from testtime import provenance
from testtime.probes import probe_statistics
from testtime.records import read_parquet, read_provenance


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    reading = snakemake.params.bottom_quartile
    table = probe_statistics(read_parquet(snakemake.input.scores), read_parquet(snakemake.input.evaluations), reading)
    tmp = Path(snakemake.output.table + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(snakemake.output.table)
    upstream = read_provenance(snakemake.input.scores)
    prov = provenance.build({"probe.bottom_quartile": reading}, upstream=upstream)
    provenance.write_json_atomic(snakemake.output.provenance, prov)
    log.info("probe:\n%s", table.to_string(index=False))


main(snakemake)  # noqa: F821
