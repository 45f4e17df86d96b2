"""The policy of the training loops (RLVR §8, TTT §9): the sampling backend's model with a
trainable LoRA and its Adam state.

The update is the reference code's, written by hand because TRL cannot express TTT's global
advantages:

* loss: -Σ_rollouts Σ_tokens exp(log p_θ - log q_sampler) · A (token sum, no mean, no clipping,
  no KL), the Tinker ``importance_sampling`` loss; on-policy the ratio is 1 up to float noise;
* one Adam(β1, β2=0.95, eps: TTT 1e-12, RLVR 1e-8; no weight decay) step per sampled batch at a
  constant learning rate; the Adam state is carried across steps (fresh at step 0).

Two switches of the paper's open question 1 (§6.6, over-sharpening), both 0 by default (the
paper's loss, computed exactly as without them): ``entropy_bonus`` β_H subtracts
β_H · Σ_rollouts Σ_tokens H(p_θ(·|prefix)) (the full next-token distribution's entropy, token
summed like the loss), and ``kl_to_start`` β_KL adds β_KL · Σ_rollouts Σ_tokens k3(p_θ, p_0) to
the starting policy p_0, scored on the rollout tokens with the LoRA disabled (which is p_0
whenever the run's LoRA started fresh, B = 0; a run continuing a trained adapter is refused by
the workflow). Any loop's run may set them (TTT does, through ``ttt.entropy_bonus`` and
``ttt.kl_to_start``).

The update also reports the sampler-vs-trainer KL estimates (``kl_sample_train_v1/v2``, the
tinker-cookbook's) and, when asked, ``kl_post`` (old vs updated policy on the same tokens):
RLVR's guardrails (§8) read them.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def pg_loss(logprobs: Any, sampler_logprobs: Any, adv: Any, mask: Any) -> Any:
    """Tinker's ``importance_sampling`` loss: ``-Σ exp(logp - q) · A`` over completion tokens.

    ``logprobs``, ``sampler_logprobs`` and ``mask`` are ``(rows, tokens)``; ``adv`` is
    ``(rows,)`` (one advantage per rollout: TTT, RLVR) or ``(rows, tokens)`` (one per token:
    SDPO). Summed, not averaged: longer completions weigh more, as in the reference.
    """
    import torch

    ratio = torch.exp(logprobs - sampler_logprobs.detach())
    weight = adv if adv.dim() == 2 else adv[:, None]
    return -(ratio * weight * mask).sum()


def entropy_sum(entropy: Any, mask: Any, weights: Any) -> Any:
    """``Σ_rows w_r Σ_tokens H_t``: the token-summed entropy of the policy's next-token
    distributions along the rollouts (``weights``: copies of each merged completion), which the
    entropy bonus (``entropy_bonus`` x this) subtracts from the loss."""
    return (entropy * mask * weights[:, None]).sum()


def kl_to_start_sum(logprobs: Any, start_logprobs: Any, mask: Any, weights: Any) -> Any:
    """``Σ_rows w_r Σ_tokens k3_t`` with ``k3 = exp(log p_0 - log p_θ) - (log p_0 - log p_θ) - 1``
    (Schulman's estimator, GRPO's KL penalty): non-negative, 0 where θ agrees with the starting
    policy p_0 on a token, its gradient ``(1 - p_0/p_θ) ∇ log p_θ`` pulls log p_θ back toward
    log p_0. The ``kl_to_start`` penalty adds ``kl_to_start`` x this to the loss."""
    delta = start_logprobs.detach() - logprobs
    return ((delta.exp() - delta - 1.0) * mask * weights[:, None]).sum()


class LoraPolicy:
    """The sampling backend's model with a trainable LoRA and its Adam state.

    LoRA layers are injected into the backend's own model, so the backend samples from the
    adapted policy and ``testtime.scoring`` computes log-probs under it, with one model in
    memory.
    """

    def __init__(
        self,
        backend: Any,
        run: Mapping[str, Any],
        adapter_dir: str | Path | None = None,
        optimizer_path: str | Path | None = None,
    ) -> None:
        import torch
        from peft import LoraConfig, PeftModel, get_peft_model

        from testtime.pg.placement import adapter_targets, enable_checkpointing, lora_targets

        self.backend = backend
        self.run = dict(run)
        if adapter_dir is None:
            # B = 0 at init: θ_0 is exactly the starting model (D13: fresh LoRA, fresh Adam).
            torch.manual_seed(int(run["seed"]))  # A's random init is part of the run
            lora = LoraConfig(
                r=run["lora_rank"],
                lora_alpha=run["lora_alpha"],
                lora_dropout=run["lora_dropout"],
                # gpt-oss: attention modules plus the experts' fused parameters (testtime.pg.placement)
                **lora_targets(backend.model, run["lora_targets"]),
                task_type="CAUSAL_LM",
            )
            self.peft = get_peft_model(backend.model, lora)
        else:
            self.peft = PeftModel.from_pretrained(backend.model, str(adapter_dir), is_trainable=True)
        self.model = self.peft.get_base_model()  # the same modules, LoRA inside; backend.model is it
        self.model.eval()  # no dropout anywhere (lora_dropout is applied by PEFT in train mode only)
        # On a sharded model PEFT puts each LoRA layer on its base layer's GPU, so the
        # adapter (and Adam's state, created lazily beside each parameter) is sharded with it.
        self.checkpointing = bool(run.get("gradient_checkpointing", False))
        if self.checkpointing:
            enable_checkpointing(self.model)
        self.targets = adapter_targets(self.peft)
        self.params = [p for p in self.peft.parameters() if p.requires_grad]
        # Step 0 never updates, and its settings carry no optimizer keys (UPDATE_KEYS), so a
        # learning-rate change keeps it; its saved Adam state is empty (a fresh Adam at step 1).
        self.optimizer = None
        if "lr" in run:
            self.optimizer = torch.optim.Adam(
                self.params,
                lr=run["lr"],
                betas=(run["adam_beta1"], run["adam_beta2"]),
                eps=run["adam_eps"],
                weight_decay=0.0,
            )
            if optimizer_path is not None:
                state = torch.load(str(optimizer_path), map_location="cpu", weights_only=True)
                if state.get("state"):
                    self.optimizer.load_state_dict(state)
                for group in self.optimizer.param_groups:  # this run's settings, whatever was saved
                    group.update(
                        lr=run["lr"], betas=(run["adam_beta1"], run["adam_beta2"]), eps=run["adam_eps"], weight_decay=0.0
                    )

    def merge_for_sampling(self) -> bool:
        """Fold the LoRA into the base weights for decoding; see :func:`merge_for_sampling`."""
        return merge_for_sampling(self.peft)

    @property
    def pad_id(self) -> int:
        return int(self.backend.stop_ids[0])

    def update(self, batch: Sequence[Mapping[str, Any]], chunk: int = 16, kl_post: bool = False) -> dict[str, Any]:
        """One optimizer step on a sampled batch.

        ``batch`` holds one entry per task: ``prompt_ids``, ``completions`` (token ids),
        ``sampler_logprobs`` and ``advantages`` (one per completion: a number, or a list with
        one per token of the completion). Gradients are accumulated
        over tasks and chunks of rows (the loss is a sum, so this is exact) before the step.
        ``kl_post``: re-score the batch after the step (one more forward pass) for the
        old-vs-new KL estimate.
        """
        import torch

        from testtime.scoring import completion_logprobs, merge_duplicates, sequence_logprobs

        # the shared-prompt KV cache cannot survive a layer replay (placement.enable_checkpointing)
        logprobs = sequence_logprobs if self.checkpointing else completion_logprobs

        if self.optimizer is None:
            raise ValueError("this policy was built without optimizer settings (step 0 never updates)")
        flat = [np.ravel(np.asarray(a, dtype=float)) for g in batch for a in g["advantages"]]
        all_adv = np.concatenate(flat) if flat else np.zeros(0)
        stats: dict[str, Any] = {
            "n_rollouts": sum(len(g["advantages"]) for g in batch),
            "all_zero_advantage": bool(np.all(all_adv == 0)),
            "skipped": False,
        }
        if stats["all_zero_advantage"] and self.run["skip_zero_advantage"]:
            stats.update(skipped=True, loss=0.0, grad_norm=0.0, n_tokens=0, n_unique=0, max_abs_log_ratio=0.0)
            return stats
        # open question 1's regularisers (0: the paper's loss, and nothing extra is computed)
        entropy_bonus = float(self.run.get("entropy_bonus", 0.0))
        kl_to_start = float(self.run.get("kl_to_start", 0.0))
        entropy_total, kl_total = 0.0, 0.0
        # Σ (q - logp) and Σ (q - logp)^2 / 2 over tokens: the cookbook's kl_sample_train_v1/v2
        kl_v1, kl_v2 = 0.0, 0.0
        before: list[tuple[Any, Any, Any]] = []  # (group, rows, logp before the step) for kl_post
        self.optimizer.zero_grad(set_to_none=False)
        loss_total, n_tokens, max_log_ratio, n_unique = 0.0, 0, 0.0, 0
        for group in batch:
            # copies of one completion add their advantages (the loss is linear in A)
            comps, qs, advs, copies = merge_duplicates(group["completions"], group["sampler_logprobs"], group["advantages"])
            n_unique += len(comps)
            for start in range(0, len(comps), chunk):
                rows = comps[start : start + chunk]
                scored = logprobs(
                    self.model, group["prompt_ids"], rows, self.pad_id, self.run["autocast"], with_entropy=entropy_bonus > 0
                )
                lp, mask = scored[0], scored[1]
                q = torch.zeros_like(lp)
                for r, lps in enumerate(qs[start : start + chunk]):
                    q[r, : len(lps)] = torch.tensor(lps, dtype=q.dtype)
                adv = advantage_tensor(advs[start : start + chunk], lp)
                loss = pg_loss(lp, q, adv, mask)
                if entropy_bonus or kl_to_start:
                    weights = torch.tensor(copies[start : start + chunk], dtype=lp.dtype, device=lp.device)
                if entropy_bonus:
                    entropy = entropy_sum(scored[2], mask, weights)
                    loss = loss - entropy_bonus * entropy
                    entropy_total += float(entropy.detach())
                if kl_to_start:
                    with torch.no_grad(), self.peft.disable_adapter():
                        start_lp, _ = logprobs(self.model, group["prompt_ids"], rows, self.pad_id, self.run["autocast"])
                    kl = kl_to_start_sum(lp, start_lp, mask, weights)
                    loss = loss + kl_to_start * kl
                    kl_total += float(kl.detach())
                loss.backward()
                loss_total += float(loss.detach())
                n_tokens += int(mask.sum())
                diff = ((q - lp) * mask).detach()
                kl_v1 += float(diff.sum())
                kl_v2 += float((0.5 * diff.pow(2)).sum())
                max_log_ratio = max(max_log_ratio, float(diff.abs().max()))
                if kl_post:
                    before.append((group["prompt_ids"], rows, lp.detach(), mask))
        # one float per tensor: the LoRA's tensors live on several GPUs when the model is sharded
        grad_norm = math.sqrt(sum(float(p.grad.detach().pow(2).sum()) for p in self.params if p.grad is not None))
        self.optimizer.step()
        stats.update(
            loss=loss_total,
            grad_norm=grad_norm,
            n_tokens=n_tokens,
            n_unique=n_unique,
            max_abs_log_ratio=max_log_ratio,
            kl_sample_train_v1=kl_v1 / max(n_tokens, 1),
            kl_sample_train_v2=kl_v2 / max(n_tokens, 1),
        )
        # per rollout token (copies counted): before the step, under θ_{s-1}
        n_rollout_tokens = sum(len(c) for g in batch for c in g["completions"])
        if entropy_bonus:
            stats.update(entropy_bonus=entropy_bonus, entropy_mean=entropy_total / max(n_rollout_tokens, 1))
        if kl_to_start:
            stats.update(kl_to_start=kl_to_start, kl_to_start_mean=kl_total / max(n_rollout_tokens, 1))
        if kl_post:
            total = 0.0
            with torch.no_grad():
                for prompt_ids, rows, old, mask in before:
                    new, _ = completion_logprobs(self.model, prompt_ids, rows, self.pad_id, self.run["autocast"])
                    total += float(((old - new) * mask).sum())
            stats["kl_post"] = total / max(n_tokens, 1)
        return stats

    def save(self, adapter_dir: str | Path, optimizer_path: str | Path) -> None:
        """Adapter directory and Adam state, each written atomically (temp + rename)."""
        import torch

        adapter_dir, optimizer_path = Path(adapter_dir), Path(optimizer_path)
        adapter_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=adapter_dir.parent, prefix=adapter_dir.name + "."))
        try:
            self.peft.save_pretrained(str(tmp))
            # which weights the LoRA adapts (gpt-oss: experts included or not), beside PEFT's config
            (tmp / "testtime_lora.json").write_text(json.dumps(self.targets, indent=2, sort_keys=True))
            if adapter_dir.exists():
                shutil.rmtree(adapter_dir)
            os.replace(tmp, adapter_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fd, tmp_file = tempfile.mkstemp(dir=optimizer_path.parent, prefix=optimizer_path.name + ".")
        os.close(fd)
        torch.save(self.optimizer.state_dict() if self.optimizer is not None else {}, tmp_file)
        os.replace(tmp_file, optimizer_path)


def advantage_tensor(advantages: Sequence[Any], like: Any) -> Any:
    """Advantages of a chunk of rows as a tensor on ``like``'s device and dtype: ``(rows,)`` for
    one number per row, ``(rows, tokens)`` (zero-padded to ``like``'s width) for per-token lists."""
    import torch

    if all(np.ndim(a) == 0 for a in advantages):
        return torch.tensor([float(a) for a in advantages], dtype=like.dtype, device=like.device)
    out = torch.zeros_like(like)
    for row, a in enumerate(advantages):
        out[row, : len(a)] = torch.tensor(list(a), dtype=like.dtype)
    return out


def merge_checkpoint(backend: Any, adapter_dir: str | Path) -> None:
    """Fold a trained checkpoint's LoRA (an RLVR step's adapter) into the backend's base weights
    (PEFT ``merge_and_unload``), so the backend samples and scores that checkpoint and a new LoRA
    can be put on top of it (``ttt.init: fresh`` on a trained checkpoint). bf16/fp16 bases round
    the merged weights."""
    from peft import PeftModel

    peft = PeftModel.from_pretrained(backend.model, str(adapter_dir))
    backend.model = peft.merge_and_unload()
    backend.model.eval()


def merge_for_sampling(peft: Any) -> bool:
    """Merge the active LoRA into fp32 base weights (PEFT ``merge_adapter``) so that decoding
    runs plain linear layers: one token at a time, the unmerged LoRA's extra small matmuls
    doubled the embedded default's sampling time. The merged model equals the adapted one up to
    fp32 rounding (the recorded sampler log-probs differ from the update's by ~1e-5, reported
    as ``max_abs_log_ratio``). Not done for bf16/fp16 bases, whose rounding would swallow small
    LoRA deltas. Call it after the adapter is saved: nothing trains on the merged weights.
    Returns whether it merged.
    """
    import torch

    base = peft.get_base_model()
    if next(base.parameters()).dtype != torch.float32:
        return False
    peft.merge_adapter()
    return True
