"""Convert the configured model once into a local safetensors directory."""

from _common import setup
from testtime.models import materialize


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    manifest = materialize(snakemake.params.source, snakemake.output[0], dtype=snakemake.params.dtype)
    log.info("materialised %s", manifest)


main(snakemake)  # noqa: F821
