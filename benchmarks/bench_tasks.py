"""Time each bundled task's reference forward on one CPU thread and check the size targets.

Targets: median forward 0.5-20 ms (hard limit 50 ms) on one thread, inputs of a few MB.
Usage: python benchmarks/bench_tasks.py [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types

import torch

from testtime.tasks import Task, load_bundled

TARGET_MS = (0.5, 20.0)
HARD_LIMIT_MS = 50.0
MAX_INPUT_MB = 16.0
# First calls pay allocator growth and page faults, which would dominate sub-ms medians.
WARMUP_RUNS = 3


def load_module(task: Task) -> types.ModuleType:
    module = types.ModuleType(f"bundled_{task.problem_id}")
    exec(compile(task.code, f"<{task.problem_id}_{task.name}>", "exec"), module.__dict__)
    return module


def bench(task: Task, runs: int) -> tuple[float, float]:
    """Return (median forward ms, input MB) for one task."""
    torch.manual_seed(0)
    module = load_module(task)
    model = module.Model(*module.get_init_inputs()).eval()
    inputs = module.get_inputs()
    input_mb = sum(t.numel() * t.element_size() for t in inputs) / 2**20
    times = []
    with torch.no_grad():
        for _ in range(WARMUP_RUNS):
            model(*inputs)
        for _ in range(runs):
            start = time.perf_counter()
            model(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), input_mb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'id':>3}  {'task':<34}{'median ms':>10}{'input MB':>10}  flag")
    failures = 0
    for task in load_bundled():
        ms, mb = bench(task, args.runs)
        flags = []
        if ms > HARD_LIMIT_MS:
            flags.append("OVER 50ms")
        elif not TARGET_MS[0] <= ms <= TARGET_MS[1]:
            flags.append("outside 0.5-20ms")
        if mb > MAX_INPUT_MB:
            flags.append(f"inputs > {MAX_INPUT_MB:g}MB")
        failures += ms > HARD_LIMIT_MS
        print(f"{task.problem_id:>3}  {task.name:<34}{ms:>10.2f}{mb:>10.2f}  {' '.join(flags)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
