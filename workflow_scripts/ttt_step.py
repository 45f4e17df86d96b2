"""One TTT step: update the previous step's adapter on its rollouts, sample, evaluate, score."""

from _common import leased
from _pgstep import run_policy_step, start_of
from testtime.records import read_parquet
from testtime.ttt.step import run_step, run_tasks


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    run, name, checkpoint = snakemake.params.run, snakemake.wildcards.run, snakemake.params.checkpoint
    tasks = run_tasks(read_parquet(snakemake.input.tasks), run, f"ttt.runs.{name}")
    metrics = run_policy_step(
        snakemake,
        run_step,
        tasks,
        name=name,
        section="ttt",
        start=start_of(checkpoint, snakemake.input),
        sections={"checkpoint": checkpoint},
        facts={"checkpoint": checkpoint},
    )
    log.info(
        "run %s step %d: fast_1 %.3f, correct %.3f, timings %s",
        name,
        metrics["step"],
        metrics["agg_fast_1"],
        metrics["correct_rate"],
        metrics["timings"],
    )


leased(snakemake, main)  # noqa: F821
