"""TTT tables from per-step metrics: Table 6 (main runs), 4 (Subset 2), 10 (lr), 12 (isolated), transfer."""

import json
from pathlib import Path

import pandas as pd
from _common import setup

from testtime import provenance, tables
from testtime.records import read_parquet, read_provenance


def load_runs(paths: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, list[str], dict]:
    """Trajectories of every run whose metrics.json files are listed (grouped by run name), the
    upstream config hashes, and per run its steps and deviations from the paper."""
    by_run: dict[str, list[dict]] = {}
    for p in paths:
        m = json.loads(Path(p).read_text())
        by_run.setdefault(m["run"], []).append(m)
    aggs, tasks = zip(*(tables.trajectory(run, ms) for run, ms in by_run.items()))
    upstream = [m["provenance"]["config_hash"] for ms in by_run.values() for m in ms]
    runs = {}
    for run, ms in by_run.items():
        last = max(ms, key=lambda m: m["step"])
        steps = int(last["step"])
        deviations = {**provenance.deviations_from_paper({"ttt": {"steps": steps}}), **last["provenance"].get("deviations_from_paper", {})}
        runs[run] = {"steps": steps, "seed": last["provenance"].get("seed"), "suite": last["provenance"].get("suite"), "deviations_from_paper": deviations}
    return pd.concat(aggs, ignore_index=True), pd.concat(tasks, ignore_index=True), upstream, runs


def write_csv(frame: pd.DataFrame, path: str) -> None:
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(tmp, index=False)
    tmp.replace(path)


def main(snakemake) -> None:  # noqa: ANN001
    log = setup(snakemake)
    out, spec = snakemake.output, snakemake.params.spec
    which = snakemake.rule
    agg, per_task, upstream, runs = load_runs(list(snakemake.input.metrics))
    extra: dict = {}
    if which == "table6":
        sel = tables.selection(agg, per_task, patience=spec["patience"])
        write_csv(agg, out.table)
        write_csv(per_task, out.per_task)
        write_csv(sel, out.selection)
        extra = tables.summary(sel)
        log.info("Table 6 selection:\n%s", sel.to_string(index=False))
    elif which == "table4":
        bon = read_parquet(snakemake.input.bon)
        table, per = tables.table4(bon, agg, per_task, spec["steps"], k_bon=int(bon.groupby("problem_id").size().max()))
        write_csv(table, out.table)
        write_csv(per, out.per_task)
        upstream.append(read_provenance(snakemake.input.bon).get("config_hash"))
        log.info("Table 4:\n%s", table.to_string(index=False))
    elif which == "table10":
        table = tables.table10(agg, spec["lrs"])
        write_csv(table, out.table)
        log.info("Table 10:\n%s", table.to_string(index=False))
    elif which == "table12":
        table = tables.table12(per_task, spec["runs"])
        write_csv(table, out.table)
        log.info("Table 12:\n%s", table.to_string(index=False))
    elif which == "transfer_table":
        transfers = {json.loads(Path(p).read_text())["transfer"]: json.loads(Path(p).read_text()) for p in snakemake.input.transfers}
        steps = {(m["run"], m["step"]): m for m in (json.loads(Path(p).read_text()) for p in snakemake.input.metrics)}
        baselines = {n: steps[(s["target"], 0)] for n, s in spec["transfers"].items()}
        sources = {n: steps[(s["source"], s["step"])] for n, s in spec["transfers"].items()}
        table = tables.transfer_table(transfers, baselines, sources)
        write_csv(table, out.table)
        log.info("Transfer:\n%s", table.to_string(index=False))
    else:
        raise ValueError(f"ttt_tables.py does not build rule {which!r}")
    prov = provenance.build({"table": spec, "upstream_config_hashes": sorted(set(upstream))}, table=which, run_facts=runs, **extra)
    provenance.write_json_atomic(out.provenance, prov)
    if which == "table6":
        provenance.write_json_atomic(out.summary, {**extra, "provenance": prov})


main(snakemake)  # noqa: F821
