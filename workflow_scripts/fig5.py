"""Figure 5: aggregate fast_1 per TTT step for the main runs, stars at the BoA steps."""

import json
from pathlib import Path

import pandas as pd
from _common import setup

from testtime import provenance
from testtime.figures import fig5


def main(snakemake) -> None:  # noqa: ANN001
    setup(snakemake)
    upstream = json.loads(Path(snakemake.input.table_provenance).read_text())
    prov = provenance.build({"figures.fig5": snakemake.params.style}, upstream=upstream)
    fig5(pd.read_csv(snakemake.input.table), pd.read_csv(snakemake.input.selection), snakemake.output.figure, snakemake.params.style, prov)
    provenance.write_json_atomic(snakemake.output.provenance, prov)


main(snakemake)  # noqa: F821
