"""Task preparation: a suite's tasks with the paper's split and the sampled eval subset."""

from __future__ import annotations

from typing import Any

import pandas as pd

from testtime.tasks import load_suite, make_split, suite_revision


def prepare_tasks(spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """All tasks of a suite with their split, and which eval tasks are sampled."""
    tasks = load_suite(spec)
    split = make_split([t.problem_id for t in tasks], seed=spec["split_seed"], train_fraction=spec["train_fraction"])
    offset, size = spec["subset_offset"], spec["subset_size"]
    subset = split["eval"][offset : None if size is None else offset + size]
    if not subset:
        raise ValueError(
            f"suite {spec['source']!r}: subset_offset={offset}, subset_size={size} selects no eval task "
            f"(there are {len(split['eval'])})"
        )
    df = pd.DataFrame(
        {
            "problem_id": [t.problem_id for t in tasks],
            "name": [t.name for t in tasks],
            "level": [t.level for t in tasks],
            "code": [t.code for t in tasks],
            "split": ["eval" if t.problem_id in split["eval"] else "train" for t in tasks],
            "selected": [t.problem_id in subset for t in tasks],
        }
    )
    info = {**split, "subset": subset, "suite_revision": suite_revision(tasks)}
    return df, info
