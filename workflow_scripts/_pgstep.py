"""Shared by the step scripts of the policy-gradient loops (ttt_step, rlvr_step, sdpo_step): read
the previous step's files, run the loop's step function, write the step's records.

A module of its own rather than part of ``_common``: every workflow script imports ``_common``,
and the code hash of a rule covers the helper modules its script imports (testtime.codehash),
so the training library imported here would make an edit of it rerun Best-of-N and the figures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from testtime import provenance
from testtime.pg.rollouts import StepInputs
from testtime.records import read_parquet, write_parquet
from testtime.sampling import rollout_engine, training_backend

StepFunction = Callable[[StepInputs], tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]]


def previous_step(inputs: Any) -> dict[str, Any] | None:
    """Step s-1's files as :class:`StepInputs` takes them (None at step 0: no ``adapter`` input)."""
    if not hasattr(inputs, "adapter"):
        return None
    return {
        "adapter": inputs.adapter,
        "optimizer": inputs.optimizer,
        "rollouts": read_parquet(inputs.rollouts),
        "evaluations": read_parquet(inputs.evaluations),
        "metrics": json.loads(Path(inputs.metrics).read_text()),
    }


def start_of(checkpoint: Mapping[str, Any], inputs: Any) -> dict[str, Any]:
    """Where a run starts: the trained checkpoint's LoRA continued (step 0) or merged under a
    fresh LoRA (every step); nothing for a base or fetched checkpoint."""
    if not hasattr(inputs, "checkpoint_adapter"):
        return {}
    if checkpoint["lora"] == "continued":
        return {"adapter": inputs.checkpoint_adapter, "optimizer": getattr(inputs, "checkpoint_optimizer", None)}
    return {"merge": inputs.checkpoint_adapter}


def run_policy_step(
    snakemake: Any,
    run_step: StepFunction,
    tasks: pd.DataFrame,
    *,
    name: str,
    section: str,
    start: Mapping[str, Any] | None = None,
    sections: Mapping[str, Any] | None = None,
    facts: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One step job: load the training backend and the rollout engine (``sampling.backend``), call
    ``run_step`` on this step's inputs, write
    rollouts and evaluations (with ``run`` = ``name`` and ``step`` columns) and metrics.json,
    each carrying the step's provenance: the loop's settings under ``section``, ``sampling``,
    ``evaluation``, ``model`` and ``sections``; ``facts`` join the run, step, model, suite,
    suite revision, seed, autocast and device. Returns the step's metrics."""
    params, out = snakemake.params, snakemake.output
    run, model, step = params.run, params.model, int(snakemake.wildcards.step)
    backend = training_backend(params.model_path, model, run["device"], snakemake.threads, run["shard"])
    # None (transformers: the training model samples) or one vLLM engine for the job, into which
    # each step's adapter is hot-loaded; a continued checkpoint's LoRA may have a larger rank
    continued = [getattr(snakemake.input, "checkpoint_adapter", None)]
    sampler = rollout_engine(params.sampling, params.model_path, model, run["device"], run["lora_rank"], continued)
    split = json.loads(Path(snakemake.input.split).read_text())
    inputs = StepInputs(
        backend=backend,
        run=run,
        step=step,
        tasks=tasks,
        sampling=params.sampling,
        evaluation=params.evaluation,
        previous=previous_step(snakemake.input),
        adapter_out=out.adapter,
        optimizer_out=out.optimizer,
        start=start,
        sampler=sampler,
    )
    rollouts, evaluations, metrics = run_step(inputs)
    for frame in (rollouts, evaluations):
        frame.insert(0, "run", name)
        frame.insert(1, "step", step)
    prov = provenance.build(
        {section: run, "sampling": params.sampling, "evaluation": params.evaluation, "model": model, **(sections or {})},
        run=name,
        step=step,
        model=run["model"],
        suite=run["suite"],
        suite_revision=split["suite_revision"],
        seed=run["seed"],
        autocast=run["autocast"],
        engine=metrics.get("engine"),
        **(facts or {}),
        **provenance.device_info(run["device"]),
        placement=backend.placement,
    )
    write_parquet(rollouts, out.rollouts, prov)
    write_parquet(evaluations, out.evaluations, prov)
    provenance.write_json_atomic(out.metrics, {**metrics, "run": name, "provenance": prov})
    return metrics
