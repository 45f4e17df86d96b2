"""The hardened evaluator on the 20 KernelBench L1 eval tasks (split seed 42) at CPU sizes.

Usage: python benchmarks/bench_kernelbench_eval.py [--data PARQUET] [--repeats 5] [--ids 4 5 ...]

The candidate of each task is the reference's own forward body (a reference-equivalent kernel):
every verdict must be correct, and its speedups show the evaluator's noise. Prints per task the
verdicts and speedup spread over the repeats, then candidates per minute.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

from testtime.evaluation import EvalSettings, Evaluator
from testtime.prompting import candidate_source, reference_forward_body
from testtime.tasks import load_suite, make_split

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "kernelbench" / "level1-v01-2025-07.parquet"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("TESTTIME_L1_PARQUET", str(DEFAULT_DATA)))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ids", type=int, nargs="*")
    args = ap.parse_args()
    tasks = load_suite({"source": args.data, "level": 1, "sizes": "cpu"})
    eval_ids = make_split([t.problem_id for t in tasks], seed=42)["eval"]
    chosen = [t for t in tasks if t.problem_id in (args.ids or eval_ids)]
    settings = EvalSettings(cpu_core=0)
    print(
        f"{len(chosen)} tasks x {args.repeats} repeats, protocol {settings.protocol}, "
        f"{settings.correctness_trials}+{settings.wide_trials} trials, {settings.timing_pairs} timing pairs"
    )
    print(f"{'id':>3}  {'task':36} correct  {'min':>6} {'median':>6} {'max':>6}  ci_low>1  sec/cand  flags")
    started, n_candidates, n_correct, all_speedups = time.monotonic(), 0, 0, []
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


if __name__ == "__main__":
    main()
