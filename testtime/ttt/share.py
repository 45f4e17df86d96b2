"""Shared step 0 of TTT runs (``ttt.share_step0``): runs whose step 0 has the same settings take
one run's step 0 under their own name. Light on purpose (no torch): the copy job imports only this."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

from testtime import provenance
from testtime.records import read_parquet, read_provenance, write_parquet

#: The files of a step: what ``share_step0`` copies (the adapter is a directory).
STEP_FILES: tuple[str, ...] = ("adapter", "optimizer", "rollouts", "evaluations", "metrics")


def share_step0(src: Mapping[str, str], dst: Mapping[str, str], run: str, owner: str) -> None:
    """Step 0 of run ``owner`` (its files by name, :data:`STEP_FILES`) as step 0 of ``run``, whose
    step-0 settings are the same (``ttt.share_step0``): the adapter and Adam state copied, the
    records and metrics with ``run`` set to ``run`` and their provenance naming ``step0_of``."""
    shutil.copytree(src["adapter"], dst["adapter"], dirs_exist_ok=True)
    shutil.copyfile(src["optimizer"], dst["optimizer"])
    for key in ("rollouts", "evaluations"):
        frame = read_parquet(src[key])
        frame["run"] = run
        prov = {**read_provenance(src[key]), "run": run, "step0_of": owner}
        write_parquet(frame, dst[key], prov)
    metrics = json.loads(Path(src["metrics"]).read_text())
    metrics["run"] = run
    metrics["provenance"] = {**metrics["provenance"], "run": run, "step0_of": owner}
    provenance.write_json_atomic(dst["metrics"], metrics)
