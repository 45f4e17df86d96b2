"""A figure drawn from its CSV tables alone (Figures 4, 5 and 6): the rule names it in params."""

import json
from pathlib import Path

from _common import setup
from testtime import provenance
from testtime.figures import render


def main(snakemake) -> None:  # noqa: ANN001
    setup(snakemake)
    name, style = snakemake.params.figure, snakemake.params.style
    upstream = json.loads(Path(snakemake.input.table_provenance).read_text())
    prov = provenance.build({f"figures.{name}": style}, upstream=upstream)
    tables = {key: path for key, path in snakemake.input.items() if key != "table_provenance"}
    render(name, tables, snakemake.output.figure, style, prov)
    provenance.write_json_atomic(snakemake.output.provenance, prov)


main(snakemake)  # noqa: F821
