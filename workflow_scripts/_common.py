"""Shared by workflow scripts: logging into the rule's log file, tracebacks included."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def setup(snakemake: Any) -> logging.Logger:
    """Send logging, uncaught tracebacks and C-level stderr of this job to its log file."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    log_path = snakemake.log[0] if snakemake.log else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        log_file = open(log_path, "a", buffering=1)
        os.dup2(log_file.fileno(), 2)  # torch/transformers also write to fd 2 directly
        handlers = [logging.StreamHandler(log_file)]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", handlers=handlers, force=True
    )
    logger = logging.getLogger(snakemake.rule)

    def excepthook(kind, value, tb):  # noqa: ANN001
        logger.error("uncaught exception", exc_info=(kind, value, tb))

    sys.excepthook = excepthook
    from testtime.scheduling import job_environment

    # Where the job ran (host, SLURM job id, GPUs): the evidence a cluster run leaves in each log.
    logger.info("job environment: %s", " ".join(f"{k}={v}" for k, v in job_environment().items()))
    return logger


def leased(snakemake: Any, job: Callable[[Any, logging.Logger, Any], None]) -> None:
    """Set up logging, then run ``job(snakemake, log, lease)`` holding the GPUs this job requested
    (resources gpu), before anything touches CUDA: on a workstation each job gets its own devices
    through CUDA_VISIBLE_DEVICES; under SLURM the scheduler's are checked. CPU jobs lease none."""
    from testtime.gpus import gpu_lease

    log = setup(snakemake)
    with gpu_lease(int(getattr(snakemake.resources, "gpu", 0) or 0)) as lease:
        if lease.devices:
            log.info("GPU lease: %s", lease.describe())
        job(snakemake, log, lease)
