"""Table 2: Best-of-N scaling curve (unbiased pass@k, std across seeds, bootstrap 95% CI)."""

from pathlib import Path

import pandas as pd

from _common import setup
from testtime import analysis, provenance
from testtime.records import read_parquet, read_provenance


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    scaling = snakemake.params.scaling
    records = pd.concat([read_parquet(p) for p in snakemake.input.evaluations], ignore_index=True)
    args = dict(ks=scaling["ks"], n_boot=scaling["n_boot"], rng_seed=scaling["rng_seed"])
    table = analysis.scaling_curve(records, **args)
    by_seed = analysis.scaling_curve_by_seed(records, **args)
    upstream = [read_provenance(p) for p in snakemake.input.evaluations]
    prov = provenance.build(
        {"scaling": scaling, "upstream_config_hashes": sorted({u.get("config_hash") for u in upstream})},
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        suite_revision=upstream[0].get("suite_revision"),
        seeds=sorted(int(s) for s in records["seed"].unique()),
        samples_per_task=int(records.groupby(["seed", "problem_id"]).size().min()),
    )
    for frame, path in ((table, snakemake.output.table), (by_seed, snakemake.output.by_seed)):
        tmp = Path(path).with_name(Path(path).name + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(path)
    provenance.write_json_atomic(snakemake.output.provenance, prov)
    log.info("Table 2:\n%s", table.to_string(index=False))


main(snakemake)  # noqa: F821
