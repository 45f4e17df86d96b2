"""Time the Best-of-N statistics at their default bootstrap sizes on a paper-sized record table.

Target: Table 2's scaling curve (``scaling_curve``, 10,000 replicates per seed and budget) in
under 5 s, so that the ``tables`` and ``figures`` rules are not bound by their statistics.
The records have the paper's shape: 2 seeds x 5 tasks x 64 samples, with the per-task fast
counts of Table 2 (17, 25, 28, 38 and 63 of 64).

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


def paper_sized_records(samples: int = 64) -> pd.DataFrame:
    """Per seed and task, the first c samples fast (speedup 2), the rest slow or incorrect."""
    frames = []
    for seed in (42, 43):
        for pid, fast_count in enumerate(TABLE2_COUNTS):
            idx = np.arange(samples)
            fast = idx < fast_count
            correct = fast | (idx % 2 == 0)
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed,
                        "problem_id": pid,
                        "sample_index": idx,
                        "correct": correct,
                        "speedup": np.where(fast, 2.0, np.where(correct, 0.5, 0.0)),
                        "lp_mean": -0.1 * idx,
                        "lp_sum": -0.1 * idx * 300,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


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
