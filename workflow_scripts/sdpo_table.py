"""Table 9: the SDPO variants' step-0 and final-step fast_1 per seed, from every step's metrics."""

import json
from pathlib import Path

from _common import setup
from testtime import provenance
from testtime.sdpo import table9


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    metrics = [json.loads(Path(p).read_text()) for p in snakemake.input.metrics]
    table = table9(metrics)
    out = Path(snakemake.output.table)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".csv.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    runs = {
        f"{m['variant']}-seed{m['provenance']['seed']}": {
            "suite": m["provenance"]["suite"],
            "deviations_from_paper": m["provenance"]["deviations_from_paper"],
            "config_hash": m["provenance"]["config_hash"],
        }
        for m in metrics
        if m["step"] > 0
    }
    prov = provenance.build(
        {"sdpo": snakemake.params.sdpo},
        table="table9",
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        run_facts=runs,
    )
    provenance.write_json_atomic(snakemake.output.provenance, prov)
    log.info("Table 9:\n%s", table.to_string(index=False))


main(snakemake)  # noqa: F821
