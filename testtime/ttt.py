"""Batch test-time training (reference-protocol §4.3, §9): rewards, advantages, the update, one step.

A TTT run is a chain of steps. Step s samples K rollouts per task from θ_s (θ_0 = the starting
model with a fresh LoRA whose B matrices are zero, so it equals the base), evaluates them with
the project's evaluator, and turns them into rewards and advantages. Step s+1 first applies one
optimizer step to θ_s on step s's rollouts (giving θ_{s+1}), then samples from θ_{s+1}. Each
step is one workflow job (rules/ttt.smk) whose files are the next step's inputs, so a run
killed during step s resumes at step s.

The update is the reference code's, written by hand because TRL cannot express it:

* reward: speedup / median(the task's last ``window`` positive correct speedups) if correct,
  else 0 (baseline 1.0 while the history is empty); the history is updated sample by sample in
  evaluation order and carried across steps (``normalized_rewards``);
* advantage: z-score over all rollouts of the step, across tasks (``global``, the code's TTRL
  choice) or within each task (``group``, GRPO's), std with ddof=1 floored at 1e-6;
* loss: -Σ_rollouts Σ_tokens exp(log p_θ - log q_sampler) · A (token sum, no mean, no clipping,
  no KL), the Tinker ``importance_sampling`` loss; on-policy the ratio is 1 up to float noise;
* one Adam(β1, β2=0.95, eps=1e-12, no weight decay) step per sampled batch at a constant learning
  rate; the Adam state is carried across steps (fresh at step 0).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from testtime import analysis

logger = logging.getLogger(__name__)

#: Keys a run may set; the rest of its settings come from the ``ttt`` section's defaults.
RUN_KEYS: tuple[str, ...] = (
    "model",
    "suite",
    "seed",
    "tasks",
    "k",
    "steps",
    "lr",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "advantage",
    "skip_zero_advantage",
    "reward_window",
    "reward_bonus",
    "adam_beta1",
    "adam_beta2",
    "adam_eps",
)
#: Settings shared by every step of every run (device and numerics).
SHARED_KEYS: tuple[str, ...] = ("device", "autocast")
MIN_STD = 1e-6
MIN_BASELINE = 1e-6


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


def resolve_run(config: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The complete settings of TTT run ``name``: its own keys over the ``ttt`` defaults.

    ``model`` and ``suite`` default to ``run.model`` / ``run.suite``. Raises ValueError naming
    the config key when the run, its model or its suite is not defined.
    """
    ttt = config["ttt"]
    runs = ttt.get("runs", {})
    if name not in runs:
        raise ValueError(f"config key 'ttt.runs.{name}': no such TTT run (defined: {sorted(runs)})")
    resolved = {key: ttt[key] for key in RUN_KEYS if key in ttt}
    resolved["model"] = config["run"]["model"]
    resolved["suite"] = config["run"]["suite"]
    resolved.update(runs[name])
    resolved.update({key: ttt[key] for key in SHARED_KEYS})
    for registry, key in (("models", "model"), ("suites", "suite")):
        if resolved[key] not in config[registry]:
            raise ValueError(
                f"config key 'ttt.runs.{name}.{key}': {resolved[key]!r} is not defined under '{registry}' "
                f"(defined: {sorted(config[registry])})"
            )
    return resolved


#: Settings only the update reads; step 0 (the starting checkpoint, sampled) does not depend on them.
UPDATE_KEYS: tuple[str, ...] = ("lr", "adam_beta1", "adam_beta2", "adam_eps", "skip_zero_advantage")


def step_settings(run: Mapping[str, Any], step: int | None = None) -> dict[str, Any]:
    """What one step's outputs depend on: never the number of steps (extending a run adds steps
    without rerunning finished ones), and at step 0 none of the update's settings."""
    drop = {"steps", *(UPDATE_KEYS if step == 0 else ())}
    return {key: value for key, value in run.items() if key not in drop}


def run_tasks(tasks: pd.DataFrame, run: Mapping[str, Any], where: str) -> pd.DataFrame:
    """The run's tasks: its ``tasks`` list, or the suite's sampled subset when null."""
    if run.get("tasks"):
        known = set(tasks["problem_id"])
        missing = [t for t in run["tasks"] if t not in known]
        if missing:
            raise ValueError(f"config key '{where}.tasks': problem ids {missing} are not in suite {run['suite']!r}")
        chosen = tasks["problem_id"].isin(run["tasks"])
    else:
        chosen = tasks["selected"]
    out = tasks.copy()
    out["selected"] = chosen
    return out


# --------------------------------------------------------------------------------------
# Rewards and advantages (pure)
# --------------------------------------------------------------------------------------


def normalized_rewards(
    problem_ids: Sequence[int],
    correct: Sequence[bool],
    speedup: Sequence[float],
    history: Mapping[str, Sequence[float]] | None = None,
    window: int = 32,
    bonus: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, dict[str, list[float]]]:
    """Rewards of §4.3 (TTT variant), in the given (evaluation) order.

    For each sample: baseline b = median of the task's history (1.0 when empty); reward 0 if
    incorrect, else ``max(0, speedup / max(b, 1e-6)) + bonus``, after which a positive speedup
    joins the history (a deque of the last ``window``). Samples of one task see different
    baselines, as in the reference. ``history`` maps ``str(problem_id)`` to past speedups and
    is not modified; the updated history is returned.

    Returns ``(rewards, baselines, new_history)``.
    """
    if window < 1:
        raise ValueError(f"normalized_rewards: window must be >= 1, got {window}")
    if not len(problem_ids) == len(correct) == len(speedup):
        raise ValueError("normalized_rewards: problem_ids, correct and speedup differ in length")
    hist = {str(k): deque((float(v) for v in vals), maxlen=window) for k, vals in (history or {}).items()}
    rewards = np.zeros(len(problem_ids))
    baselines = np.zeros(len(problem_ids))
    for i, (pid, ok, sp) in enumerate(zip(problem_ids, correct, speedup)):
        h = hist.setdefault(str(pid), deque(maxlen=window))
        b = statistics.median(h) if h else 1.0
        baselines[i] = b
        if ok:
            sp = float(sp)
            rewards[i] = max(0.0, sp / max(b, MIN_BASELINE)) + bonus
            if sp > 0:
                h.append(sp)
    return rewards, baselines, {k: list(v) for k, v in sorted(hist.items())}


def advantages(rewards: Sequence[float], groups: Sequence[Any] | None = None, mode: str = "global") -> np.ndarray:
    """Normalised advantages: ``(r - mean) / max(std, 1e-6)`` with the sample std (ddof=1).

    ``global`` normalises over all rewards of the step (the reference code, across tasks);
    ``group`` normalises within each group (task), GRPO's group-relative form. A set of one
    reward, or of equal rewards, gets advantage 0.
    """
    r = np.asarray(rewards, dtype=float)
    if mode == "global":
        return _zscore(r)
    if mode == "group":
        if groups is None or len(groups) != len(r):
            raise ValueError("advantages: mode 'group' needs one group label per reward")
        out = np.zeros_like(r)
        labels = np.asarray(groups)
        for g in pd.unique(labels):
            idx = labels == g
            out[idx] = _zscore(r[idx])
        return out
    raise ValueError(f"ttt.advantage: unknown mode {mode!r}; choose 'global' or 'group'")


def _zscore(r: np.ndarray) -> np.ndarray:
    if r.size < 2:
        return np.zeros_like(r)
    return (r - r.mean()) / max(float(np.std(r, ddof=1)), MIN_STD)


def pg_loss(logprobs: Any, sampler_logprobs: Any, adv: Any, mask: Any) -> Any:
    """Tinker's ``importance_sampling`` loss: ``-Σ exp(logp - q) · A`` over completion tokens.

    ``logprobs``, ``sampler_logprobs`` and ``mask`` are ``(rows, tokens)``; ``adv`` is
    ``(rows,)``. Summed, not averaged: longer completions weigh more, as in the reference.
    """
    import torch

    ratio = torch.exp(logprobs - sampler_logprobs.detach())
    return -(ratio * adv[:, None] * mask).sum()


def step_metrics(records: pd.DataFrame) -> dict[str, Any]:
    """§4.4 metrics of one step's evaluated rollouts (columns problem_id, correct, speedup,
    reward, finish_reason)."""
    fast = analysis.fast_1(records["correct"].to_numpy(), records["speedup"].to_numpy())
    frame = records.assign(fast=fast)
    per_task = {}
    for pid, g in frame.groupby("problem_id", sort=True):
        correct = g[g["correct"]]
        per_task[str(int(pid))] = {
            "fast_1": float(g["fast"].mean()),
            "correct_rate": float(g["correct"].mean()),
            "mean_speedup": float(correct["speedup"].mean()) if len(correct) else float("nan"),
            "n": int(len(g)),
        }
    correct = frame[frame["correct"]]
    return {
        "agg_fast_1": float(frame["fast"].mean()),
        "correct_rate": float(frame["correct"].mean()),
        "mean_speedup": float(correct["speedup"].mean()) if len(correct) else float("nan"),
        "mean_reward": float(frame["reward"].mean()),
        "truncation_rate": float((frame["finish_reason"] == "length").mean()),
        "n_rollouts": int(len(frame)),
        "per_task": per_task,
    }


# --------------------------------------------------------------------------------------
# The policy: base model + LoRA + Adam
# --------------------------------------------------------------------------------------


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

        self.backend = backend
        self.run = dict(run)
        if adapter_dir is None:
            # B = 0 at init: θ_0 is exactly the starting model (D13: fresh LoRA, fresh Adam).
            torch.manual_seed(int(run["seed"]))  # A's random init is part of the run
            lora = LoraConfig(
                r=run["lora_rank"],
                lora_alpha=run["lora_alpha"],
                lora_dropout=run["lora_dropout"],
                target_modules=run["lora_targets"],
                task_type="CAUSAL_LM",
            )
            self.peft = get_peft_model(backend.model, lora)
        else:
            self.peft = PeftModel.from_pretrained(backend.model, str(adapter_dir), is_trainable=True)
        self.model = self.peft.get_base_model()  # the same modules, LoRA inside; backend.model is it
        self.model.eval()  # no dropout anywhere (lora_dropout is applied by PEFT in train mode only)
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
                    group.update(lr=run["lr"], betas=(run["adam_beta1"], run["adam_beta2"]), eps=run["adam_eps"], weight_decay=0.0)

    def merge_for_sampling(self) -> bool:
        """Fold the LoRA into the base weights for decoding; see :func:`merge_for_sampling`."""
        return merge_for_sampling(self.peft)

    @property
    def pad_id(self) -> int:
        return int(self.backend.stop_ids[0])

    def update(self, batch: Sequence[Mapping[str, Any]], chunk: int = 16) -> dict[str, Any]:
        """One optimizer step on a sampled batch.

        ``batch`` holds one entry per task: ``prompt_ids``, ``completions`` (token ids),
        ``sampler_logprobs`` and ``advantages`` (one per completion). Gradients are accumulated
        over tasks and chunks of rows (the loss is a sum, so this is exact) before the step.
        """
        import torch

        from testtime.scoring import completion_logprobs, merge_duplicates

        if self.optimizer is None:
            raise ValueError("this policy was built without optimizer settings (step 0 never updates)")
        all_adv = np.concatenate([np.asarray(g["advantages"], dtype=float) for g in batch]) if batch else np.zeros(0)
        stats: dict[str, Any] = {
            "n_rollouts": int(all_adv.size),
            "all_zero_advantage": bool(np.all(all_adv == 0)),
            "skipped": False,
        }
        if stats["all_zero_advantage"] and self.run["skip_zero_advantage"]:
            stats.update(skipped=True, loss=0.0, grad_norm=0.0, n_tokens=0, n_unique=0, max_abs_log_ratio=0.0)
            return stats
        self.optimizer.zero_grad(set_to_none=False)
        loss_total, n_tokens, max_log_ratio, n_unique = 0.0, 0, 0.0, 0
        device = next(self.model.parameters()).device
        for group in batch:
            # copies of one completion add their advantages (the loss is linear in A)
            comps, qs, advs, _ = merge_duplicates(group["completions"], group["sampler_logprobs"], group["advantages"])
            n_unique += len(comps)
            for start in range(0, len(comps), chunk):
                rows = comps[start : start + chunk]
                lp, mask = completion_logprobs(self.model, group["prompt_ids"], rows, self.pad_id, self.run["autocast"])
                q = torch.zeros_like(lp)
                for r, lps in enumerate(qs[start : start + chunk]):
                    q[r, : len(lps)] = torch.tensor(lps, dtype=q.dtype)
                adv = torch.tensor(advs[start : start + chunk], dtype=lp.dtype, device=device)
                loss = pg_loss(lp, q, adv, mask)
                loss.backward()
                loss_total += float(loss.detach())
                n_tokens += int(mask.sum())
                max_log_ratio = max(max_log_ratio, float(((lp - q).abs() * mask).max().detach()))
        grad_norm = math.sqrt(sum(float(p.grad.detach().pow(2).sum()) for p in self.params if p.grad is not None))
        self.optimizer.step()
        stats.update(loss=loss_total, grad_norm=grad_norm, n_tokens=n_tokens, n_unique=n_unique, max_abs_log_ratio=max_log_ratio)
        return stats

    def save(self, adapter_dir: str | Path, optimizer_path: str | Path) -> None:
        """Adapter directory and Adam state, each written atomically (temp + rename)."""
        import torch

        adapter_dir, optimizer_path = Path(adapter_dir), Path(optimizer_path)
        adapter_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=adapter_dir.parent, prefix=adapter_dir.name + "."))
        try:
            self.peft.save_pretrained(str(tmp))
            if adapter_dir.exists():
                shutil.rmtree(adapter_dir)
            os.replace(tmp, adapter_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        fd, tmp_file = tempfile.mkstemp(dir=optimizer_path.parent, prefix=optimizer_path.name + ".")
        os.close(fd)
        torch.save(self.optimizer.state_dict() if self.optimizer is not None else {}, tmp_file)
        os.replace(tmp_file, optimizer_path)


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


# --------------------------------------------------------------------------------------
# One step
# --------------------------------------------------------------------------------------


def prompts_of(backend: Any, tasks: pd.DataFrame, prompt_variant: str) -> dict[int, str]:
    """Rendered prompt of every selected task, exactly as ``stages.sample_tasks`` renders it."""
    from testtime.prompting import build_messages

    return {
        int(t.problem_id): backend.render(build_messages(prompt_variant, t.problem_id, t.name, t.code))
        for t in tasks[tasks["selected"]].itertuples()
    }


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def update_batch(
    backend: Any, prompts: Mapping[int, str], rollouts: pd.DataFrame, evaluations: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per-task update inputs from a step's rollouts and their advantages.

    The prompt is re-rendered and checked against the hash recorded at sampling, so a changed
    template can never silently train on a prompt the rollouts were not drawn from.
    """
    keys = ["problem_id", "sample_index"]
    joined = rollouts.merge(evaluations[keys + ["advantage"]], on=keys, how="inner", validate="one_to_one")
    if len(joined) != len(rollouts):
        raise ValueError(f"{len(rollouts) - len(joined)} rollouts have no evaluation record")
    batch = []
    for pid, g in joined.sort_values(keys).groupby("problem_id", sort=True):
        prompt = prompts[int(pid)]
        if set(g["prompt_hash"]) != {prompt_hash(prompt)}:
            raise ValueError(f"task {pid}: the rollouts were sampled from a different prompt than the one rendered now")
        batch.append(
            {
                "problem_id": int(pid),
                "prompt_ids": backend.tokenizer(prompt, add_special_tokens=False).input_ids,
                "completions": [list(map(int, t)) for t in g["token_ids"]],
                "sampler_logprobs": [list(map(float, t)) for t in g["token_logprobs"]],
                "advantages": g["advantage"].astype(float).tolist(),
            }
        )
    return batch


def sample_and_evaluate(
    backend: Any,
    tasks: pd.DataFrame,
    sampling: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    k: int,
    seed: int,
    stream: str,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """K rollouts per selected task from the backend's current policy, and their verdicts.

    ``stream`` names the sample-seed stream (``row_seed(seed, stream, task, i)``), so every
    step and transfer draws fresh, reproducible samples. Evaluation runs in a fresh process
    (testtime.isolated_eval): this one has run torch ops, which forked workers cannot inherit.
    """
    from testtime.isolated_eval import evaluate_in_subprocess
    from testtime.stages import sample_tasks

    timings = {}
    started = time.monotonic()
    rollouts = sample_tasks(backend, tasks, {**sampling, "k": k}, seed, stream)
    timings["sample_s"] = time.monotonic() - started
    started = time.monotonic()
    evaluations = evaluate_in_subprocess(rollouts, tasks, dict(evaluation))
    timings["evaluate_s"] = time.monotonic() - started
    return rollouts, evaluations, timings


def score_step(
    rollouts: pd.DataFrame,
    evaluations: pd.DataFrame,
    history: Mapping[str, Sequence[float]] | None,
    run: Mapping[str, Any],
) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Evaluations with ``reward``, ``reward_baseline`` and ``advantage`` added, in evaluation
    order (task, then sample index), and the reward history after this step."""
    keys = ["problem_id", "sample_index"]
    ev = evaluations.sort_values(keys, kind="mergesort").reset_index(drop=True)
    rewards, baselines, new_history = normalized_rewards(
        ev["problem_id"].tolist(),
        ev["correct"].astype(bool).tolist(),
        ev["speedup"].astype(float).tolist(),
        history,
        window=run["reward_window"],
        bonus=run["reward_bonus"],
    )
    ev["reward"] = rewards
    ev["reward_baseline"] = baselines
    ev["advantage"] = advantages(rewards, ev["problem_id"].tolist(), run["advantage"])
    return ev, new_history


def run_step(
    backend: Any,
    run: Mapping[str, Any],
    step: int,
    tasks: pd.DataFrame,
    sampling: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    adapter_out: str | Path,
    optimizer_out: str | Path,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Step ``step`` of a run: update θ_{s-1} on step s-1's rollouts (s > 0), save θ_s, sample
    K rollouts per task from θ_s, evaluate them, score them.

    ``previous`` (None at step 0) holds step s-1's ``adapter`` and ``optimizer`` paths, its
    ``rollouts`` and ``evaluations`` DataFrames and its ``metrics`` dict. Returns this step's
    rollouts, scored evaluations and metrics (reward history included, for step s+1).
    """
    timings: dict[str, float] = {}
    started = time.monotonic()
    prompts = prompts_of(backend, tasks, sampling["prompt_variant"])
    if previous is None:
        if step != 0:
            raise ValueError(f"step {step} needs the files of step {step - 1}")
        policy = LoraPolicy(backend, run)
        history: Mapping[str, Sequence[float]] = {}
        update = {"skipped": True, "reason": "step 0 is the starting checkpoint"}
    else:
        policy = LoraPolicy(backend, run, previous["adapter"], previous["optimizer"])
        history = previous["metrics"]["reward_history"]
        timings["load_s"] = time.monotonic() - started
        started = time.monotonic()
        update = policy.update(update_batch(backend, prompts, previous["rollouts"], previous["evaluations"]))
        timings["update_s"] = time.monotonic() - started
        logger.info("step %d update: %s", step, update)
    started = time.monotonic()
    policy.save(adapter_out, optimizer_out)
    timings["save_s"] = time.monotonic() - started
    merged = policy.merge_for_sampling()
    rollouts, evaluations, more = sample_and_evaluate(
        backend, tasks, sampling, evaluation, run["k"], run["seed"], f"{run['suite']}:ttt-step{step}"
    )
    timings.update(more)
    scored, history = score_step(rollouts, evaluations, history, run)
    keys = ["problem_id", "sample_index"]
    metrics = step_metrics(scored.merge(rollouts[keys + ["finish_reason"]], on=keys, validate="one_to_one"))
    n_tasks = int(tasks["selected"].sum())
    metrics.update(
        step=step,
        rollouts_cumulative=(step + 1) * n_tasks * run["k"],
        prompt_tokens=int(rollouts["prompt_tokens"].sum()),
        completion_tokens=int(rollouts["n_tokens"].sum()),
        update=update,
        lora_merged_for_sampling=merged,
        timings=timings,
        reward_history=history,
    )
    return rollouts, scored, metrics
