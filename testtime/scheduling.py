"""Job granularity and the facts about where a job ran (for logs and provenance)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

# Environment variables that say where a job runs: the SLURM job and its allocation, the GPUs.
JOB_ENV = (
    "SLURM_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_PARTITION",
    "SLURM_JOB_NODELIST",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_GPUS",
    "SLURM_STEP_GPUS",
    "CUDA_VISIBLE_DEVICES",
)


def shard_tasks(problem_ids: Sequence[Any], shard: int, n_shards: int) -> list[Any]:
    """The tasks of evaluation shard ``shard`` of ``n_shards``: contiguous groups of the sorted
    unique ids, sizes differing by at most one. A task is never split across shards (so dedupe
    sees all of a task's samples); shards beyond the number of tasks are empty."""
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} of {n_shards}: need 0 <= shard < n_shards")
    ids = sorted(set(problem_ids))
    base, extra = divmod(len(ids), n_shards)
    start = shard * base + min(shard, extra)
    return ids[start : start + base + (shard < extra)]


def job_environment() -> dict[str, str]:
    """Host and the scheduler/GPU variables set for this job (only those that are set)."""
    env = {"host": socket.gethostname()}
    env.update({k: os.environ[k] for k in JOB_ENV if k in os.environ})
    return env
