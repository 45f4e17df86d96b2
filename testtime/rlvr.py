"""The RLVR outer loop (reference-protocol §8): the shared policy-gradient step
(testtime.pg.rollouts) on the next batch of training tasks, its guardrails, and Table 5.

* data order: the sorted train ids shuffled once with ``random.Random(shuffle_seed)``, repeated
  ``epochs`` times; step s samples batch s = ids[n·s : n·s + n] (n = tasks_per_step), wrapping
  around past the end;
* advantage ``group_mean`` (r − mean of the task's group, no std), no KL, the token-summed
  ``importance_sampling`` loss, Adam(0.9, 0.95, eps 1e-8), rewards normalised by the per-task
  running median with every correct speedup joining the history, bonus 0.01;
* guardrails: after each update, abort (or warn) when ``kl_sample_train_v1/v2`` or ``kl_post``
  exceeds ``guard_kl``, or when the step's mean reward is NaN or below ``guard_reward_drop`` ×
  the previous step's.

Step directory s holds θ_s (after s updates) and the rollouts of batch s sampled from it; Table 5
reports those training-batch metrics at the checkpoint steps.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from testtime.pg.rollouts import policy_step

logger = logging.getLogger(__name__)


class GuardrailError(RuntimeError):
    """An RLVR step broke a guardrail of §8 (``rlvr.guardrails: abort``)."""


def data_order(train_ids: Sequence[int], epochs: int, shuffle_seed: int) -> list[int]:
    """§8's data order: sorted train ids shuffled once with ``random.Random(seed)``, repeated."""
    ids = sorted(int(i) for i in train_ids)
    random.Random(shuffle_seed).shuffle(ids)
    return ids * epochs


def step_task_ids(order: Sequence[int], step: int, tasks_per_step: int) -> list[int]:
    """The task ids of batch ``step`` (ids[n·s : n·s + n], wrapping past the end of the order)."""
    if not order:
        raise ValueError("RLVR: the suite has no train task")
    start = tasks_per_step * step
    return [int(order[(start + i) % len(order)]) for i in range(tasks_per_step)]


def step_tasks(tasks: pd.DataFrame, run: Mapping[str, Any], step: int) -> pd.DataFrame:
    """The suite's task table with ``selected`` = this step's batch (train split only)."""
    train = tasks.loc[tasks["split"] == "train", "problem_id"].tolist()
    ids = step_task_ids(data_order(train, run["epochs"], run["shuffle_seed"]), step, run["tasks_per_step"])
    if len(set(ids)) < len(ids):
        raise ValueError(
            f"rlvr.tasks_per_step {run['tasks_per_step']} is more than the {len(train)} train tasks of suite {run['suite']!r}"
        )
    return tasks.assign(selected=tasks["problem_id"].isin(ids))


def guardrail_violations(
    update: Mapping[str, Any], metrics: Mapping[str, Any], previous: Mapping[str, Any] | None, run: Mapping[str, Any]
) -> list[str]:
    """§8's guardrails (train_smoke.py::GuardedLogger) on a step's update and metrics."""
    found = []
    for key in ("kl_sample_train_v1", "kl_sample_train_v2", "kl_post"):
        value = update.get(key)
        if value is not None and (math.isnan(value) or value > run["guard_kl"]):
            found.append(f"{key} = {value:.4g} > {run['guard_kl']}")
    reward = metrics["mean_reward"]
    if math.isnan(reward):
        found.append("mean reward is NaN")
    elif previous is not None:
        before = previous["mean_reward"]
        if reward < run["guard_reward_drop"] * before:
            found.append(f"mean reward {reward:.4g} < {run['guard_reward_drop']} x the previous step's {before:.4g}")
    return found


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
    sampler: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """RLVR step ``step``: update θ_{s-1} on batch s-1's rollouts (s > 0), save θ_s, sample
    batch s from θ_s, evaluate, score, check the guardrails. ``tasks`` is the suite's task
    table (split column); ``previous`` and ``sampler`` as in :func:`testtime.pg.rollouts.policy_step`."""
    chosen = step_tasks(tasks, run, step)
    mode = run.get("guardrails", "off") if step > 0 else "off"  # step 0's settings carry no update keys
    kl_post = mode != "off"
    rollouts, scored, metrics = policy_step(
        backend,
        run,
        step,
        chosen,
        sampling,
        evaluation,
        previous,
        adapter_out,
        optimizer_out,
        f"{run['suite']}:rlvr-step{step}",
        kl_post=kl_post,
        sampler=sampler,
    )
    n = int(chosen["selected"].sum())
    metrics["rollouts_cumulative"] = (step + 1) * n * run["k"]
    violations = []
    if mode != "off":
        violations = guardrail_violations(metrics["update"], metrics, previous["metrics"] if previous else None, run)
    metrics["guardrails"] = {"mode": mode, "violations": violations}
    if violations:
        message = f"RLVR step {step}: guardrail broken: " + "; ".join(violations)
        if mode == "abort":
            raise GuardrailError(message + " (rlvr.guardrails: abort; 'warn' records and continues)")
        logger.warning(message)
    return rollouts, scored, metrics


# ---------------------------------------------------------------- Table 5

#: Table 5's published rows (reference-protocol §16): step -> (correctness, speedup).
PAPER_TABLE5 = {10: (0.906, 0.81), 20: (0.953, 0.87), 30: (0.953, 0.86), 40: (0.984, 0.87)}


def table5(metrics: Sequence[Mapping[str, Any]], checkpoints: Sequence[int]) -> pd.DataFrame:
    """RLVR progression: one row per step 0..S (``checkpoint`` marks Table 5's rows), with the
    training-batch metrics of the rollouts sampled from θ_s: correctness, mean speedup over
    all rollouts (0 when incorrect) and over correct ones, fast_1, mean reward, and the
    update's loss, gradient norm and KL estimates."""
    rows = []
    final = max(int(m["step"]) for m in metrics)
    for m in sorted(metrics, key=lambda m: int(m["step"])):
        step, update = int(m["step"]), m.get("update", {})
        paper = PAPER_TABLE5.get(step)
        rows.append(
            {
                "step": step,
                "checkpoint": step in checkpoints,
                "final": step == final,
                "tasks": " ".join(str(t) for t in m.get("tasks", [])),
                "n_rollouts": m["n_rollouts"],
                "correct_rate": m["correct_rate"],
                "mean_speedup_all": m["mean_speedup_all"],
                "mean_speedup_correct": m["mean_speedup"],
                "fast_1": m["agg_fast_1"],
                "mean_reward": m["mean_reward"],
                "truncation_rate": m["truncation_rate"],
                "loss": update.get("loss", float("nan")),
                "grad_norm": update.get("grad_norm", float("nan")),
                "kl_sample_train_v1": update.get("kl_sample_train_v1", float("nan")),
                "kl_post": update.get("kl_post", float("nan")),
                "guardrail_violations": len(m.get("guardrails", {}).get("violations", [])),
                "paper_correct_rate": paper[0] if paper else float("nan"),
                "paper_speedup": paper[1] if paper else float("nan"),
            }
        )
    return pd.DataFrame(rows)
