"""Figure 4: fast_1 success rate and mean speedup per selection strategy."""

import json
from pathlib import Path

import pandas as pd
from _common import setup

from testtime import provenance
from testtime.figures import fig4


def main(snakemake) -> None:  # noqa: ANN001
    setup(snakemake)
    summary = pd.read_csv(snakemake.input.table)
    upstream = json.loads(Path(snakemake.input.table_provenance).read_text())
    prov = provenance.build({"figures.fig4": snakemake.params.style}, upstream=upstream)
    fig4(summary, snakemake.output.figure, snakemake.params.style, prov)
    provenance.write_json_atomic(snakemake.output.provenance, prov)


main(snakemake)  # noqa: F821
