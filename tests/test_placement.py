"""Model placement and LoRA targets of the training side (testtime/pg/placement.py), on CPU: the
LoRA on gpt-oss's fused expert weights (a tiny random GptOss model with the embedded model's
tokenizer) trains, saves and loads; gradient checkpointing gives the same update. The
multi-GPU split itself is checked by tests/test_gpu.py and scripts/gpu_validation.py --sections sharded.
"""

from __future__ import annotations

import json

import pytest
import torch

from testtime.pg.placement import lora_targets, shard_plan

PROMPT = "def forward(x):"
RUN = {
    "seed": 42,
    "lr": 1e-2,
    "lora_rank": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.0,
    "lora_targets": "all-linear",
    "adam_beta1": 0.9,
    "adam_beta2": 0.95,
    "adam_eps": 1e-8,
    "skip_zero_advantage": False,
    "autocast": "none",
}


@pytest.fixture(scope="module")
def gpt_oss_dir(model_dir, tmp_path_factory):
    from testtime.models import random_model

    out = tmp_path_factory.mktemp("gpt-oss")
    random_model("gpt_oss", model_dir, out, seed=0, hidden_size=32, num_hidden_layers=2)
    return out


def backend_of(path):
    from testtime.sampling.hf import TransformersBackend

    return TransformersBackend(str(path))


def batch(backend, policy, k=4, seed=7):
    from testtime.sampling import SamplingParams

    drawn = backend.sample(PROMPT, k, seed, SamplingParams(temperature=1.0, max_new_tokens=12))
    return [
        {
            "prompt_ids": backend.tokenizer(PROMPT, add_special_tokens=False).input_ids,
            "completions": [c.token_ids for c in drawn],
            "sampler_logprobs": [c.token_logprobs for c in drawn],
            "advantages": [1.0, -0.5, 0.25, -0.75][:k],
        }
    ]


def lora_state(policy):
    return {n: p.detach().clone() for n, p in policy.peft.named_parameters() if p.requires_grad}


def test_shard_plan_on_cpu_and_one_gpu():
    assert shard_plan("cpu", "auto") == {"shard": "auto", "sharded": False, "n_gpus": 0}
    assert shard_plan("cuda", "auto", n_gpus=1)["sharded"] is False
    assert shard_plan("cuda", "auto", n_gpus=2)["sharded"] is True
    assert shard_plan("cuda", "single", n_gpus=8)["sharded"] is False
    with pytest.raises(ValueError, match="shard"):
        shard_plan("cuda", "fsdp")


def test_gpt_oss_targets_include_the_experts(gpt_oss_dir, ttt_backend):
    model = backend_of(gpt_oss_dir).model
    assert lora_targets(model, "all-linear") == {
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
        "target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
    }
    # a list: names of 3-D parameters go to target_parameters, the rest are modules
    assert lora_targets(model, ["q_proj", "mlp.experts.down_proj"]) == {
        "target_modules": ["q_proj"],
        "target_parameters": ["mlp.experts.down_proj"],
    }
    # other architectures keep PEFT's own all-linear
    assert lora_targets(ttt_backend.model, "all-linear") == {"target_modules": "all-linear", "target_parameters": []}


def test_gpt_oss_expert_lora_trains_saves_and_loads(gpt_oss_dir, tmp_path):
    from testtime.pg.policy import LoraPolicy
    from testtime.scoring import score_completions

    backend = backend_of(gpt_oss_dir)
    policy = LoraPolicy(backend, RUN)
    assert policy.targets["target_parameters"] == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]
    assert policy.targets["expert_tensors"] == 2 * 2 * 2  # 2 layers x 2 fused parameters x (A, B)
    experts = {n for n, p in policy.peft.named_parameters() if p.requires_grad and ".experts." in n}
    assert experts and all(p.requires_grad for n, p in policy.peft.named_parameters() if n in experts)
    data = batch(backend, policy)
    before = lora_state(policy)
    stats = policy.update(data)
    assert stats["grad_norm"] > 0
    first = lora_state(policy)
    # B = 0 at init, so the first step moves every B (and no A: its gradient goes through B)
    assert all(float(first[n].abs().max()) > 0 for n in experts if "lora_B" in n)
    policy.update(data)
    after = lora_state(policy)
    moved = {n: float((after[n] - before[n]).abs().max()) for n in experts}
    assert all(v > 0 for v in moved.values()), moved  # after the second, every expert tensor has moved

    policy.save(tmp_path / "adapter", tmp_path / "optimizer.pt")
    recorded = json.loads((tmp_path / "adapter" / "testtime_lora.json").read_text())
    assert recorded["target_parameters"] == ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"]
    assert recorded["expert_parameters"] > 0
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(saved["target_parameters"]) == recorded["target_parameters"]

    prompt_ids = data[0]["prompt_ids"]
    expected = score_completions(policy.model, prompt_ids, data[0]["completions"], policy.pad_id)
    fresh = backend_of(gpt_oss_dir)
    loaded = LoraPolicy(fresh, RUN, tmp_path / "adapter", tmp_path / "optimizer.pt")
    again = lora_state(loaded)
    assert again.keys() == after.keys()
    assert max(float((again[n] - after[n]).abs().max()) for n in after) == 0.0
    got = score_completions(loaded.model, prompt_ids, data[0]["completions"], loaded.pad_id)
    assert max(abs(a - b) for x, y in zip(expected, got) for a, b in zip(x, y)) < 1e-6
    base = score_completions(backend_of(gpt_oss_dir).model, prompt_ids, data[0]["completions"], policy.pad_id)
    assert max(abs(a - b) for x, y in zip(expected, base) for a, b in zip(x, y)) > 1e-4  # the adapter acts


@pytest.mark.parametrize("arch", ["gpt_oss", "llama"])
def test_gradient_checkpointing_gives_the_same_update(arch, gpt_oss_dir, model_dir, tmp_path):
    from testtime.models import random_model
    from testtime.pg.placement import is_checkpointing
    from testtime.pg.policy import LoraPolicy

    path = gpt_oss_dir
    if arch == "llama":
        path = tmp_path / "llama"
        random_model("llama", model_dir, path, seed=1, hidden_size=64, num_hidden_layers=2)
    results = {}
    for ckpt in (False, True):
        backend = backend_of(path)
        policy = LoraPolicy(backend, {**RUN, "gradient_checkpointing": ckpt})
        assert is_checkpointing(policy.model) is ckpt
        assert not any(m.training for m in policy.model.modules() if isinstance(m, torch.nn.Dropout))
        stats = policy.update(batch(backend, policy), kl_post=True)  # kl_post: cache path, no grad
        results[ckpt] = stats, lora_state(policy)
    (plain, w0), (ckpt, w1) = results[False], results[True]
    assert abs(plain["loss"] - ckpt["loss"]) < 1e-4 * max(1.0, abs(plain["loss"]))
    assert abs(plain["kl_post"] - ckpt["kl_post"]) < 1e-6
    assert max(float((w0[n] - w1[n]).abs().max()) for n in w0) < 1e-5


def test_sequence_logprobs_equal_the_shared_prompt_ones(ttt_backend):
    from testtime.sampling import SamplingParams
    from testtime.scoring import completion_logprobs, sequence_logprobs

    drawn = ttt_backend.sample(PROMPT, 3, 11, SamplingParams(temperature=1.0, max_new_tokens=10))
    prompt_ids = ttt_backend.tokenizer(PROMPT, add_special_tokens=False).input_ids
    rows = [c.token_ids[: 4 + i] for i, c in enumerate(drawn)]  # ragged, so padding is exercised
    with torch.no_grad():
        a, ma = completion_logprobs(ttt_backend.model, prompt_ids, rows, ttt_backend.stop_ids[0])
        b, mb = sequence_logprobs(ttt_backend.model, prompt_ids, rows, ttt_backend.stop_ids[0])
    assert torch.equal(ma, mb)
    assert float((a - b).abs().max()) < 1e-4
