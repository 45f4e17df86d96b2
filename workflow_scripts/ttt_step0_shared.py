"""Step 0 of a TTT run whose step-0 settings equal an earlier run's (ttt.share_step0): that run's
step 0 under this run's name (testtime.ttt.share)."""

from _common import setup
from testtime.ttt.share import STEP_FILES, share_step0


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    run, owner = snakemake.wildcards.run, snakemake.params.owner
    share_step0({k: snakemake.input[k] for k in STEP_FILES}, {k: snakemake.output[k] for k in STEP_FILES}, run, owner)
    log.info("run %s: step 0 is run %s's (same step-0 settings)", run, owner)


main(snakemake)  # noqa: F821
