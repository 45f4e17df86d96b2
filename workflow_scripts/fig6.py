"""Figure 6: the NLL probe, Spearman rho(NLL, speedup) per TTT step."""

import json
from pathlib import Path

import pandas as pd
from _common import setup

from testtime import provenance
from testtime.figures import fig6


def main(snakemake) -> None:  # noqa: ANN001
    setup(snakemake)
    upstream = json.loads(Path(snakemake.input.table_provenance).read_text())
    prov = provenance.build({"figures.fig6": snakemake.params.style}, upstream=upstream)
    fig6(pd.read_csv(snakemake.input.table), snakemake.output.figure, snakemake.params.style, prov)
    provenance.write_json_atomic(snakemake.output.provenance, prov)


main(snakemake)  # noqa: F821
