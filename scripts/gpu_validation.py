"""Every GPU check of the evaluator in one run; its output goes into docs/gpu-validation.md.

Usage:
    python scripts/gpu_validation.py [--l1 PARQUET] [--repeats 10] [--sections landlock,l1,attacks,inline,throughput]

Sections:
- landlock:   which Landlock rule sets let a worker initialise CUDA (sandbox development).
- l1:         the 20 KernelBench level-1 eval tasks (split seed 42) at full size, the reference's
              own forward as the candidate, ``--repeats`` times each: verdicts, speedup p5/p50/p95
              and candidates per minute.
- attacks:    GPU-only hacks at full size: TF32, a side stream that escapes the timed interval
              (both with the static screen bypassed, so the runtime defences are what is tested).
- inline:     a ``load_inline`` CUDA kernel compiled in the candidate worker and judged, and one
              that does not compile.
- throughput: seconds per candidate at KernelBench's fast trial counts (1 correctness, 5 timing
              trials) on the tasks whose KernelBench times the evaluator spec measured (§2.8).
- bundled:    the bundled CPU-sized suite on CUDA.
- sharded:    the training side split over two GPUs (testtime.pg.placement) against one GPU:
              two RLVR-style LoRA updates, one TTT-style update and the NLL probe's re-scoring,
              on random Llama and gpt-oss models (LoRA on the experts), fp32 and bf16; max
              differences of losses, gradient norms, adapter weights and log-probs
              (testtime.pg.shardcheck). Needs 2 visible GPUs; ``--tokenizer`` is the vocabulary
              (default results/gpu/tiny-smollm2, else a character-level one).

Skips with exit code 0 when CUDA is absent. The level-1 data is read from ``--l1`` (the
published parquet layout; default ``../shared/data/kernelbench/level1-v01-2025-07.parquet``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# The parent must not initialise CUDA before forking workers; the NVML check does not.
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
import torch  # noqa: E402

from testtime.evaluation import EvalSettings, Evaluator  # noqa: E402
from testtime.prompting import candidate_source, reference_forward_body  # noqa: E402
from testtime.tasks import load_bundled, load_suite, make_split  # noqa: E402

DEFAULT_L1 = Path(__file__).resolve().parents[2] / "shared" / "data" / "kernelbench" / "level1-v01-2025-07.parquet"
# KernelBench b6c5259 on an H100, fast mode, seconds per candidate (evaluator spec §2.8),
# plus about 5 s of process start that every KernelBench eval pays.
KB_SECONDS = {4: 59.0, 14: 1.6, 28: 43.0, 32: 36.0, 87: 25.0}
KB_PROCESS_START_S = 5.0

INLINE_HARDTANH = r'''
import torch
import torch.nn as nn
from torch.utils.cpp_extension import load_inline

CUDA_SRC = """
#include <torch/extension.h>
__global__ void hardtanh_kernel(const float* __restrict__ x, float* __restrict__ y, long n) {
    long stride = (long)gridDim.x * blockDim.x;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += stride) {
        y[i] = fminf(fmaxf(x[i], -1.0f), 1.0f);
    }
}
torch::Tensor hardtanh_cuda(torch::Tensor x) {
    auto y = torch::empty_like(x);
    long n = x.numel();
    int threads = 256;
    long blocks = (n + threads - 1) / threads;
    if (blocks > 132 * 64) blocks = 132 * 64;
    hardtanh_kernel<<<(int)blocks, threads>>>(x.data_ptr<float>(), y.data_ptr<float>(), n);
    return y;
}
"""
CPP_SRC = "torch::Tensor hardtanh_cuda(torch::Tensor x);"
ext = load_inline(name="hardtanh_ext", cpp_sources=CPP_SRC, cuda_sources=CUDA_SRC,
                  functions=["hardtanh_cuda"], extra_cuda_cflags=["-O3"], verbose=False)


class ModelNew(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return ext.hardtanh_cuda(x.contiguous())
'''


def show(label: str, r) -> None:
    print(
        f"  {label:38} correct={r.correct!s:5} kind={r.error_kind!s:22} speedup={r.speedup:7.3f} "
        f"ci=[{r.speedup_ci_low or 0:.3f},{r.speedup_ci_high or 0:.3f}] method={r.timing_method or '-'} "
        f"wall={r.wall_s:.1f}s {(r.error_message or '')[:160]!r}",
        flush=True,
    )


def quantiles(values: list[float]) -> str:
    if len(values) < 2:
        return "n/a"
    q = statistics.quantiles(values, n=20, method="inclusive")
    return f"p5 {q[0]:.3f} p50 {statistics.median(values):.3f} p95 {q[-1]:.3f} (min {min(values):.3f} max {max(values):.3f})"


def section_landlock() -> None:
    """Fork one child per rule set; each confines itself, then initialises CUDA."""
    from testtime.evaluation.sandbox import landlock

    variants = {
        "default (dev rw+ioctl)": {},
        "+ /dev writable": {"writable": ("/dev",)},
        "+ /proc writable": {"writable": ("/proc",)},
        "+ /proc/<pid> writable": {"writable": ("<own /proc>",)},
        "confine() as the workers do": {"confine": True},
        "+ /sys writable": {"writable": ("/sys",)},
        "+ /run, /var writable": {"writable": ("/run", "/var")},
        "+ /dev, /proc, /sys writable": {"writable": ("/dev", "/proc", "/sys")},
        "+ home writable": {"writable": (os.path.expanduser("~"),)},
        "+ /tmp writable": {"writable": ("/tmp",)},
        "everything writable": {"writable": ("/",)},
    }
    print("\n== Landlock rule sets vs CUDA initialisation (one forked child each)", flush=True)
    for label, kwargs in variants.items():
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                scratch = f"/tmp/ll-probe-{os.getpid()}"
                os.makedirs(scratch, exist_ok=True)
                os.environ.update(TMPDIR=scratch, CUDA_CACHE_PATH=f"{scratch}/cuda_cache")
                if kwargs.get("confine"):
                    from testtime.evaluation.sandbox import confine

                    applied = confine(scratch, 0, "cuda")
                else:
                    kwargs = {
                        **kwargs,
                        "writable": tuple(
                            f"/proc/{os.getpid()}" if w == "<own /proc>" else w for w in kwargs.get("writable", ())
                        ),
                    }
                    applied = landlock(scratch, "cuda", **kwargs)
                with open("/etc/hostname") as f:  # readable
                    f.read()
                try:
                    open("/tmp/ll-escape", "w").close()
                    applied = f"{applied}, /tmp WRITABLE"
                except OSError:
                    applied = f"{applied}, /tmp denied"
                value = (torch.ones(4, device="cuda") * 2).sum().item()
                msg = f"applied={applied} cuda ok ({value})"
            except BaseException as exc:  # noqa: BLE001
                msg = f"FAILED: {type(exc).__name__}: {str(exc)[:160]}"
            os.write(write, msg.encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        print(f"  {label:32} {os.read(read, 4096).decode()}", flush=True)
        os.close(read)


def l1_tasks(path: str):
    tasks = load_suite({"source": path, "level": 1, "sizes": "full"})
    eval_ids = make_split([t.problem_id for t in tasks], seed=42)["eval"]
    return {t.problem_id: t for t in tasks if t.problem_id in eval_ids}


def section_l1(tasks, repeats: int) -> None:
    settings = EvalSettings(device="cuda", candidate_budget_s=300)
    print(
        f"\n== KernelBench L1 eval tasks at full size: reference's forward as candidate, {repeats} repeats "
        f"({settings.correctness_trials}+{settings.wide_trials} correctness trials, {settings.warmup} warm-up and "
        f"{settings.timing_pairs} timing pairs, fresh inputs per pair)",
        flush=True,
    )
    print(f"  {'id':>3} {'task':40} correct {'min':>6} {'median':>6} {'max':>6}  s/cand  ref-start-s", flush=True)
    started, all_speedups, n, n_ok = time.monotonic(), [], 0, 0
    for pid, task in sorted(tasks.items()):
        body = reference_forward_body(task.code)
        source = candidate_source(body, task.code)
        t0 = time.monotonic()
        with Evaluator(task.code, settings) as ev:
            t_ref = time.monotonic() - t0
            rs = [ev.evaluate(source, body) for _ in range(repeats)]
        ok = [r.speedup for r in rs if r.correct]
        n += len(rs)
        n_ok += len(ok)
        all_speedups += ok
        bad = sorted({f"{r.error_kind}: {(r.error_message or '')[:100]}" for r in rs if not r.correct})
        spread = f"{min(ok):6.3f} {statistics.median(ok):6.3f} {max(ok):6.3f}" if ok else f"{'-':>6} {'-':>6} {'-':>6}"
        print(
            f"  {pid:>3} {task.name[:40]:40} {len(ok):>2}/{len(rs):<2}  {spread}  {statistics.mean(r.wall_s for r in rs):5.2f}  {t_ref:5.1f} {bad[:1]}",
            flush=True,
        )
    minutes = (time.monotonic() - started) / 60
    print(
        f"  correct {n_ok}/{n}; speedup {quantiles(all_speedups)}; {n / minutes:.1f} candidates/min (reference start-up included)",
        flush=True,
    )


def section_attacks(tasks) -> None:
    settings = EvalSettings(device="cuda", timing_pairs=5, candidate_budget_s=300)
    gemm = tasks[18].code  # A.T @ B.T, 2048x8192x4096
    cases = [
        ("TF32 matmul (screened)", gemm, "torch.backends.cuda.matmul.allow_tf32 = True\nreturn torch.matmul(A.T, B.T)", None),
        (
            "TF32 matmul (screen bypassed)",
            gemm,
            "torch.backends.cuda.matmul.allow_tf32 = True\nreturn torch.matmul(A.T, B.T)",
            "return torch.matmul(A.T, B.T)",
        ),
        (
            "escaping side stream (screened)",
            gemm,
            "s = torch.cuda.Stream()\nwith torch.cuda.stream(s):\n    y = torch.matmul(A.T, B.T)\nreturn y",
            None,
        ),
        (
            "escaping side stream (screen bypassed)",
            gemm,
            "s = torch.cuda.Stream()\nwith torch.cuda.stream(s):\n    y = torch.matmul(A.T, B.T)\nreturn y",
            "return torch.matmul(A.T, B.T)",
        ),
        (
            "waited side stream (screen bypassed)",
            gemm,
            "s = torch.cuda.Stream()\ns.wait_stream(torch.cuda.current_stream())\nwith torch.cuda.stream(s):\n    y = torch.matmul(A.T, B.T)\ntorch.cuda.current_stream().wait_stream(s)\nreturn y",
            "return torch.matmul(A.T, B.T)",
        ),
        ("identity on HardTanh (32)", tasks[32].code, "return x", None),
        ("in-place HardTanh (32)", tasks[32].code, "return x.clamp_(-1, 1)", None),
        ("fp16 GEMM (18)", gemm, "return torch.matmul(A.T.half(), B.T.half()).float()", None),
        ("legit: clamp on HardTanh (32)", tasks[32].code, "return x.clamp(-1.0, 1.0)", None),
        ("legit: diag broadcast (12-v01)", tasks[12].code, "return A.unsqueeze(1) * B", None),
        # wide sets keep get_inputs()' structure: the triangular product needs no triu/tril
        ("legit: triangular product (14)", tasks[14].code, "return torch.matmul(A, B)", None),
        ("legit: triangular product (15)", tasks[15].code, "return torch.matmul(A, B)", None),
        ("sign exploit |A @ B| (14)", tasks[14].code, "return torch.matmul(A, B).abs()", None),
    ]
    print("\n== GPU attacks and legitimate rewrites at full size", flush=True)
    for label, problem, body, screened in cases:
        with Evaluator(problem, settings) as ev:
            show(label, ev.evaluate(candidate_source(body, problem), body if screened is None else screened))


def section_inline(tasks) -> None:
    settings = EvalSettings(device="cuda", timing_pairs=10, load_timeout_s=400, candidate_budget_s=600)
    problem = tasks[32].code
    broken = INLINE_HARDTANH.replace("fminf(fmaxf(x[i], -1.0f), 1.0f);", "fminf(fmaxf(x[i], -1.0f), 1.0f)  /* missing ; */")
    print("\n== inline CUDA candidates (load_inline in the candidate worker) on HardTanh (32), full size", flush=True)
    with Evaluator(problem, settings) as ev:
        show("inline CUDA HardTanh", ev.evaluate(INLINE_HARDTANH))
        show("inline CUDA, compile error", ev.evaluate(broken))


def section_throughput(tasks) -> None:
    settings = EvalSettings(device="cuda", correctness_trials=1, wide_trials=0, timing_pairs=5, warmup=3)
    print("\n== Throughput at KernelBench's fast trial counts (1 correctness trial, 5 timing trials, 3 warm-ups)", flush=True)
    print(f"  {'id':>3} {'task':40} ours s/cand (3 cand)  ours incl. ref start  KernelBench s/cand  ratio", flush=True)
    for pid, kb in KB_SECONDS.items():
        task = tasks[pid]
        body = reference_forward_body(task.code)
        t0 = time.monotonic()
        with Evaluator(task.code, settings) as ev:
            rs = [ev.evaluate(candidate_source(body, task.code), body) for _ in range(3)]
        total = (time.monotonic() - t0) / len(rs)
        per = statistics.mean(r.wall_s for r in rs)
        kb_total = kb + KB_PROCESS_START_S
        print(
            f"  {pid:>3} {task.name[:40]:40} {per:8.2f}             {total:8.2f}            {kb_total:8.1f}          {kb_total / total:5.1f}x "
            f"{'' if all(r.correct for r in rs) else 'NOT ALL CORRECT'}",
            flush=True,
        )


def section_bundled(repeats: int) -> None:
    settings = EvalSettings(device="cuda", timing_pairs=10, warmup=3)
    print("\n== bundled suite on CUDA, reference-equivalent candidates", flush=True)
    speedups, n, n_ok = [], 0, 0
    for task in load_bundled():
        body = reference_forward_body(task.code)
        with Evaluator(task.code, settings) as ev:
            rs = [ev.evaluate(candidate_source(body, task.code), body) for _ in range(repeats)]
        n += len(rs)
        n_ok += sum(r.correct for r in rs)
        speedups += [r.speedup for r in rs if r.correct]
    print(f"  correct {n_ok}/{n}; speedup {quantiles(speedups)}", flush=True)


SHARDED_MODELS = {
    # larger than the CPU tests' (a few layers per GPU, a vocabulary-wide logits tensor), still random
    "llama": {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 8},
    "gpt_oss": {
        "hidden_size": 256,
        "intermediate_size": 256,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
    },
}
SHARDED_TOLERANCE = 1e-4


def section_sharded(tokenizer: str | None) -> None:
    import tempfile

    from testtime.models import random_model
    from testtime.pg.shardcheck import compare

    n = torch.cuda.device_count()
    print(f"\n== training side split over GPUs vs one GPU ({n} visible)", flush=True)
    if n < 2:
        print("  needs 2 GPUs: skipped", flush=True)
        return
    cases = [
        ("llama", {}),
        ("gpt_oss", {}),
        ("gpt_oss", {"checkpointing": True}),  # both runs with gradient checkpointing
        ("gpt_oss", {"dtype": "bfloat16", "autocast": "bf16"}),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for arch, kwargs in cases:
            model_dir = Path(tmp) / arch
            if not model_dir.exists():
                manifest = random_model(arch, tokenizer, model_dir, seed=0, **SHARDED_MODELS[arch])
                print(f"  {arch}: random, seed 0, {manifest['n_parameters'] / 1e6:.1f}M parameters", flush=True)
            result = compare(model_dir, k=4, max_new_tokens=32, **kwargs)
            split, single = result["split"], result["single"]
            label = f"{arch} {kwargs.get('dtype', 'float32')}" + (" +checkpointing" if kwargs.get("checkpointing") else "")
            print(
                f"  {label}: split {split['placement']['parameters_per_device']} in {split['seconds']:.1f} s, "
                f"single in {single['seconds']:.1f} s; LoRA {split['targets']['target_modules']} + "
                f"{split['targets']['target_parameters']} ({split['targets']['expert_tensors']} expert tensors)",
                flush=True,
            )
            first = single["rlvr"][0]
            print(f"    single-GPU RLVR step 1: loss {first['loss']:.4f}, grad_norm {first['grad_norm']:.4f}", flush=True)
            diffs = result["max_diff"]
            verdict = "within" if max(diffs.values()) <= SHARDED_TOLERANCE else "OVER"
            if not split["placement"]["sharded"]:
                verdict = "NOT SPLIT, " + verdict
            print(
                "    max |split - single|: "
                + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items())
                + f" ({verdict} {SHARDED_TOLERANCE:g})",
                flush=True,
            )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--l1", default=os.environ.get("TESTTIME_L1_PARQUET", str(DEFAULT_L1)))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--sections", default="landlock,l1,attacks,inline,throughput")
    ap.add_argument("--ids", type=int, nargs="*", help="restrict the l1 section to these problem ids")
    default_tokenizer = Path(__file__).resolve().parents[1] / "results" / "gpu" / "tiny-smollm2"
    ap.add_argument("--tokenizer", default=str(default_tokenizer) if default_tokenizer.is_dir() else None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("CUDA not available: nothing to validate")
        return 0
    sections = args.sections.split(",")
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    started = time.monotonic()
    if "landlock" in sections:
        section_landlock()
    tasks = l1_tasks(args.l1) if {"l1", "attacks", "inline", "throughput"} & set(sections) else {}
    if "l1" in sections:
        section_l1({k: v for k, v in tasks.items() if not args.ids or k in args.ids}, args.repeats)
    if "attacks" in sections:
        section_attacks(tasks)
    if "inline" in sections:
        section_inline(tasks)
    if "throughput" in sections:
        section_throughput(tasks)
    if "bundled" in sections:
        section_bundled(args.repeats)
    if "sharded" in sections:  # last: it initialises CUDA in this process, which forking sections must not
        section_sharded(args.tokenizer)
    print(
        f"\ntotal {time.monotonic() - started:.0f} s; device {torch.cuda.get_device_name(0)}"
    )  # only now: CUDA here would break forking
    return 0


if __name__ == "__main__":
    sys.exit(main())
