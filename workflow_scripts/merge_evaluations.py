"""Concatenate the evaluation shards of one seed into the seed's evaluation records."""

import pandas as pd

from _common import setup
from testtime.records import read_parquet, read_provenance, write_parquet


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    parts = [read_parquet(p) for p in snakemake.input.shards]
    provs = [read_provenance(p) for p in snakemake.input.shards]
    records = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
    records = records.sort_values(["problem_id", "sample_index"], ignore_index=True)
    # The shards share config and upstream (same params), so the first non-empty one speaks for
    # all; where each shard ran is kept per shard.
    lead = next((pv for part, pv in zip(parts, provs) if len(part)), provs[0])
    prov = {
        **lead,
        "shard": None,
        "shards": [
            {**(pv.get("shard") or {}), "job": pv.get("job"), "device": pv.get("device"), "gpu": pv.get("gpu")} for pv in provs
        ],
    }
    del prov["shard"]
    log.info("%d records from %d shards", len(records), len(parts))
    write_parquet(records, snakemake.output[0], prov)


main(snakemake)  # noqa: F821
