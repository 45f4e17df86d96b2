"""Our hand-written policy-gradient update (testtime.pg) against TRL's GRPOTrainer, on a case
where both definitions agree.

One task (so global and group-relative normalisation coincide), on-policy, one optimizer step,
no KL, temperature 1. TRL generates the completions and computes its advantages and its
``dr_grpo`` loss gradient (Σ over tokens / (B · max_completion_length)); ours must give the
same advantages and B · max_completion_length times its gradient. Two cases: TTT's z-scored
advantages (TRL ``scale_rewards="batch"``, up to its +1e-4 in the std) and RLVR's group
mean-centred ones with no std (``scale_rewards="none"``, reference-protocol §8), with each
loop's Adam eps.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from testtime.pg import policy as ttt_policy
from testtime.pg import rewards as ttt_rewards

pytestmark = pytest.mark.slow

REWARDS = [3.0, 0.0, 1.0, 0.5]
K, MAX_LEN = 4, 8


@pytest.mark.parametrize(
    "scale_rewards, mode, adam_eps",
    [("batch", "global", 1e-12), ("none", "group_mean", 1e-8)],
    ids=["ttt-zscore", "rlvr-group-mean"],
)
def test_update_matches_trl_grpo(make_lora_policy, tmp_path, scale_rewards, mode, adam_eps):
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    ours = make_lora_policy({"seed": 0, "lr": 1e-4, "adam_eps": adam_eps})
    trl_model = copy.deepcopy(ours.peft)  # the same LoRA init for both

    captured: dict = {}

    class GradTap(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kw):  # noqa: ANN001
            captured["grads"] = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def reward(completions, **kw):  # noqa: ANN001
        assert len(completions) == K
        return list(REWARDS)

    args = GRPOConfig(
        output_dir=str(tmp_path),
        num_generations=K,
        per_device_train_batch_size=K,
        gradient_accumulation_steps=1,
        max_completion_length=MAX_LEN,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.0,
        loss_type="dr_grpo",
        scale_rewards=scale_rewards,
        learning_rate=ours.run["lr"],
        lr_scheduler_type="constant",
        adam_beta2=0.95,
        adam_epsilon=adam_eps,
        weight_decay=0.0,
        max_grad_norm=0.0,
        max_steps=1,
        num_iterations=1,
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        shuffle_dataset=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    prompt = "<|im_start|>user\nWrite one line of Python that adds a and b.<|im_end|>\n<|im_start|>assistant\n"
    trainer = GRPOTrainer(
        model=trl_model,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": [prompt]}),
        processing_class=ours.backend.tokenizer,
        callbacks=[GradTap()],
    )
    generate = trainer._generate_and_score_completions

    def tap(*a, **kw):  # noqa: ANN002, ANN003
        out = generate(*a, **kw)
        captured["batch"] = {k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)}
        return out

    trainer._generate_and_score_completions = tap
    trainer.train()

    batch = captured["batch"]
    mask = batch["completion_mask"].bool()
    completions = [batch["completion_ids"][i][mask[i]].tolist() for i in range(K)]
    prompt_ids = batch["prompt_ids"][0][batch["prompt_mask"][0].bool()].tolist()

    r = np.array(REWARDS)
    adv = ttt_rewards.advantages(REWARDS, [0] * K, mode)
    if mode == "global":
        # ours (global z-score, std floored at 1e-6) vs TRL's (batch std + 1e-4)
        assert batch["advantages"].numpy() == pytest.approx((r - r.mean()) / (r.std(ddof=1) + 1e-4), rel=1e-5)
        assert adv == pytest.approx(batch["advantages"].numpy(), rel=1e-3)
        assert ttt_rewards.advantages(REWARDS, [0] * K, "group") == pytest.approx(adv)  # one task: both modes agree
    else:
        # §8: r - mean(group), no std; TRL's scale_rewards="none" is the same definition
        assert adv == pytest.approx(r - r.mean())
        assert batch["advantages"].numpy() == pytest.approx(adv, rel=1e-6)

    # gradient: feed TRL's completions and advantages through our loss (ratio 1, on-policy)
    from testtime.scoring import score_completions

    q = score_completions(ours.model, prompt_ids, completions, ours.pad_id)
    ours.optimizer.zero_grad()
    from testtime.scoring import completion_logprobs

    lp, m = completion_logprobs(ours.model, prompt_ids, completions, ours.pad_id)
    qt = torch.zeros_like(lp)
    for i, row in enumerate(q):
        qt[i, : len(row)] = torch.tensor(row)
    loss = ttt_policy.pg_loss(lp, qt, batch["advantages"].to(lp.dtype), m)
    loss.backward()
    scale = K * MAX_LEN  # dr_grpo divides the token sum by B * max_completion_length
    ours_grads = {n.replace(".default", ""): p.grad for n, p in ours.peft.named_parameters() if p.requires_grad}
    theirs = {n.replace(".default", ""): g for n, g in captured["grads"].items()}
    assert ours_grads.keys() == theirs.keys() and ours_grads
    num = sum(float((ours_grads[n] - scale * theirs[n]).pow(2).sum()) for n in theirs)
    den = sum(float(ours_grads[n].pow(2).sum()) for n in theirs)
    assert den > 0 and (num / den) ** 0.5 < 1e-3
