"""One SDPO step: update the previous step's adapter with per-token teacher advantages, sample, evaluate, score."""

from _common import leased
from _pgstep import run_policy_step, start_of
from testtime.records import read_parquet
from testtime.sdpo import run_step


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    wc, checkpoint = snakemake.wildcards, snakemake.params.checkpoint
    metrics = run_policy_step(
        snakemake,
        run_step,
        read_parquet(snakemake.input.tasks),  # the suite's subset (selected), as TTT's main runs
        name=f"{wc.variant}-seed{wc.seed}",
        section="sdpo",
        start=start_of(checkpoint, snakemake.input),
        sections={"checkpoint": checkpoint},
        facts={"checkpoint": checkpoint, "variant": wc.variant},
    )
    log.info(
        "SDPO %s seed %s step %d: fast_1 %.3f, correct %.3f, update %s, timings %s",
        wc.variant,
        wc.seed,
        metrics["step"],
        metrics["agg_fast_1"],
        metrics["correct_rate"],
        {k: metrics["update"].get(k) for k in ("loss", "grad_norm", "advantage_abs_mean", "feedback_status")},
        metrics["timings"],
    )


leased(snakemake, main)  # noqa: F821
