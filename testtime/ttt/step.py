"""One TTT step (reference-protocol §9): the shared policy-gradient step (testtime.pg.rollouts)
on the run's fixed tasks.

Step 0 samples θ_0: the checkpoint the workflow uses (``checkpoint``), continued as it is (its
LoRA adapter, when it is one, trained further: ``ttt.init: checkpoint``, §9.1) or with a fresh
LoRA whose B matrices are zero (``ttt.init: fresh``, or a checkpoint without an adapter), so θ_0
equals the checkpoint either way. Each later step updates, saves and samples again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from testtime.pg.rollouts import policy_step, sample_and_evaluate, update_batch

__all__ = ["run_step", "run_tasks", "sample_and_evaluate", "update_batch"]


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
    start: Mapping[str, Any] | None = None,
    sampler: Any = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Step ``step`` of a TTT run (see :func:`testtime.pg.rollouts.policy_step`); ``start``
    (step 0) is the checkpoint's ``adapter`` and ``optimizer`` to continue, None for fresh;
    ``sampler`` the job's vLLM engine (``sampling.backend: vllm``), None to sample with ``backend``."""
    rollouts, scored, metrics = policy_step(
        backend,
        run,
        step,
        tasks,
        sampling,
        evaluation,
        previous,
        adapter_out,
        optimizer_out,
        f"{run['suite']}:ttt-step{step}",
        start=start,
        sampler=sampler,
    )
    metrics["rollouts_cumulative"] = (step + 1) * int(tasks["selected"].sum()) * run["k"]
    return rollouts, scored, metrics
