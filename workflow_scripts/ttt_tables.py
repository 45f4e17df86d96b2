"""A TTT table (Table 6, 4, 10, 12, transfer, or the open questions' remedies and reward
sparsification) from its runs' per-step metrics; the rule names the table in params and the
library builds it (testtime.tables.TTT_TABLES)."""

import json
from pathlib import Path

import pandas as pd

from _common import setup
from testtime import provenance
from testtime.records import read_parquet, read_provenance
from testtime.tables import build_ttt_table


def read_json(path: str) -> dict:
    return json.loads(Path(path).read_text())


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    name, spec, out = snakemake.params.table, snakemake.params.spec, snakemake.output
    bon = read_parquet(snakemake.input.bon) if "bon" in snakemake.input.keys() else None
    transfers = [read_json(p) for p in snakemake.input.get("transfers", [])]
    # the NLL probe of every compared run (open question 1): its table, named by the run
    probes = {run: pd.read_csv(p) for run, p in zip(spec.get("runs", []), snakemake.input.get("probes", []))}
    metrics = [read_json(p) for p in snakemake.input.metrics]
    frames, facts, upstream, runs = build_ttt_table(name, metrics, spec, bon, transfers, probes)
    for p in snakemake.input.get("probe_provenance", []):
        upstream.append(read_json(p).get("config_hash"))
    if bon is not None:
        upstream.append(read_provenance(snakemake.input.bon).get("config_hash"))
    for key, frame in frames.items():
        tmp = Path(out[key] + ".tmp")
        frame.to_csv(tmp, index=False)
        tmp.replace(out[key])
    log.info("%s:\n%s", name, frames.get("selection", frames["table"]).to_string(index=False))
    prov = provenance.build(
        {"table": spec, "upstream_config_hashes": sorted(set(upstream))}, table=snakemake.rule, run_facts=runs, **facts
    )
    provenance.write_json_atomic(out.provenance, prov)
    if "summary" in out.keys():
        provenance.write_json_atomic(out.summary, {**facts, "provenance": prov})


main(snakemake)  # noqa: F821
