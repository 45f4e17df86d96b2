"""Table 5: the RLVR progression of one run, from every step's metrics."""

import json
from pathlib import Path

from _common import setup
from testtime import provenance
from testtime.rlvr import table5


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    metrics = [json.loads(Path(p).read_text()) for p in snakemake.input.metrics]
    run = snakemake.params.run
    table = table5(metrics, snakemake.params.checkpoints)
    table.insert(0, "run", snakemake.wildcards.run)
    out = Path(snakemake.output.table)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    last = metrics[-1]["provenance"]
    prov = provenance.build(
        {"rlvr": run},
        run=snakemake.wildcards.run,
        model=run["model"],
        suite=run["suite"],
        checkpoints=snakemake.params.checkpoints,
        steps_provenance=last,
    )
    provenance.write_json_atomic(snakemake.output.provenance, prov)
    log.info("Table 5 of %s: %d steps, checkpoints %s", snakemake.wildcards.run, len(table), snakemake.params.checkpoints)


main(snakemake)  # noqa: F821
