"""Figure 3: Best-of-N scaling curve (Table 2) with the TTT BoA line and TTT's equivalent K."""

import json
from pathlib import Path

import pandas as pd

from _common import setup
from testtime import provenance
from testtime.figures import fig3
from testtime.tables import equivalent_k_facts


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    table2 = pd.read_csv(snakemake.input.table)
    ttt = json.loads(Path(snakemake.input.ttt).read_text())
    facts = equivalent_k_facts(table2, ttt)
    upstream = [json.loads(Path(snakemake.input.table_provenance).read_text()), ttt["provenance"]]
    prov = provenance.build({"figures.fig3": snakemake.params.style}, upstream=upstream, **facts)
    fig3(table2, facts["ttt_boa_fast_1_mean"], facts["equivalent_k"], snakemake.output.figure, snakemake.params.style, prov)
    provenance.write_json_atomic(snakemake.output.equivalent_k, {**facts, "provenance": prov})
    provenance.write_json_atomic(snakemake.output.provenance, prov)
    log.info("TTT BoA %.3f -> equivalent K %.3g", facts["ttt_boa_fast_1_mean"], facts["equivalent_k"])


main(snakemake)  # noqa: F821
