"""Table 7: compute accounting (§17) from the jobs' benchmark files and the records' token counts."""

import json
from pathlib import Path

import pandas as pd

from _common import setup
from testtime import provenance
from testtime.bon_analyses import benchmark_seconds, compute_row, first_per_task, sample_usage, sdpo_teacher_tokens, table7
from testtime.records import read_parquet, read_provenance


def jobs(paths, gpus: int) -> list[tuple[float, float, float]]:  # noqa: ANN001
    return [benchmark_seconds(pd.read_csv(p, sep="\t"), gpus) for p in paths]


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    methods, gpus = snakemake.params.methods, snakemake.params.gpus
    bon = pd.concat([read_parquet(p) for p in snakemake.input.samples], ignore_index=True)
    k, n_seeds = int(bon.groupby(["seed", "problem_id"]).size().max()), int(bon["seed"].nunique())
    rows = []
    if "rlvr_base" in methods:
        rows.append(compute_row("RLVR Base (K=1)", sample_usage(first_per_task(bon), []), n_seeds))
    if "best_of_n" in methods:
        spent = jobs(snakemake.input.sample_benchmarks, gpus["sampling"]) + jobs(
            snakemake.input.evaluate_benchmarks, gpus["evaluation"]
        )
        rows.append(compute_row(f"Best-of-N (K={k})", sample_usage(bon, spent), n_seeds))
    if "boa_step1" in methods:
        rollouts = pd.concat([read_parquet(p) for p in snakemake.input.ttt_rollouts], ignore_index=True)
        spent = jobs(snakemake.input.ttt_benchmarks, gpus["training"])
        rows.append(compute_row("BoA Step 1", sample_usage(rollouts, spent), int(rollouts["run"].nunique())))
    facts = {}
    if "sdpo" in methods:
        rollouts = [read_parquet(p) for p in snakemake.input.sdpo_rollouts]
        metrics = [json.loads(Path(p).read_text()) for p in snakemake.input.sdpo_metrics]
        per_step = [
            {"metrics": m, "rollouts": len(r), "completion_tokens": int(r["n_tokens"].sum())} for m, r in zip(metrics, rollouts)
        ]
        n = snakemake.params.sdpo_steps  # steps per run, the inputs being seed-major
        runs = [per_step[i : i + n] for i in range(0, len(per_step), n)]
        teacher, estimated = sdpo_teacher_tokens(runs, snakemake.params.teacher_tokens)
        spent = jobs(snakemake.input.sdpo_benchmarks, gpus["training"])
        rows.append(compute_row("SDPO (feedback)", sample_usage(pd.concat(rollouts), spent), len(runs), teacher))
        facts = {"sdpo_teacher_tokens_estimated": estimated}
    table = table7(rows)
    upstream = [read_provenance(p) for p in snakemake.input.samples]
    prov = provenance.build(
        {
            "analyses": {"compute_methods": methods, "sdpo_teacher_tokens": snakemake.params.teacher_tokens},
            "upstream_config_hashes": sorted({u.get("config_hash") for u in upstream}),
        },
        model=snakemake.wildcards.model,
        suite=snakemake.wildcards.suite,
        gpus_per_job=gpus,
        device=upstream[0].get("device"),
        note="wall/CPU/GPU time from Snakemake benchmark: files (sample + evaluate jobs; TTT steps 0-1; SDPO steps); "
        "GPU-hours = wall x GPUs requested; tokens = prompt + completion tokens of every sampled rollout",
        **facts,
    )
    out = Path(snakemake.output.table)
    tmp = out.with_name(out.name + ".tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)
    provenance.write_json_atomic(snakemake.output.provenance, prov)
    log.info("Table 7:\n%s", table.to_string(index=False))


main(snakemake)  # noqa: F821
