"""Every GPU check of the project in one run; its output goes into docs/gpu-validation.md.

Usage: python scripts/gpu_validation.py [--repeats 5]

Runs the hardened evaluator on CUDA over the bundled tasks (reference-equivalent candidates,
legitimate rewrites) and the GPU-only attacks: a TF32-enabling candidate and a side-stream
candidate, each with and without the static screen. Skips with exit code 0 when CUDA is absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# The parent must not initialise CUDA before forking workers; the NVML check does not.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
import torch  # noqa: E402

from testtime.evaluation import EvalSettings, Evaluator
from testtime.prompting import candidate_source, reference_forward_body
from testtime.tasks import load_bundled


def show(label: str, r) -> None:
    print(f"  {label:34} correct={r.correct!s:5} kind={r.error_kind!s:22} speedup={r.speedup:7.3f} "
          f"ci=[{r.speedup_ci_low or 0:.3f},{r.speedup_ci_high or 0:.3f}] method={r.timing_method} flags={r.flags} "
          f"{(r.error_message or '')[:90]!r}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("CUDA not available: nothing to validate")
        return 0
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    settings = EvalSettings(device="cuda", timing_pairs=10, warmup=3, candidate_budget_s=120)
    tasks = {t.name: t for t in load_bundled()}

    print("\n== reference-equivalent candidates (bundled suite, CUDA)")
    started, speedups, n, n_ok = time.monotonic(), [], 0, 0
    for task in tasks.values():
        body = reference_forward_body(task.code)
        with Evaluator(task.code, settings) as ev:
            rs = [ev.evaluate(candidate_source(body, task.code), body) for _ in range(args.repeats)]
        n += len(rs)
        n_ok += sum(r.correct for r in rs)
        speedups += [r.speedup for r in rs if r.correct]
        bad = [f"{r.error_kind}: {(r.error_message or '')[:80]}" for r in rs if not r.correct]
        good = [r.speedup for r in rs if r.correct]
        spread = f"{min(good):.3f}..{max(good):.3f}" if good else "-"
        print(f"  {task.problem_id:>2} {task.name:34} {sum(r.correct for r in rs)}/{len(rs)} speedup {spread} {bad[:1]}")
    minutes = (time.monotonic() - started) / 60
    q = statistics.quantiles(speedups, n=20) if len(speedups) > 1 else [float("nan")] * 19
    print(f"  correct {n_ok}/{n}; speedup p5 {q[0]:.3f} p50 {statistics.median(speedups):.3f} p95 {q[-1]:.3f}; {n / minutes:.1f} candidates/min")

    relu = tasks["ReLU"].code
    mm = tasks["Matmul_square"].code
    print("\n== GPU attacks")
    cases = [
        ("TF32 matmul (screened)", mm, "torch.backends.cuda.matmul.allow_tf32 = True\nreturn torch.matmul(A, B)", None),
        ("TF32 matmul (screen bypassed)", mm, "torch.backends.cuda.matmul.allow_tf32 = True\nreturn torch.matmul(A, B)", "return torch.matmul(A, B)"),
        ("side stream (screened)", relu, "s = torch.cuda.Stream()\nwith torch.cuda.stream(s):\n    y = torch.relu(x)\nreturn y", None),
        ("side stream (screen bypassed)", relu, "s = torch.cuda.Stream()\ns.wait_stream(torch.cuda.current_stream())\nwith torch.cuda.stream(s):\n    y = torch.relu(x)\n    for _ in range(50):\n        y = torch.relu(y)\nreturn y", "return torch.relu(x)"),
        ("legit: clamp", relu, "return x.clamp(min=0)", None),
        ("legit: diag broadcast", tasks["Matmul_with_diagonal_matrix"].code, "return A.unsqueeze(1) * B", None),
    ]
    for label, problem, body, screened in cases:
        with Evaluator(problem, settings) as ev:
            show(label, ev.evaluate(candidate_source(body, problem), body if screened is None else screened))
    print(f"\ndevice {torch.cuda.get_device_name(0)}")  # only now: CUDA in this process would break forking
    return 0


if __name__ == "__main__":
    sys.exit(main())
