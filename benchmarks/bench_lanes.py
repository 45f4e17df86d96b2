"""Parallel CPU evaluation lanes: candidates per minute with 1 and N lanes on the same samples.

Usage: python benchmarks/bench_lanes.py [--samples results/samples/smollm2-135m/bundled/seed42.parquet]
       [--tasks results/tasks/bundled/tasks.parquet] [--lanes 2]

Runs the workflow's own evaluation stage (embedded-default settings) twice and checks that the
verdicts agree (correctness must not depend on the lane count; speedups may vary with noise).
"""

from __future__ import annotations

import argparse
import os
import time

import yaml

from testtime.config import validate
from testtime.evaluation.batch import evaluate_samples
from testtime.records import read_parquet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", default="results/samples/smollm2-135m/bundled/seed42.parquet")
    ap.add_argument("--tasks", default="results/tasks/bundled/tasks.parquet")
    ap.add_argument("--lanes", type=int, default=len(os.sched_getaffinity(0)))
    args = ap.parse_args()
    with open("config/config.yaml") as f:
        evaluation = validate(yaml.safe_load(f))["evaluation"]
    samples, tasks = read_parquet(args.samples), read_parquet(args.tasks)
    results = {}
    for lanes in (1, args.lanes):
        started = time.monotonic()
        records = evaluate_samples(samples, tasks, evaluation, lanes=lanes)
        seconds = time.monotonic() - started
        unique = int((~records["reused_verdict"]).sum())
        results[lanes] = records
        print(
            f"lanes={lanes}: {len(records)} samples, {unique} unique candidates, {int(records['correct'].sum())} correct, "
            f"{seconds:.1f} s, {unique / seconds * 60:.1f} candidates/min"
        )
    a, b = results[1], results[args.lanes]
    agree = (
        a.sort_values(["problem_id", "sample_index"])["correct"].to_numpy()
        == b.sort_values(["problem_id", "sample_index"])["correct"].to_numpy()
    ).mean()
    print(f"verdict agreement (correct flag) between 1 and {args.lanes} lanes: {agree:.3f}")


if __name__ == "__main__":
    main()
