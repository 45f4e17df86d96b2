"""Candidates per minute on one GPU: this evaluator (CLI and the ``evaluate`` rule's entry point)
against KernelBench's ``eval_kernel_against_ref``, on the same card in the same run.

Usage: python benchmarks/bench_gpu_throughput.py --data PARQUET [--kernelbench KB/src]
       [--candidates 2] [--ids 4 12 ...] [--modes cli,rule,kernelbench] [--kb-devices 1 2 3]

Tasks: the 20 KernelBench L1 eval tasks of the seed-42 split at full size (or ``--ids``). Every
candidate is the reference's own forward body (identical code), so every verdict must be correct
and the speedups show the evaluator's noise. Each mode is timed from outside, process starts and
imports included:

- ``cli``: one ``testtime evaluate --device cuda`` call per task, all of its candidates in it;
- ``rule``: ``python -m testtime.evaluation.isolated`` on a samples table of every task (the
  ``evaluate_samples`` call the ``evaluate`` rule's script makes, in a fresh interpreter);
- ``kernelbench``: one fresh interpreter per task that imports KernelBench from a checkout kept
  outside this repository (``--kernelbench``: the directory holding the ``kernelbench`` package)
  and calls ``eval_kernel_against_ref`` once per candidate with 5 correctness and 5 timing trials
  (the hardened evaluator runs 5 + 1 wide correctness trials and at least 5 timed calls per side).

Prints per mode the wall time, candidates per minute, correct counts and speedup percentiles
(p5/p50/p95 of identical code); with ``kernelbench``, the ratio of candidates per minute.

``--kb-devices``: KernelBench's tasks are shared out over these GPUs (one task at a time on
each) and run while ours run on the first visible GPU; its candidates per minute are then per
GPU: candidates over the sum of its per-task times, as if one GPU had run them in turn.
(KernelBench draws full-size inputs on the CPU: on an H200 host four tasks took over 100 s
each, more than one call on the device allows for all 20 in turn.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

from testtime.prompting import candidate_source, reference_forward_body
from testtime.tasks import load_suite, make_split

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kernelbench" / "level1-v01-2025-07.parquet"

# Run in a fresh interpreter per task: KernelBench's evaluator on each candidate file, in-process
# (as the paper's wrapper calls it), with the same correctness and timing trial counts as ours.
KB_DRIVER = """
import json, sys, time
t0 = time.monotonic()
import torch
from kernelbench.eval import eval_kernel_against_ref
imported = time.monotonic() - t0
problem = open(sys.argv[1]).read()
for path in sys.argv[2:]:
    t = time.monotonic()
    r = eval_kernel_against_ref(problem, open(path).read(), seed_num=42, num_correct_trials=5, num_perf_trials=5,
                                measure_performance=True, timing_method="cuda_event", device=0, backend="cuda",
                                precision=torch.float32)
    ok = r is not None and r.correctness
    speedup = r.ref_runtime / r.runtime if ok and r.runtime > 0 and r.ref_runtime > 0 else None
    print(json.dumps({"candidate": path, "correct": bool(ok), "speedup": speedup, "seconds": time.monotonic() - t,
                      "import_s": imported}), flush=True)
"""


def _percentiles(values: list[float]) -> str:
    if not values:
        return "-"
    q = statistics.quantiles(values, n=20, method="inclusive") if len(values) > 1 else [values[0]] * 19
    return f"p5 {q[0]:.3f} p50 {statistics.median(values):.3f} p95 {q[-1]:.3f}"


def _report(mode: str, wall: float, verdicts: list[dict]) -> float:
    n = len(verdicts)
    ok = [v for v in verdicts if v.get("correct")]
    per_minute = 60.0 * n / wall if wall > 0 else 0.0
    speedups = [float(v["speedup"]) for v in ok if v.get("speedup")]
    print(
        f"{mode:12} {n:3d} candidates in {wall:7.1f} s: {per_minute:6.2f} per minute, {wall / max(n, 1):6.2f} s each; "
        f"{len(ok)}/{n} correct; speedup {_percentiles(speedups)}",
        flush=True,
    )
    return per_minute


def _write_candidates(tasks: list, k: int, workdir: Path) -> dict[int, tuple[Path, list[Path]]]:
    files = {}
    for task in tasks:
        folder = workdir / str(task.problem_id)
        folder.mkdir()
        problem = folder / "problem.py"
        problem.write_text(task.code)
        body = reference_forward_body(task.code)
        paths = []
        for i in range(k):
            path = folder / f"candidate{i}.py"
            # a distinct comment per copy, so nothing can reuse a verdict (the rule dedupes sources)
            path.write_text(candidate_source(f"{body}\n# copy {i}", task.code))
            paths.append(path)
        files[task.problem_id] = (problem, paths)
    return files


def _per_task(
    mode: str, files: dict, command: list[str], timeout: float, env: dict | None = None, between: tuple[str, ...] = ()
) -> tuple[float, list[dict]]:
    """One subprocess per task (``command``, the problem, ``between``, its candidates), JSON lines out."""
    verdicts, started = [], time.monotonic()
    for problem, paths in files.values():
        t = time.monotonic()
        try:
            out = subprocess.run(
                [*command, str(problem), *between, *map(str, paths)],
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=ROOT,
                env=env,
            )
            lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            lines = lines or [{"correct": False, "error_kind": f"exit {out.returncode}: {out.stderr[-300:]}"}]
        except subprocess.TimeoutExpired:
            lines = [{"correct": False, "error_kind": f"timeout after {timeout:.0f} s"} for _ in paths]
        speedups = " ".join(f"{v['speedup']:.3f}" if v.get("speedup") else str(v.get("error_kind")) for v in lines)
        print(f"  {mode:11} task {problem.parent.name:>3}: {time.monotonic() - t:6.1f} s, {speedups}", flush=True)
        verdicts += lines
    return time.monotonic() - started, verdicts


def run_cli(files: dict, timeout: float) -> tuple[float, list[dict]]:
    command = [sys.executable, "-m", "testtime.cli", "evaluate", "--device", "cuda", "--json", "--problem"]
    return _per_task("cli", files, command, timeout, between=("--candidate",))


def run_rule(tasks: list, files: dict, timeout: float, workdir: Path) -> tuple[float, list[dict]]:
    samples = pd.DataFrame(
        [
            {"seed": 42, "problem_id": pid, "sample_index": i, "raw_action": path.read_text()}
            for pid, (_, paths) in files.items()
            for i, path in enumerate(paths)
        ]
    )
    table = pd.DataFrame([{"problem_id": t.problem_id, "name": t.name, "code": t.code} for t in tasks])
    paths = [workdir / n for n in ("samples.parquet", "tasks.parquet", "evaluation.json", "out.parquet")]
    samples.to_parquet(paths[0])
    table.to_parquet(paths[1])
    # the workflow's evaluation section as config/gpu.yaml resolves it (full modules: assembly auto)
    paths[2].write_text(json.dumps({"device": "cuda", "assembly": "auto", "dedupe": True, "timeout_s": 300}))
    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "testtime.evaluation.isolated", *map(str, paths)], timeout=timeout, cwd=ROOT, check=True
    )
    wall = time.monotonic() - started
    return wall, pd.read_parquet(paths[3]).to_dict("records")


def run_kernelbench(files: dict, kb_src: str, timeout: float, devices: list[str] | None = None) -> tuple[float, list[dict]]:
    """KernelBench on every task: in turn on the visible GPU, or shared out over ``devices``;
    returns the GPU time (the sum of the shards' walls: one GPU's time for all of it) and the verdicts."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [kb_src, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-c", KB_DRIVER]
    if not devices:
        return _per_task("kernelbench", files, command, timeout, env)
    items = list(files.items())
    results: list[tuple[float, list[dict]]] = []

    def shard(i: int) -> None:
        part = dict(items[i :: len(devices)])
        results.append(_per_task("kernelbench", part, command, timeout, {**env, "CUDA_VISIBLE_DEVICES": devices[i]}))

    threads = [threading.Thread(target=shard, args=(i,)) for i in range(len(devices))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(wall for wall, _ in results), [v for _, verdicts in results for v in verdicts]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("TESTTIME_L1_PARQUET", str(DEFAULT_DATA)))
    ap.add_argument("--kernelbench", help="directory holding KernelBench's `kernelbench` package (a checkout outside this repo)")
    ap.add_argument("--candidates", type=int, default=2, help="candidates per task")
    ap.add_argument("--ids", type=int, nargs="*")
    ap.add_argument("--modes", default="cli,rule,kernelbench")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    ap.add_argument(
        "--kb-devices", nargs="*", help="GPUs to share KernelBench's tasks over, beside ours (CUDA_VISIBLE_DEVICES values)"
    )
    args = ap.parse_args()
    suite = load_suite({"source": args.data, "level": 1, "sizes": "full"})
    ids = args.ids or make_split([t.problem_id for t in suite], seed=42)["eval"]
    tasks = [t for t in suite if t.problem_id in ids]
    modes = args.modes.split(",")
    print(f"{len(tasks)} tasks x {args.candidates} candidates (identical code), modes {modes}", flush=True)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        files = _write_candidates(tasks, args.candidates, Path(tmp))
        kb: list[tuple[float, list[dict]]] = []
        kb_thread = None
        if "kernelbench" in modes:
            if not args.kernelbench:
                sys.exit("--kernelbench: the directory holding KernelBench's kernelbench package is needed")
            kb_thread = threading.Thread(
                target=lambda: kb.append(run_kernelbench(files, args.kernelbench, args.timeout, args.kb_devices))
            )
            kb_thread.start()
            if not args.kb_devices:  # one GPU: KernelBench alone first, as before
                kb_thread.join()
        if "cli" in modes:
            rates["cli"] = _report("cli", *run_cli(files, args.timeout))
        if "rule" in modes:
            rates["rule"] = _report("rule", *run_rule(tasks, files, args.timeout, Path(tmp)))
        if kb_thread is not None:
            kb_thread.join()
            wall, verdicts = kb[0]
            rates["kernelbench"] = _report("kernelbench", wall, verdicts)
            inside = [v["seconds"] for v in verdicts if "seconds" in v]
            if inside:
                print(f"kernelbench  in-process eval_kernel_against_ref: {statistics.mean(inside):.2f} s per candidate (mean)")
    for mode in ("cli", "rule"):
        if mode in rates and rates.get("kernelbench"):
            print(f"{mode}: {rates[mode] / rates['kernelbench']:.1f}x KernelBench's candidates per minute")


if __name__ == "__main__":
    main()
