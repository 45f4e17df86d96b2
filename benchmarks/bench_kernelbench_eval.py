"""The hardened evaluator on the 20 KernelBench L1 eval tasks (split seed 42) at CPU sizes.

Usage: python benchmarks/bench_kernelbench_eval.py [--data PARQUET | --bundled] [--repeats 5]
       [--ids 4 5 ...] [--device cpu|cuda] [--sizes cpu|full] [--gpu-clock timeline|host]

The candidate of each task is the reference's own forward body (identical code): every verdict
must be correct, and its speedups show the evaluator's noise. Prints per task the verdicts, the
speedup spread over the repeats and how many CIs contain 1.0, then overall the coverage of 1.0
by the speedup CI (it must be at least the nominal ci_level for identical code), the speedup
percentiles and candidates per minute. ``--bundled`` uses the bundled CPU suite (no data needed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from testtime.evaluation import EvalSettings, Evaluator
from testtime.evaluation.engine import GPU_CLOCKS, bootstrap_median_ci, order_median_ci, widened_ci
from testtime.prompting import candidate_source, reference_forward_body
from testtime.tasks import load_bundled, load_suite, make_split

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kernelbench" / "level1-v01-2025-07.parquet"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("TESTTIME_L1_PARQUET", str(DEFAULT_DATA)))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ids", type=int, nargs="*")
    ap.add_argument("--bundled", action="store_true", help="the bundled CPU suite instead of KernelBench L1")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sizes", default="cpu", choices=["cpu", "full"])
    ap.add_argument("--gpu-clock", default="timeline", choices=list(GPU_CLOCKS), help="evaluation.gpu_clock")
    args = ap.parse_args()
    if args.bundled:
        tasks = load_bundled()
        chosen = [t for t in tasks if not args.ids or t.problem_id in args.ids]
    else:
        tasks = load_suite({"source": args.data, "level": 1, "sizes": args.sizes})
        eval_ids = make_split([t.problem_id for t in tasks], seed=42)["eval"]
        chosen = [t for t in tasks if t.problem_id in (args.ids or eval_ids)]
    settings = EvalSettings(device=args.device, cpu_core=0 if args.device == "cpu" else None, gpu_clock=args.gpu_clock)
    print(
        f"{len(chosen)} tasks x {args.repeats} repeats, protocol {settings.protocol}, gpu_clock {settings.gpu_clock}, "
        f"{settings.correctness_trials}+{settings.wide_trials} trials, {settings.timing_pairs} timing pairs"
    )
    print(f"{'id':>3}  {'task':36} correct  {'min':>6} {'median':>6} {'max':>6}  ci_low>1  sec/cand  flags")
    started, n_candidates, n_correct, all_speedups, covered, above, covered_order = time.monotonic(), 0, 0, [], 0, 0, 0
    pairs_ci: list[tuple[float, float, float]] = []  # (speedup, bootstrap low, high) before widening
    for task in chosen:
        body = reference_forward_body(task.code)
        source = candidate_source(body, task.code)
        with Evaluator(task.code, settings) as ev:
            results = []
            for _ in range(args.repeats):
                results.append(ev.evaluate(source, body))
        n_candidates += len(results)
        ok = [r for r in results if r.correct]
        n_correct += len(ok)
        speedups = [r.speedup for r in ok]
        all_speedups += speedups
        covered += sum(r.speedup_ci_low <= 1.0 <= r.speedup_ci_high for r in ok)
        above += sum(r.speedup_ci_low > 1.0 for r in ok)
        for r in ok:  # the other interval, from the same timed pairs
            ratios = [a / b for a, b in zip(r.ref_runtime_trials_us, r.runtime_trials_us)]
            low, high = order_median_ci(ratios, settings.ci_level)
            covered_order += low <= 1.0 <= high
            pairs_ci.append((r.speedup, *bootstrap_median_ci(ratios, settings.ci_level)))
        errors = {r.error_kind for r in results if not r.correct}
        flags = sorted({f for r in results for f in r.flags}) + sorted(e for e in errors if e)
        per = statistics.mean(r.wall_s for r in results)
        if speedups:
            print(
                f"{task.problem_id:>3}  {task.name[:36]:36} {len(ok)}/{len(results)}    {min(speedups):6.3f} "
                f"{statistics.median(speedups):6.3f} {max(speedups):6.3f}  {sum(r.fast_1_sig for r in ok):>8}  {per:8.2f}  {','.join(flags)}"
            )
        else:
            print(
                f"{task.problem_id:>3}  {task.name[:36]:36} 0/{len(results)}    {'-':>6} {'-':>6} {'-':>6}  {'-':>8}  {per:8.2f}  "
                f"{','.join(flags)}: {results[0].error_message[:120]}"
            )
    minutes = (time.monotonic() - started) / 60
    q = statistics.quantiles(all_speedups, n=20) if len(all_speedups) > 1 else [float("nan")] * 19
    print(
        f"\ncorrect {n_correct}/{n_candidates}; speedup p5 {q[0]:.3f} p50 {statistics.median(all_speedups):.3f} p95 {q[-1]:.3f}; "
        f"{n_candidates / minutes:.1f} candidates/min ({minutes:.1f} min, reference setup included)"
    )
    print(
        f"CI coverage of 1.0 (identical code), the recorded interval: {covered}/{n_correct} = {covered / max(1, n_correct):.3f} "
        f"(nominal {settings.ci_level}); CI entirely above 1 (fast_1_sig for identical code): {above}"
    )
    print(
        f"CI coverage of 1.0, order-statistic interval of the same pairs: {covered_order}/{n_correct} = "
        f"{covered_order / max(1, n_correct):.3f}"
    )
    # the same pairs' bootstrap CI widened by other spreads (engine.widened_ci): what ci_spread needs to be
    spreads = [0.0, 0.05, 0.1, 0.155, 0.2, 0.25, 0.3] if args.device == "cpu" else [0.0, 0.002, 0.004, 0.006, 0.008, 0.0115, 0.02]
    coverage = [
        sum(lo <= 1.0 <= hi for lo, hi in (widened_ci(m, a, b, sd, settings.ci_level) for m, a, b in pairs_ci)) for sd in spreads
    ]
    print("coverage by ci_spread: " + ", ".join(f"{sd}: {c}/{n_correct}" for sd, c in zip(spreads, coverage)))


if __name__ == "__main__":
    main()
