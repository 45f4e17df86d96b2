"""Evaluate sample records in a fresh Python process.

The evaluator forks its workers, and a forked child inherits the parent's torch state: libgomp's
thread pool (after any torch op) and CUDA do not survive fork (testtime/evaluation/worker.py).
A job that has already run a model (TTT: update, then sample) therefore evaluates here, in a
process that has imported torch but never run an op, through the same
:func:`testtime.evaluation.batch.evaluate_samples` as the ``evaluate`` rule.

    python -m testtime.evaluation.isolated SAMPLES.parquet TASKS.parquet EVALUATION.json OUT.parquet
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def evaluate_in_subprocess(samples: pd.DataFrame, tasks: pd.DataFrame, evaluation: dict[str, Any]) -> pd.DataFrame:
    """``evaluate_samples(samples, tasks, evaluation)`` run in a child interpreter."""
    with tempfile.TemporaryDirectory(prefix="testtime-eval-") as tmp:
        paths = [Path(tmp) / name for name in ("samples.parquet", "tasks.parquet", "evaluation.json", "out.parquet")]
        samples.to_parquet(paths[0])
        tasks.to_parquet(paths[1])
        paths[2].write_text(json.dumps(evaluation))
        # this checkout's package first, also when the workflow runs from a copy of the repository
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.run(
            [sys.executable, "-m", "testtime.evaluation.isolated", *map(str, paths)], env=env, stdin=subprocess.DEVNULL
        )
        if proc.returncode != 0:
            raise RuntimeError(f"evaluation subprocess exited with status {proc.returncode} (its log is above)")
        return pd.read_parquet(paths[3])


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    samples_path, tasks_path, evaluation_path, out_path = argv
    from testtime.evaluation.batch import evaluate_samples

    records = evaluate_samples(
        pd.read_parquet(samples_path), pd.read_parquet(tasks_path), json.loads(Path(evaluation_path).read_text())
    )
    records.to_parquet(out_path)


if __name__ == "__main__":
    main(sys.argv[1:])
