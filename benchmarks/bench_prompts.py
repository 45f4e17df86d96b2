"""Correctness of the embedded model's samples under each prompt variant.

Usage: python benchmarks/bench_prompts.py MODEL_DIR [--k 16] [--temperature 0.25] [--variants paper compact]
Samples K completions per bundled eval task (split seed 42) and evaluates them with the
project's evaluator; prints the correct rate, fast_1 rate and distinct answers per variant.
"""

from __future__ import annotations

import argparse
import time

import torch

from testtime.evaluation.batch import evaluate_samples
from testtime.sampling import make_backend
from testtime.sampling.loop import sample_tasks
from testtime.tasks.prepare import prepare_tasks

EVAL = {
    "device": "cpu",
    "correctness_trials": 2,
    "timing_pairs": 3,
    "warmup": 1,
    "atol": 1e-4,
    "rtol": 1e-4,
    "timeout_s": 20,
    "candidate_budget_s": 60,
    "memory_mb": 4096,
    "threads": 1,
    "assembly": "paper",
    "dedupe": True,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--temperature", type=float, default=0.25)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--variants", nargs="+", default=["paper", "compact"])
    args = ap.parse_args()
    torch.set_num_threads(2)
    tasks, info = prepare_tasks(
        {"source": "bundled", "split_seed": 42, "train_fraction": 0.8, "subset_offset": 0, "subset_size": None}
    )
    backend = make_backend("transformers", args.model_dir)
    print(f"eval tasks {info['subset']}, K={args.k}, T={args.temperature}, max_new_tokens={args.max_new_tokens}")
    for variant in args.variants:
        started = time.monotonic()
        sampling = {
            "k": args.k,
            "temperature": args.temperature,
            "max_new_tokens": args.max_new_tokens,
            "prompt_variant": variant,
        }
        samples = sample_tasks(backend, tasks, sampling, seed=42, suite="bundled")
        records = evaluate_samples(samples, tasks, EVAL).merge(samples[["problem_id", "sample_index", "raw_action"]])
        print(
            f"\n== {variant}: correct {records['correct'].mean():.1%}, fast_1 {records['fast_1'].mean():.1%}, "
            f"{time.monotonic() - started:.0f} s"
        )
        for pid, g in records.groupby("problem_id"):
            print(
                f"  task {pid}: correct {g['correct'].mean():.0%}, distinct answers {g['raw_action'].nunique()}, "
                f"errors {g['error_kind'].value_counts().to_dict()}"
            )


if __name__ == "__main__":
    main()
