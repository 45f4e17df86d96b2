"""Time the paper's 20 KernelBench level-1 eval tasks at CPU sizes on one CPU thread.

For each task: inputs + output MB, median reference forward ms (5 runs after a warmup), and
input-generation ms (`get_inputs()`). Exits 1 if any median forward exceeds 500 ms or any
task's inputs + output exceed 256 MB.

Usage: python benchmarks/bench_kernelbench_cpu.py [--data PATH.parquet] [--runs 5] [--ids 4 12]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from testtime.tasks import Task, load_suite, size_overrides_of

REPO = Path(__file__).resolve().parents[1]
KB_DATA = Path(os.environ.get("TESTTIME_KERNELBENCH_DATA", REPO.parent / "shared" / "data" / "kernelbench"))
PAPER_EVAL_IDS = [4, 5, 12, 14, 15, 18, 28, 29, 30, 32, 36, 55, 65, 70, 76, 82, 87, 89, 95, 98]
LIMIT_MS = 500.0
MAX_MB = 256.0
WARMUP_RUNS = 1


def load_module(task: Task) -> types.ModuleType:
    module = types.ModuleType(f"kb_l{task.level}_{task.problem_id}")
    exec(compile(task.code, f"<{task.problem_id}_{task.name}>", "exec"), module.__dict__)
    return module


def nbytes(values) -> int:
    return sum(v.numel() * v.element_size() for v in values if isinstance(v, torch.Tensor))


def bench(task: Task, runs: int) -> dict[str, float]:
    torch.manual_seed(0)
    module = load_module(task)
    model = module.Model(*module.get_init_inputs()).eval()
    start = time.perf_counter()
    inputs = module.get_inputs()
    gen_ms = (time.perf_counter() - start) * 1e3
    times = []
    out = None
    with torch.no_grad():
        for _ in range(WARMUP_RUNS):
            out = model(*inputs)
        for _ in range(runs):
            out = None  # free the previous output before timing the next forward
            start = time.perf_counter()
            out = model(*inputs)
            times.append((time.perf_counter() - start) * 1e3)
    outs = out if isinstance(out, (tuple, list)) else [out]
    return {
        "in_mb": nbytes(inputs) / 2**20,
        "out_mb": nbytes(outs) / 2**20,
        "fwd_ms": statistics.median(times),
        "gen_ms": gen_ms,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(KB_DATA / "level1-v01-2025-07.parquet"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ids", type=int, nargs="*", default=PAPER_EVAL_IDS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = {"source": args.data, "level": 1, "sizes": "cpu"}
    tasks = {t.problem_id: t for t in load_suite(spec)}
    overrides = size_overrides_of(spec)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.data}")
    header = f"{'id':>3}  {'task':<36}{'in MB':>8}{'out MB':>8}{'fwd ms':>9}{'gen ms':>9}  sizes"
    print(header)
    failures = 0
    for pid in args.ids:
        task = tasks[pid]
        r = bench(task, args.runs)
        bad = r["fwd_ms"] > LIMIT_MS or r["in_mb"] + r["out_mb"] > MAX_MB
        failures += bad
        sizes = " ".join(f"{k}={v}" for k, v in overrides.get(pid, {}).items())
        print(
            f"{pid:>3}  {task.name[:35]:<36}{r['in_mb']:>8.1f}{r['out_mb']:>8.1f}"
            f"{r['fwd_ms']:>9.1f}{r['gen_ms']:>9.1f}  {sizes}{'  FAIL' if bad else ''}",
            flush=True,
        )
    print(f"{failures} task(s) over {LIMIT_MS:g} ms or {MAX_MB:g} MB" if failures else "all ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
