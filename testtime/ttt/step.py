"""One TTT step (reference-protocol §9): update, save, sample, evaluate, score.

A TTT run is a chain of steps. Step s samples K rollouts per task from θ_s (θ_0 = the starting
model with a fresh LoRA whose B matrices are zero, so it equals the base), evaluates them with
the project's evaluator, and turns them into rewards and advantages. Step s+1 first applies one
optimizer step to θ_s on step s's rollouts (giving θ_{s+1}), then samples from θ_{s+1}. Each
step is one workflow job (rules/ttt.smk) whose files are the next step's inputs, so a run
killed during step s resumes at step s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from testtime.evaluation.isolated import evaluate_in_subprocess
from testtime.prompting import prompt_hash, task_prompts
from testtime.sampling.loop import sample_tasks
from testtime.ttt.policy import LoraPolicy
from testtime.ttt.rewards import score_step, step_metrics

logger = logging.getLogger(__name__)


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
    (testtime.evaluation.isolated): this one has run torch ops, which forked workers cannot inherit.
    """
    timings = {}
    started = time.monotonic()
    rollouts = sample_tasks(backend, tasks, {**sampling, "k": k}, seed, stream)
    timings["sample_s"] = time.monotonic() - started
    started = time.monotonic()
    evaluations = evaluate_in_subprocess(rollouts, tasks, dict(evaluation))
    timings["evaluate_s"] = time.monotonic() - started
    return rollouts, evaluations, timings


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
    prompts = task_prompts(backend, tasks, sampling["prompt_variant"])
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
