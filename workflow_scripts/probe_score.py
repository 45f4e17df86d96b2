"""NLL probe, scoring: the fixed Best-of-N samples of one seed under every checkpoint of a TTT run."""

import json
from pathlib import Path

from _common import leased
from testtime import provenance
from testtime.probes import engine_record, probe_engine, rescore
from testtime.prompting import task_prompts
from testtime.records import read_parquet, read_provenance, write_parquet


def main(snakemake, log, lease) -> None:  # noqa: ANN001
    probe, model, run = snakemake.params.probe, snakemake.params.model, snakemake.params.run
    adapters = dict(enumerate(snakemake.input.adapters))
    merged = getattr(snakemake.input, "checkpoint_adapter", None)  # the run's fresh LoRA sits on a trained checkpoint
    backend = probe_engine(snakemake.params.model_path, model, run, snakemake.threads, adapters, merged)
    samples = read_parquet(snakemake.input.samples)
    tasks = read_parquet(snakemake.input.tasks)
    tasks = tasks.assign(selected=tasks["problem_id"].isin(samples["problem_id"].unique()))
    prompts = task_prompts(backend, tasks, snakemake.params.prompt_variant)
    scores = rescore(backend, samples, prompts, adapters, chunk=probe["chunk"], autocast=run["autocast"], span=probe["span"])
    scores.insert(0, "run", snakemake.wildcards.run)
    scores.insert(1, "seed", int(snakemake.wildcards.seed))
    upstream = read_provenance(snakemake.input.samples)
    checkpoints = json.loads(Path(snakemake.input.metrics).read_text())["provenance"]  # the run's last step
    prov = provenance.build(
        {
            "probe": probe,
            "ttt": run,
            "prompt_variant": snakemake.params.prompt_variant,
            "upstream_config_hash": upstream.get("config_hash"),
        },
        run=snakemake.wildcards.run,
        seed=int(snakemake.wildcards.seed),
        model=upstream.get("model"),
        suite=upstream.get("suite"),
        suite_revision=upstream.get("suite_revision"),
        autocast=run["autocast"],
        steps=len(adapters) - 1,
        checkpoint=snakemake.params.checkpoint,
        checkpoints_provenance=checkpoints,
        engine=engine_record(backend, adapters, merged),
        **provenance.device_info(run["device"]),
        placement=getattr(backend, "placement", None),  # a vLLM engine places itself
    )
    write_parquet(scores, snakemake.output[0], prov)
    log.info("%d scores over %d steps", len(scores), len(adapters))


leased(snakemake, main)  # noqa: F821
