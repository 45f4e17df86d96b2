"""Time the Best-of-N statistics at their default bootstrap sizes on a paper-sized record table.

Target: Table 2's scaling curve (``scaling_curve``, 10,000 replicates per seed and budget) in
under 5 s, so that the ``tables`` and ``figures`` rules are not bound by their statistics.
The records have the paper's shape: 2 seeds x 5 tasks x 64 samples, with the per-task fast
counts of Table 2 (17, 25, 28, 38 and 63 of 64), speedups and log-probabilities drawn at random.

Usage: python benchmarks/bench_analysis.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from testtime import analysis
from testtime.selection import select_records

TARGET_S = 5.0
TABLE2_COUNTS = (17, 25, 28, 38, 63)


def paper_sized_records(samples: int = 64, seed: int = 0) -> pd.DataFrame:
    """Per seed and task, Table 2's count of fast samples (speedups 1-10x) among correct but slow
    ones (0.2-1x) and incorrect ones, in a random order, with random log-probabilities."""
    rng = np.random.default_rng(seed)
    rows = []
    for run_seed in (42, 43):
        for pid, fast_count in enumerate(TABLE2_COUNTS):
            speedups = np.zeros(samples)
            speedups[:fast_count] = rng.uniform(1.0, 10.0, fast_count)
            slow = rng.random(samples - fast_count) < 0.5
            speedups[fast_count:] = np.where(slow, rng.uniform(0.2, 1.0, samples - fast_count), 0.0)
            order = rng.permutation(samples)
            lp = -rng.gamma(2.0, 0.2, samples)
            rows += [
                (run_seed, pid, i, bool(speedups[order[i]] > 0), speedups[order[i]], lp[i], lp[i] * 300) for i in range(samples)
            ]
    return pd.DataFrame(rows, columns=["seed", "problem_id", "sample_index", "correct", "speedup", "lp_mean", "lp_sum"])


def seconds(call, runs: int) -> float:
    """Median wall seconds of ``runs`` calls."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    records = paper_sized_records()
    cases = {
        "scaling_curve (Table 2, 10000 replicates)": lambda: analysis.scaling_curve(records),
        "select_records (Table 3)": lambda: select_records(records, "lp_mean"),
    }
    print(f"{len(records)} records, median of {args.runs} runs")
    worst = 0.0
    for name, call in cases.items():
        took = seconds(call, args.runs)
        worst = max(worst, took)
        print(f"  {name:45s} {took:7.3f} s")
    print(f"target: each under {TARGET_S:.0f} s: {'met' if worst < TARGET_S else 'MISSED'}")


if __name__ == "__main__":
    main()
