"""Fetch a KernelBench suite (hf: dataset or github: commit archive) and write it as one parquet file."""

import os

from _common import setup
from testtime.retrieve import retrieve_suite


def main(snakemake) -> None:  # noqa: ANN001
    # Downloading is this rule's job (setup() makes every other job offline); a user's
    # HF_HUB_OFFLINE=1, for a pre-populated cache, still wins.
    os.environ.setdefault("HF_HUB_OFFLINE", "0")
    log = setup(snakemake)
    manifest = retrieve_suite(
        snakemake.params.source, snakemake.output.suite, snakemake.output.manifest, cache_dir=snakemake.params.cache_dir
    )
    log.info("retrieved %s at commit %s: %s", manifest["source"], manifest["commit"], manifest["levels"])


main(snakemake)  # noqa: F821
