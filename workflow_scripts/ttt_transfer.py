"""Cross-subset transfer: sample and evaluate one run's adapted checkpoint on another run's tasks."""

import json
from pathlib import Path

from _common import leased
from testtime import provenance
from testtime.pg.rewards import score_step, step_metrics
from testtime.pg.rollouts import adapter_sampler
from testtime.records import read_parquet, write_parquet
from testtime.ttt.step import run_tasks, sample_and_evaluate


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    spec, target, model = snakemake.params.spec, snakemake.params.target, snakemake.params.model
    name = snakemake.wildcards.name
    merged = getattr(snakemake.input, "checkpoint_adapter", None)  # the source run's fresh LoRA sits on a trained checkpoint
    backend, engine = adapter_sampler(
        snakemake.params.model_path,
        model,
        snakemake.params.sampling,
        target["device"],
        snakemake.threads,
        snakemake.input.adapter,
        merged,
        target["shard"],
    )
    tasks = run_tasks(read_parquet(snakemake.input.tasks), target, f"ttt.runs.{spec['target']}")
    split = json.loads(Path(snakemake.input.split).read_text())
    rollouts, evaluations, timings = sample_and_evaluate(
        backend,
        tasks,
        snakemake.params.sampling,
        snakemake.params.evaluation,
        target["k"],
        target["seed"],
        f"{target['suite']}:transfer-{name}",
    )
    scored, _ = score_step(rollouts, evaluations, {}, target)
    keys = ["problem_id", "sample_index"]
    metrics = step_metrics(scored.merge(rollouts[keys + ["finish_reason"]], on=keys, validate="one_to_one"))
    metrics.update(
        transfer=name, source=spec["source"], source_step=spec["step"], target=spec["target"], timings=timings, engine=engine
    )
    for frame in (rollouts, scored):
        frame.insert(0, "transfer", name)
    prov = provenance.build(
        {"transfer": spec, "ttt": target, "sampling": snakemake.params.sampling, "evaluation": snakemake.params.evaluation},
        model=target["model"],
        suite=target["suite"],
        suite_revision=split["suite_revision"],
        seed=target["seed"],
        checkpoint=snakemake.params.checkpoint,
        engine=engine,
        **provenance.device_info(target["device"]),
        placement=getattr(backend, "placement", None),  # a vLLM engine places itself
    )
    write_parquet(rollouts, snakemake.output.rollouts, prov)
    write_parquet(scored, snakemake.output.evaluations, prov)
    provenance.write_json_atomic(snakemake.output.metrics, {**metrics, "provenance": prov})
    log.info("transfer %s: fast_1 %.3f", name, metrics["agg_fast_1"])


leased(snakemake, main)  # noqa: F821
