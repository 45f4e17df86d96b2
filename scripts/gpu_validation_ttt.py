"""TTT and NLL-probe checks on CUDA; the output goes into docs/gpu-validation.md.

Usage (repository root, no network needed):

    PYTHONPATH=. python scripts/gpu_validation_ttt.py --model-dir results/models/smollm2-135m

``--model-dir`` is the materialised SmolLM2-135M-Instruct safetensors directory (what
``snakemake results/models/smollm2-135m`` or the tests' cache .pytest_cache/testtime/smollm2-135m
hold, 517 MiB). With ``--random-model`` only its tokenizer files are read and a small random
Llama stands in (checks code paths and numerics, not behaviour). Needs torch with CUDA, transformers, peft, pandas, pyarrow, scipy. Exits 0 with a message
when CUDA is absent.

What it does, for one TTT run on the bundled Subset 1 (4 tasks, K rollouts each):
1. step 0 and step 1 of ``testtime.ttt_step.run_step`` on CUDA (fp32): sampling, the evaluator in its
   own process (device cuda), rewards, one LoRA update, adapter save; times and metrics;
2. the same update on CPU from the same step-0 files: loss, gradient norm and LoRA weights after
   the step compared with CUDA (and with bf16 autocast);
3. the NLL probe (``testtime.probes.rescore``) of step 0's rollouts under the step-0 and step-1
   adapters on CUDA and on CPU: time per step, mean NLL, max |Δ lp_sum| CUDA vs CPU, and the
   step-0 scores against the sampler's own recorded log-probs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

# Evaluation forks workers from a child process that must not see an initialised CUDA context;
# this process initialises CUDA, so evaluation runs in testtime.testtime.evaluation.isolated's fresh process.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
import torch  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from testtime.config import validate  # noqa: E402


def settings(k: int, device: str) -> tuple[dict, dict, dict]:
    """The embedded default's sections with the run on ``device`` (defaults filled by the schema)."""
    config = validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))
    config["evaluation"].update(device=device, timing_pairs=5, warmup=3)
    from testtime.runs import resolve_run

    config["ttt"].update(device=device, k=k)
    run = resolve_run(config, "main-s42")
    sampling = {key: config["sampling"][key] for key in ("max_new_tokens", "prompt_variant", "temperature")}
    return run, sampling, config["evaluation"]


def backend_on(model_dir: str, device: str):
    from testtime.sampling.hf import TransformersBackend

    return TransformersBackend(model_dir, device=device)


def random_model(tokenizer_dir: str) -> str:
    """A 4-layer Llama with random weights and the given tokenizer, saved to a temporary dir:
    checks the code paths and CUDA-vs-CPU numerics when the 517 MiB model cannot be brought."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    out = tempfile.mkdtemp(prefix="ttt-random-model-")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    print(f"random 4-layer Llama with the tokenizer of {tokenizer_dir} in {out}")
    return out


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def lora_weights(policy) -> dict:
    return {n: p.detach().float().cpu() for n, p in policy.peft.named_parameters() if p.requires_grad}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument(
        "--random-model",
        action="store_true",
        help="use a small randomly initialised Llama with the tokenizer found in --model-dir (only the tokenizer files need to be there)",
    )
    ap.add_argument(
        "--cpu-smoke", action="store_true", help="run every check with 'cpu' in place of 'cuda' (checks the script itself)"
    )
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.cpu_smoke:
        print("CUDA not available: nothing to validate (TTT/probe GPU checks skipped)")
        return 0
    dev = "cpu" if args.cpu_smoke else "cuda"
    if args.random_model:
        args.model_dir = random_model(args.model_dir)

    from testtime.pg import policy as ttt_policy
    from testtime.probes import probe_statistics, rescore
    from testtime.prompting import task_prompts
    from testtime.tasks.prepare import prepare_tasks
    from testtime.ttt import step as ttt_step

    print(
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0) if dev == 'cuda' else 'cpu smoke run'}"
    )
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tasks, _ = prepare_tasks(
        {
            "source": "bundled",
            "level": 1,
            "split_seed": 42,
            "train_fraction": 0.8,
            "subset_offset": 0,
            "subset_size": None,
            "sizes": "full",
        }
    )
    run, sampling, evaluation = settings(args.k, dev)
    out = Path(tempfile.mkdtemp(prefix="ttt-gpu-"))

    print(f"\n== TTT run_step on CUDA (fp32), tasks {tasks.loc[tasks['selected'], 'problem_id'].tolist()}, K={args.k}")
    started = time.monotonic()
    gpu = backend_on(args.model_dir, dev)
    print(f"  model load {time.monotonic() - started:.1f} s")
    steps = {}
    previous = None
    for step in (0, 1):
        started = time.monotonic()
        rollouts, evals, metrics = ttt_step.run_step(
            ttt_step.StepInputs(gpu, run, step, tasks, sampling, evaluation, previous, out / f"a{step}", out / f"o{step}.pt")
        )
        wall = time.monotonic() - started
        steps[step] = (rollouts, evals, metrics)
        t = {k: round(v, 2) for k, v in metrics["timings"].items()}
        print(
            f"  step {step}: {wall:.1f} s {t}; fast_1 {metrics['agg_fast_1']:.3f}, correct {metrics['correct_rate']:.3f}, "
            f"errors {evals['error_kind'].value_counts().to_dict()}"
        )
        if step == 1:
            u = metrics["update"]
            print(
                f"  update: loss {u['loss']:.4f}, grad_norm {u['grad_norm']:.4f}, tokens {u['n_tokens']}, max |log ratio| {u['max_abs_log_ratio']:.2e}"
            )
        if step == 0:
            previous = {
                "adapter": out / "a0",
                "optimizer": out / "o0.pt",
                "rollouts": rollouts,
                "evaluations": evals,
                "metrics": metrics,
            }
    del gpu
    if dev == "cuda":
        torch.cuda.empty_cache()

    print("\n== the step-1 update on CPU and CUDA from the same step-0 files")
    evals0 = previous["evaluations"]
    if not evals0["advantage"].abs().gt(0).any():
        # A random or weak model earns no reward, so every advantage is 0 and the update is a
        # no-op; compare devices on a real gradient with synthetic advantages instead.
        evals0 = evals0.assign(advantage=[(-1.0) ** i * (1 + i % 3) / 3 for i in range(len(evals0))])
        print("  (all step-0 advantages are 0: this comparison uses synthetic advantages ±1/3..±1)")
    results = {}
    for device, autocast in (("cpu", "none"), (dev, "none"), (dev, "bf16")):
        b = backend_on(args.model_dir, device)
        r = {**run, "device": device, "autocast": autocast}
        policy = ttt_policy.LoraPolicy(b, r, out / "a0", out / "o0.pt")
        batch = ttt_step.update_batch(
            b, task_prompts(b, ttt_step.run_tasks(tasks, r, "gpu"), sampling["prompt_variant"]), previous["rollouts"], evals0
        )
        sync(device)
        started = time.monotonic()
        stats = policy.update(batch)
        sync(device)
        results[(device, autocast, len(results))] = (stats, lora_weights(policy), time.monotonic() - started)
        del policy, b
    ref_stats, ref_w, ref_t = results[("cpu", "none", 0)]
    for key, (stats, w, t) in results.items():
        dw = max(float((w[n] - ref_w[n]).abs().max()) for n in ref_w)
        print(
            f"  {key[0]:4} autocast={key[1]:4}: {t:6.2f} s, loss {stats['loss']:.4f} (cpu {ref_stats['loss']:.4f}), "
            f"grad_norm {stats['grad_norm']:.4f} (cpu {ref_stats['grad_norm']:.4f}), max |ΔLoRA vs cpu| {dw:.2e}"
        )
    if evals0 is previous["evaluations"]:
        step1_w = lora_weights(ttt_policy.LoraPolicy(backend_on(args.model_dir, "cpu"), run, out / "a1", out / "o1.pt"))
        print(
            f"  run_step's CUDA step-1 adapter vs this CPU update: max |Δ| {max(float((step1_w[n] - ref_w[n]).abs().max()) for n in ref_w):.2e}"
        )

    print("\n== NLL probe: step-0 rollouts re-scored under the step-0 and step-1 adapters")
    rollouts0 = steps[0][0]
    scored = {}
    for device in (dev, "cpu"):
        b = backend_on(args.model_dir, device)
        prompts = task_prompts(b, ttt_step.run_tasks(tasks, run, "gpu"), sampling["prompt_variant"])
        sync(device)
        started = time.monotonic()
        scored[device] = rescore(b, rollouts0, prompts, {0: out / "a0", 1: out / "a1"}, chunk=64)
        wall = time.monotonic() - started
        stats = probe_statistics(scored[device], steps[0][1], "indicator")
        print(
            f"  {device}: {wall:.1f} s for {len(rollouts0)} samples x 2 adapters; mean NLL by step {stats['mean_nll'].round(4).tolist()}; rho {stats['rho'].round(3).tolist()}"
        )
        del b
    keys = ["step", "problem_id", "sample_index"]
    both = (
        scored[dev].merge(scored["cpu"], on=keys, suffixes=("_cuda", "_cpu"))
        if dev == "cuda"
        else scored["cpu"].assign(lp_sum_cuda=scored["cpu"]["lp_sum"], lp_sum_cpu=scored["cpu"]["lp_sum"])
    )
    print(
        f"  max |Δ lp_sum| CUDA vs CPU: {float((both['lp_sum_cuda'] - both['lp_sum_cpu']).abs().max()):.2e} over {len(both)} scores"
    )
    zero = scored[dev][scored[dev]["step"] == 0].merge(
        rollouts0[["problem_id", "sample_index", "lp_sum"]], on=["problem_id", "sample_index"], suffixes=("", "_sampler")
    )
    print(
        f"  step-0 probe vs the CUDA sampler's recorded lp_sum: max |Δ| {float((zero['lp_sum'] - zero['lp_sum_sampler']).abs().max()):.2e}"
    )
    print(f"\nfiles in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
