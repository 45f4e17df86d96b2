"""One RLVR step: update the previous step's adapter on its batch, sample the next batch, evaluate, score."""

import json
from pathlib import Path

from _common import leased
from testtime import provenance
from testtime.records import read_parquet, write_parquet
from testtime.rlvr import run_step
from testtime.sampling import training_backend


def previous_step(inputs) -> dict | None:  # noqa: ANN001
    if not hasattr(inputs, "adapter"):
        return None
    return {
        "adapter": inputs.adapter,
        "optimizer": inputs.optimizer,
        "rollouts": read_parquet(inputs.rollouts),
        "evaluations": read_parquet(inputs.evaluations),
        "metrics": json.loads(Path(inputs.metrics).read_text()),
    }


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    run, model = snakemake.params.run, snakemake.params.model
    name, step = snakemake.wildcards.run, int(snakemake.wildcards.step)
    backend = training_backend(snakemake.params.model_path, model, run["device"], snakemake.threads, run["shard"])
    tasks = read_parquet(snakemake.input.tasks)
    split = json.loads(Path(snakemake.input.split).read_text())
    out = snakemake.output
    rollouts, evaluations, metrics = run_step(
        backend,
        run,
        step,
        tasks,
        snakemake.params.sampling,
        snakemake.params.evaluation,
        previous_step(snakemake.input),
        out.adapter,
        out.optimizer,
    )
    for frame in (rollouts, evaluations):
        frame.insert(0, "run", name)
        frame.insert(1, "step", step)
    prov = provenance.build(
        {"rlvr": run, "sampling": snakemake.params.sampling, "evaluation": snakemake.params.evaluation, "model": model},
        run=name,
        step=step,
        model=run["model"],
        suite=run["suite"],
        suite_revision=split["suite_revision"],
        seed=run["seed"],
        autocast=run["autocast"],
        **provenance.device_info(run["device"]),
        placement=backend.placement,
    )
    write_parquet(rollouts, out.rollouts, prov)
    write_parquet(evaluations, out.evaluations, prov)
    provenance.write_json_atomic(out.metrics, {**metrics, "run": name, "provenance": prov})
    log.info(
        "RLVR run %s step %d (tasks %s): correct %.3f, reward %.3f, update %s, timings %s",
        name,
        step,
        metrics["tasks"],
        metrics["correct_rate"],
        metrics["mean_reward"],
        {k: metrics["update"].get(k) for k in ("loss", "grad_norm", "kl_sample_train_v1", "kl_post")},
        metrics["timings"],
    )


leased(snakemake, main)  # noqa: F821
