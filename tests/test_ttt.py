"""TTT: rewards, advantages, the loss, the update on the real model, and run resolution."""

from __future__ import annotations

import copy
import statistics

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import PROMPT, ROOT, batch_of, lora_state
from testtime import runs
from testtime.config import validate
from testtime.pg import policy as ttt_policy
from testtime.pg import rewards as ttt_rewards
from testtime.ttt import step as ttt_step

# --------------------------------------------------------------------------------------
# Rewards (§4.3)
# --------------------------------------------------------------------------------------


def test_rewards_start_from_baseline_one_and_follow_the_running_median():
    pids = [1, 1, 1, 1]
    correct = [True, False, True, True]
    speedup = [2.0, 0.0, 4.0, 3.0]
    rewards, baselines, history = ttt_rewards.normalized_rewards(pids, correct, speedup)
    # b = 1 (empty) -> r = 2; incorrect -> 0; b = median([2]) = 2 -> r = 2; b = median([2, 4]) = 3 -> r = 1
    assert rewards.tolist() == [2.0, 0.0, 2.0, 1.0]
    assert baselines.tolist() == [1.0, 2.0, 2.0, 3.0]
    assert history == {"1": [2.0, 4.0, 3.0]}


def test_rewards_history_is_per_task_windowed_and_not_mutated():
    before = {"7": [1.0, 1.0, 9.0]}
    frozen = copy.deepcopy(before)
    rewards, baselines, history = ttt_rewards.normalized_rewards([7, 8, 7], [True, True, True], [2.0, 5.0, 2.0], before, window=3)
    assert before == frozen
    assert baselines.tolist() == [1.0, 1.0, statistics.median([1.0, 9.0, 2.0])]
    assert history == {"7": [9.0, 2.0, 2.0], "8": [5.0]}  # window 3 drops the oldest
    assert rewards[1] == 5.0  # task 8 has its own (empty) history


def test_rewards_correct_zero_speedup_and_bonus():
    rewards, _, history = ttt_rewards.normalized_rewards([1, 1], [True, True], [0.0, 2.0], bonus=0.5)
    assert rewards.tolist() == [0.5, 2.5]  # a correct sample with speedup 0 gets only the bonus
    assert history == {"1": [2.0]}  # and is not added to the history (TTT rule)
    with pytest.raises(ValueError, match="window"):
        ttt_rewards.normalized_rewards([1], [True], [1.0], window=0)


# --------------------------------------------------------------------------------------
# Advantages and loss
# --------------------------------------------------------------------------------------


def test_global_advantages_are_a_zscore_over_all_tasks():
    r = np.array([0.0, 1.0, 2.0, 5.0, 5.0, 5.0])
    a = ttt_rewards.advantages(r, [1, 1, 1, 2, 2, 2], "global")
    assert a == pytest.approx((r - r.mean()) / r.std(ddof=1))
    g = ttt_rewards.advantages(r, [1, 1, 1, 2, 2, 2], "group")
    assert g[:3] == pytest.approx([-1.0, 0.0, 1.0])
    assert g[3:] == pytest.approx([0.0, 0.0, 0.0])  # equal rewards in a group -> no signal
    assert ttt_rewards.advantages([3.0, 3.0], mode="global").tolist() == [0.0, 0.0]
    assert ttt_rewards.advantages([3.0], mode="global").tolist() == [0.0]
    with pytest.raises(ValueError, match="ttt.advantage"):
        ttt_rewards.advantages(r, mode="per-task")


def test_pg_loss_is_token_summed_and_its_gradient_is_minus_a_grad_logp():
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, 0.0]], requires_grad=True)
    q = lp.detach().clone()
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([2.0, -1.0])
    loss = ttt_policy.pg_loss(lp, q, adv, mask)
    assert float(loss.detach()) == pytest.approx(-(3 * 2.0) + 2 * 1.0)  # ratio 1: -(sum of A over tokens)
    loss.backward()
    assert lp.grad.tolist() == [[-2.0, -2.0, -2.0], [1.0, 1.0, 0.0]]


def test_step_metrics():
    records = pd.DataFrame(
        {
            "problem_id": [1, 1, 2, 2],
            "correct": [True, True, True, False],
            "speedup": [1.5, 0.9, 2.0, 0.0],
            "reward": [1.0, 0.5, 2.0, 0.0],
            "finish_reason": ["stop", "stop", "length", "stop"],
        }
    )
    m = ttt_rewards.step_metrics(records)
    assert m["agg_fast_1"] == 0.5 and m["correct_rate"] == 0.75 and m["truncation_rate"] == 0.25
    assert m["mean_speedup"] == pytest.approx((1.5 + 0.9 + 2.0) / 3)
    assert m["per_task"]["1"]["fast_1"] == 0.5 and m["per_task"]["2"]["correct_rate"] == 0.5


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def embedded_config() -> dict:
    return validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


def test_runs_inherit_defaults_and_override_them():
    config = embedded_config()
    main = runs.resolve_run(config, "main-s42")
    assert main["lr"] == config["ttt"]["lr"] and main["suite"] == "headroom" and main["model"] == "smollm2-135m"
    low = runs.resolve_run(config, "lr-1e-05")
    assert low["lr"] == 1e-5 and low["k"] == main["k"]
    assert runs.resolve_run(config, "subset2")["suite"] == "bundled-split43"  # a run's own suite
    assert "steps" not in runs.step_settings(main, 2)  # extending a run never reruns its finished steps
    assert "lr" in runs.step_settings(main, 1) and "lr" not in runs.step_settings(main, 0)  # step 0 never updates


def test_run_errors_name_the_key():
    config = embedded_config()
    with pytest.raises(ValueError, match="ttt.runs.nope"):
        runs.resolve_run(config, "nope")
    config["ttt"]["runs"]["bad"] = {"seed": 1, "suite": "missing"}
    with pytest.raises(ValueError, match="ttt.runs.bad.suite"):
        runs.resolve_run(config, "bad")
    tasks = pd.DataFrame({"problem_id": [1, 2], "selected": [True, False]})
    with pytest.raises(ValueError, match=r"ttt.runs.x.tasks.*\[9\]"):
        ttt_step.run_tasks(tasks, {"tasks": [9], "suite": "s"}, "ttt.runs.x")
    assert ttt_step.run_tasks(tasks, {"tasks": [2], "suite": "s"}, "w")["selected"].tolist() == [False, True]


def test_schema_rejects_unknown_run_keys_and_keeps_run_overrides_sparse():
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["ttt"]["runs"]["main-s42"]["learning_rate"] = 1.0
    with pytest.raises(ValueError, match="ttt.runs.main-s42.learning_rate"):
        validate(config)
    config = embedded_config()
    assert config["ttt"]["runs"]["main-s42"] == {"seed": 42}  # defaults are not copied into runs


# --------------------------------------------------------------------------------------
# The real model: scoring, the update, save/resume
# --------------------------------------------------------------------------------------


def test_cached_prompt_scoring_matches_sampling_records_and_full_rescoring(ttt_backend, drawn):
    from testtime.scoring import score_completions

    prompt_ids = ttt_backend.tokenizer(PROMPT, add_special_tokens=False).input_ids
    comps = [c.token_ids for c in drawn]
    cached = score_completions(ttt_backend.model, prompt_ids, comps, ttt_backend.stop_ids[0], chunk=3)
    full = ttt_backend.score(PROMPT, comps)
    for c, a, b in zip(drawn, cached, full):
        assert len(a) == len(c.token_logprobs)
        assert np.abs(np.array(a) - np.array(c.token_logprobs)).max() < 1e-4  # the sampler's own numbers
        assert np.abs(np.array(a) - np.array(b)).max() < 1e-4


def test_update_moves_logprobs_along_the_advantages_and_resumes_exactly(make_lora_policy, drawn, tmp_path):
    policy = make_lora_policy()
    adv = [1.5, -0.5, -0.5, -0.5]
    batch = batch_of(policy, drawn, adv)
    before = [sum(x) for x in batch[0]["sampler_logprobs"]]
    base = [sum(c.token_logprobs) for c in drawn]
    assert before == pytest.approx(base, abs=1e-3)  # fresh LoRA (B = 0) is the base model
    stats = policy.update(batch)
    assert stats["grad_norm"] > 0 and not stats["skipped"] and stats["max_abs_log_ratio"] < 1e-3
    after = [sum(x) for x in batch_of(policy, drawn, adv)[0]["sampler_logprobs"]]
    assert after[0] > before[0]  # the positive-advantage completion became more likely
    assert after[1] < before[1]

    # a second update in the same process, or after save + reload: identical adapters
    policy.save(tmp_path / "adapter", tmp_path / "optimizer.pt")
    batch2 = batch_of(policy, drawn, [-1.0, 1.0, 0.5, -0.5])
    policy.update(batch2)
    resumed = make_lora_policy(adapter_dir=tmp_path / "adapter", optimizer_path=tmp_path / "optimizer.pt")
    resumed.update(batch2)
    a, b = lora_state(policy), lora_state(resumed)
    assert a.keys() == b.keys()
    assert max(float((a[n] - b[n]).abs().max()) for n in a) < 1e-7


def test_all_zero_advantage_switch(make_lora_policy, drawn):
    for skip in (True, False):
        policy = make_lora_policy({"skip_zero_advantage": skip})
        policy.update(batch_of(policy, drawn, [1.0, -1.0, 0.0, 0.0]))  # builds Adam momentum
        start = lora_state(policy)
        stats = policy.update(batch_of(policy, drawn, [0.0, 0.0, 0.0, 0.0]))
        assert stats["all_zero_advantage"] and stats["skipped"] is skip
        moved = max(float((p - start[n]).abs().max()) for n, p in lora_state(policy).items())
        # without the switch, Adam's momentum moves the adapter even though the gradient is 0
        assert (moved == 0.0) is skip


def test_duplicate_completions_merge_into_one_row_with_summed_advantage(ttt_backend, make_lora_policy, drawn):
    from testtime.scoring import completion_logprobs, merge_duplicates, score_completions

    policy = make_lora_policy({"lora_targets": ["q_proj"]})
    with torch.no_grad():  # a non-zero B, so that every LoRA matrix gets a gradient
        for n, p in policy.peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    prompt_ids = ttt_backend.tokenizer(PROMPT, add_special_tokens=False).input_ids
    comps = [c.token_ids for c in drawn] + [drawn[0].token_ids, drawn[1].token_ids]
    q = score_completions(policy.model, prompt_ids, comps, policy.pad_id)
    adv = [1.0, -0.5, 0.3, -0.2, 0.7, 0.4]

    def grads(rows, qs, advs):
        policy.optimizer.zero_grad()
        lp, mask = completion_logprobs(policy.model, prompt_ids, rows, policy.pad_id)
        qt = torch.zeros_like(lp)
        for i, r in enumerate(qs):
            qt[i, : len(r)] = torch.tensor(r)
        ttt_policy.pg_loss(lp, qt, torch.tensor(advs), mask).backward()
        return {n: p.grad.clone() for n, p in policy.peft.named_parameters() if p.requires_grad}

    full = grads(comps, q, adv)
    rows, qs, advs, counts = merge_duplicates(comps, q, adv)
    assert len(rows) == len({tuple(c) for c in comps}) and sum(counts) == len(comps)
    merged = grads(rows, qs, advs)
    scale = max(float(g.abs().max()) for g in full.values())
    assert scale > 0
    assert max(float((full[n] - merged[n]).abs().max()) for n in full) < 1e-4 * scale


def test_merged_sampling_is_the_adapted_policy(ttt_backend, make_lora_policy, drawn):
    from testtime.scoring import score_completions

    policy = make_lora_policy()
    policy.update(batch_of(policy, drawn, [1.5, -0.5, -0.5, -0.5]))
    prompt_ids = ttt_backend.tokenizer(PROMPT, add_special_tokens=False).input_ids
    comps = [c.token_ids for c in drawn]
    unmerged = score_completions(policy.model, prompt_ids, comps, policy.pad_id)
    base = [sum(c.token_logprobs) for c in drawn]
    assert max(abs(sum(u) - b) for u, b in zip(unmerged, base)) > 1e-3  # the update did change the policy
    assert policy.merge_for_sampling()
    merged = score_completions(policy.model, prompt_ids, comps, policy.pad_id)
    assert max(abs(a - b) for u, m in zip(unmerged, merged) for a, b in zip(u, m)) < 1e-4
