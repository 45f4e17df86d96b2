"""One RLVR step: update the previous step's adapter on its batch, sample the next batch, evaluate, score."""

from _common import leased
from _pgstep import run_policy_step
from testtime.records import read_parquet
from testtime.rlvr import run_step


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    name = snakemake.wildcards.run
    metrics = run_policy_step(snakemake, run_step, read_parquet(snakemake.input.tasks), name=name, section="rlvr")
    log.info(
        "RLVR run %s step %d (tasks %s): correct %.3f, reward %.3f, update %s, timings %s",
        name,
        metrics["step"],
        metrics["tasks"],
        metrics["correct_rate"],
        metrics["mean_reward"],
        {k: metrics["update"].get(k) for k in ("loss", "grad_norm", "kl_sample_train_v1", "kl_post")},
        metrics["timings"],
    )


leased(snakemake, main)  # noqa: F821
