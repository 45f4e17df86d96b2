"""A Best-of-N analysis by name (testtime.bon_analyses.ANALYSES): Tables 1, 8 and 11, the
length-controlled correlation, the log-prob variance with the head-to-head, full-L1 success."""

from pathlib import Path

import pandas as pd

from _common import setup
from testtime import provenance
from testtime.bon_analyses import run_analysis
from testtime.records import read_parquet, read_provenance
from testtime.selection import join_records


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    name, settings = snakemake.params.analysis, snakemake.params.settings
    records = join_records(
        [read_parquet(p) for p in snakemake.input.samples],
        [read_parquet(p) for p in snakemake.input.evaluations],
    )
    result, facts = run_analysis(name, records, {**settings["selection"], **settings})
    upstream = [read_provenance(p) for p in snakemake.input.evaluations]
    prov = provenance.build(
        {**settings, "upstream_config_hashes": sorted({u.get("config_hash") for u in upstream})},
        analysis=name,
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        suite_revision=upstream[0].get("suite_revision"),
        device=upstream[0].get("device"),
        seeds=sorted(int(s) for s in records["seed"].unique()),
        summary=facts,
    )
    out = Path(snakemake.output.table)
    if isinstance(result, pd.DataFrame):
        tmp = out.with_name(out.name + ".tmp")
        result.to_csv(tmp, index=False)
        tmp.replace(out)
        log.info("%s:\n%s", name, result.to_string(index=False))
    else:
        provenance.write_json_atomic(out, {**result, "provenance": prov})
        log.info("%s: %s", name, {k: v for k, v in result.items() if k != "per_task"})
    provenance.write_json_atomic(snakemake.output.provenance, prov)


main(snakemake)  # noqa: F821
