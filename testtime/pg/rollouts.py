"""One step of a policy-gradient loop (RLVR §8, TTT §9): update, save, sample, evaluate, score.

A run is a chain of steps. Step s samples K rollouts per task of its batch from θ_s (θ_0 = the
starting policy), evaluates them with the project's evaluator and turns them into rewards and
advantages. Step s+1 first applies one optimizer step to θ_s on step s's rollouts (giving
θ_{s+1}), then samples from θ_{s+1}. Each step is one workflow job whose files are the next
step's inputs, so a run killed during step s resumes at step s. The loops differ only in which
tasks a step samples (TTT: the same tasks every step; RLVR: the next batch of the data order),
their advantage mode, optimizer settings and guardrails, all of which come in ``run``.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from testtime.evaluation.isolated import evaluate_in_subprocess
from testtime.pg.policy import LoraPolicy, merge_checkpoint
from testtime.pg.rewards import score_step, step_metrics
from testtime.prompting import prompt_hash, task_prompts
from testtime.sampling import engine_provenance
from testtime.sampling.loop import sample_tasks

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class StepInputs:
    """What one step of any loop is given: the loaded ``backend``, the run's settings ``run``,
    the ``step`` index, the task table ``tasks`` (``selected`` marks the step's tasks; all rows
    render the prompts of the previous step's rollouts), the ``sampling`` and ``evaluation``
    settings, ``previous`` (None at step 0; else step s-1's ``adapter`` and ``optimizer``
    paths, ``rollouts`` and ``evaluations`` DataFrames and ``metrics`` dict), where to write
    ``adapter_out`` and ``optimizer_out``, and ``start``: where the run starts (``merge``,
    every step: an adapter folded into the base weights first, a trained checkpoint under a
    fresh LoRA; ``adapter`` and ``optimizer``, step 0: the LoRA and Adam state to continue;
    None: a fresh LoRA whose B = 0, i.e. exactly the model, and a fresh Adam)."""

    backend: Any
    run: Mapping[str, Any]
    step: int
    tasks: pd.DataFrame
    sampling: Mapping[str, Any]
    evaluation: Mapping[str, Any]
    previous: Mapping[str, Any] | None
    adapter_out: str | Path
    optimizer_out: str | Path
    start: Mapping[str, Any] | None = None
    sampler: Any = None  # the engine that samples the rollouts (see rollout_sampler; None: backend)


#: ``build_batch(policy, tasks, previous) -> (batch, stats)``: the update's inputs from step
#: s-1's files under θ_{s-1} (``policy``), and statistics added to the update's record. The
#: default (None) is :func:`update_batch`: one scalar advantage per rollout, from the records.
BatchBuilder = Callable[[LoraPolicy, pd.DataFrame, Mapping[str, Any]], tuple[list[dict[str, Any]], dict[str, Any]]]


def rollout_sampler(policy: LoraPolicy, backend: Any, sampler: Any, adapter_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """The engine that samples θ_s, whose adapter was just saved to ``adapter_dir``, and its
    provenance record.

    ``sampler`` None: the training backend samples, its LoRA merged into fp32 weights for
    decoding (:meth:`LoraPolicy.merge_for_sampling`), as PEFT layers otherwise. A vLLM
    ``sampler`` (built once per job by ``testtime.sampling.rollout_engine``) hot-loads the saved
    adapter with a ``LoRARequest``: the rollouts come from exactly the file step s+1 trains on,
    and their recorded log-probs are the sampler's q of the ``importance_sampling`` loss.
    """
    if sampler is None:
        merged = policy.merge_for_sampling()
        return backend, engine_provenance(backend, adapter_dir, "merged" if merged else "peft")
    sampler.set_adapter(adapter_dir)
    return sampler, engine_provenance(sampler)


def adapter_sampler(
    model_path: str,
    model: Mapping[str, Any],
    sampling: Mapping[str, Any],
    device: str,
    threads: int,
    adapter: str | Path,
    merged: str | Path | None = None,
    shard: str = "single",
) -> tuple[Any, dict[str, Any]]:
    """An engine that samples a saved adapter (a transfer: one run's θ_s on another run's tasks),
    and its provenance record. transformers (``sampling.backend``): the adapter merged into
    fp32 weights for decoding, on top of ``merged`` (a trained checkpoint under the run's fresh
    LoRA) when given, placed by ``shard`` (testtime.pg.placement). vLLM: one engine with the
    adapter in a ``LoRARequest``."""
    from peft import PeftModel

    from testtime.pg.policy import merge_for_sampling
    from testtime.sampling import training_backend, vllm_adapter_engine
    from testtime.sampling.vllm_backend import lora_rank

    if sampling.get("backend", "transformers") == "vllm":
        engine = vllm_adapter_engine(sampling, model_path, model, device, threads, lora_rank(adapter), merged=merged)
        engine.set_adapter(adapter)
        return engine, engine_provenance(engine)
    backend = training_backend(model_path, model, device, threads, shard)
    if merged:
        merge_checkpoint(backend, merged)
    peft = PeftModel.from_pretrained(backend.model, str(adapter))  # LoRA injected into backend.model
    applied = "merged" if merge_for_sampling(peft) else "peft"
    backend.model.eval()
    return backend, engine_provenance(backend, adapter, applied)


def policy_step(
    inputs: StepInputs,
    stream: str,
    kl_post: bool = False,
    build_batch: BatchBuilder | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Step s of a run (:class:`StepInputs`): update θ_{s-1} on step s-1's rollouts (s > 0),
    save θ_s, sample K = ``run["k"]`` rollouts per selected task of ``tasks`` from θ_s, evaluate
    them, score them. ``stream`` names the sample-seed stream; ``kl_post`` re-scores the batch
    after the update; ``build_batch`` (:data:`BatchBuilder`) replaces the scalar advantages
    (SDPO's per-token ones). Returns this step's rollouts, scored evaluations and metrics
    (reward history, the update's statistics and the sampling ``engine`` included).
    """
    backend, run, step, tasks = inputs.backend, inputs.run, inputs.step, inputs.tasks
    sampling, evaluation, previous = inputs.sampling, inputs.evaluation, inputs.previous
    adapter_out, optimizer_out, start = inputs.adapter_out, inputs.optimizer_out, inputs.start
    sampler = inputs.sampler
    timings: dict[str, float] = {}
    started = time.monotonic()
    start = start or {}
    if sampler is not None and start.get("merge"):
        # vLLM serves one LoRA on the weights it loaded: the fresh LoRA cannot sit on a merged one.
        raise NotImplementedError(
            "sampling.backend: vllm cannot sample a fresh LoRA on a trained checkpoint (ttt.init: fresh); "
            "use ttt.init: checkpoint or the transformers backend"
        )
    if start.get("merge"):
        merge_checkpoint(backend, start["merge"])
    if previous is None:
        if step != 0:
            raise ValueError(f"step {step} needs the files of step {step - 1}")
        policy = LoraPolicy(backend, run, start.get("adapter"))
        history: Mapping[str, Sequence[float]] = {}
        update: dict[str, Any] = {"skipped": True, "reason": "step 0 is the starting checkpoint"}
    else:
        policy = LoraPolicy(backend, run, previous["adapter"], previous["optimizer"])
        history = previous["metrics"]["reward_history"]
        timings["load_s"] = time.monotonic() - started
        started = time.monotonic()
        trained_on = tasks.assign(selected=tasks["problem_id"].isin(previous["rollouts"]["problem_id"]))
        if build_batch is None:
            prompts = task_prompts(backend, trained_on, sampling["prompt_variant"])
            batch, extra = update_batch(backend, prompts, previous["rollouts"], previous["evaluations"]), {}
        else:
            batch, extra = build_batch(policy, trained_on, previous)
        update = {**policy.update(batch, kl_post=kl_post), **extra}
        timings["update_s"] = time.monotonic() - started
        logger.info("step %d update: %s", step, update)
    started = time.monotonic()
    policy.save(adapter_out, optimizer_out)
    if previous is None and start.get("optimizer"):
        shutil.copyfile(start["optimizer"], optimizer_out)  # step 1 continues the checkpoint's Adam state
    timings["save_s"] = time.monotonic() - started
    engine, engine_record = rollout_sampler(policy, backend, sampler, adapter_out)
    merged = engine_record["adapter_applied"] == "merged"
    rollouts, evaluations, more = sample_and_evaluate(engine, tasks, sampling, evaluation, run["k"], run["seed"], stream)
    timings.update(more)
    scored, history = score_step(rollouts, evaluations, history, run)
    keys = ["problem_id", "sample_index"]
    metrics = step_metrics(scored.merge(rollouts[keys + ["finish_reason"]], on=keys, validate="one_to_one"))
    metrics.update(
        step=step,
        tasks=sorted(int(t) for t in tasks.loc[tasks["selected"], "problem_id"]),
        prompt_tokens=int(rollouts["prompt_tokens"].sum()),
        completion_tokens=int(rollouts["n_tokens"].sum()),
        update=update,
        lora_merged_for_sampling=merged,
        engine=engine_record,
        timings=timings,
        reward_history=history,
    )
    return rollouts, scored, metrics
