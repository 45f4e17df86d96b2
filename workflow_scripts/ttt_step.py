"""One TTT step: update the previous step's adapter on its rollouts, sample, evaluate, score."""

import json
from pathlib import Path

from _common import leased
from testtime import provenance
from testtime.records import read_parquet, write_parquet
from testtime.sampling import training_backend
from testtime.ttt.step import run_step, run_tasks


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


def start_of(checkpoint: dict, inputs) -> dict:  # noqa: ANN001
    """Where the run starts: the trained checkpoint's LoRA continued (step 0) or merged under a
    fresh LoRA (every step); nothing for a base or fetched checkpoint."""
    if not hasattr(inputs, "checkpoint_adapter"):
        return {}
    if checkpoint["lora"] == "continued":
        return {"adapter": inputs.checkpoint_adapter, "optimizer": getattr(inputs, "checkpoint_optimizer", None)}
    return {"merge": inputs.checkpoint_adapter}


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    run, model = snakemake.params.run, snakemake.params.model
    name, step = snakemake.wildcards.run, int(snakemake.wildcards.step)
    backend = training_backend(snakemake.params.model_path, model, run["device"], snakemake.threads, run["shard"])
    tasks = run_tasks(read_parquet(snakemake.input.tasks), run, f"ttt.runs.{name}")
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
        start=start_of(snakemake.params.checkpoint, snakemake.input),
    )
    for frame in (rollouts, evaluations):
        frame.insert(0, "run", name)
        frame.insert(1, "step", step)
    prov = provenance.build(
        {
            "ttt": run,
            "sampling": snakemake.params.sampling,
            "evaluation": snakemake.params.evaluation,
            "model": model,
            "checkpoint": snakemake.params.checkpoint,
        },
        run=name,
        step=step,
        model=run["model"],
        suite=run["suite"],
        suite_revision=split["suite_revision"],
        seed=run["seed"],
        checkpoint=snakemake.params.checkpoint,
        autocast=run["autocast"],
        **provenance.device_info(run["device"]),
        placement=backend.placement,
    )
    write_parquet(rollouts, out.rollouts, prov)
    write_parquet(evaluations, out.evaluations, prov)
    provenance.write_json_atomic(out.metrics, {**metrics, "run": name, "provenance": prov})
    log.info(
        "run %s step %d: fast_1 %.3f, correct %.3f, timings %s",
        name,
        step,
        metrics["agg_fast_1"],
        metrics["correct_rate"],
        metrics["timings"],
    )


leased(snakemake, main)  # noqa: F821
