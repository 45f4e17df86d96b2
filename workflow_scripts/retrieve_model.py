"""Fetch an hf: model repository once into the download cache and link its files into the workflow."""

import os

from _common import setup
from testtime.retrieve import retrieve_model


def main(snakemake) -> None:  # noqa: ANN001
    # Downloading is this rule's job (setup() makes every other job offline); a user's
    # HF_HUB_OFFLINE=1, for a pre-populated cache, still wins.
    os.environ.setdefault("HF_HUB_OFFLINE", "0")
    log = setup(snakemake)
    files = snakemake.params.files
    manifest = retrieve_model(
        snakemake.params.source,
        snakemake.output.model,
        snakemake.output.manifest,
        cache_dir=snakemake.params.cache_dir,
        allow_patterns=files["allow_patterns"],
        ignore_patterns=files["ignore_patterns"],
    )
    log.info("retrieved %s at commit %s: %d files", manifest["source"], manifest["commit"], len(manifest["files"]))


main(snakemake)  # noqa: F821
