"""Task data: the bundled CPU suite, KernelBench loaders, and train/eval splits."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from testtime.tasks.kernelbench import load_kernelbench
from testtime.tasks.task import Task, parse_stem, suite_revision

__all__ = [
    "BUNDLED_DIR",
    "Task",
    "load_bundled",
    "load_kernelbench",
    "load_suite",
    "make_split",
    "parse_stem",
    "suite_revision",
]

BUNDLED_DIR = Path(__file__).parent / "bundled"


def load_bundled() -> list[Task]:
    """The 20 small level-1-style tasks shipped with the package, sorted by problem_id."""
    tasks = []
    for path in BUNDLED_DIR.glob("*.py"):
        problem_id, name = parse_stem(path.stem)
        tasks.append(Task(problem_id, name, path.read_bytes().decode("utf-8"), 1, "bundled"))
    return sorted(tasks, key=lambda t: t.problem_id)


def load_suite(spec: Mapping[str, Any]) -> list[Task]:
    """Load tasks from a config spec.

    `{"source": "bundled"}`, or `{"source": <parquet|checkout dir|hf:...>, "level": 1}` with an
    optional "suite" label.
    """
    if "source" not in spec:
        raise ValueError(f"suite spec {dict(spec)!r} has no 'source'")
    source = spec["source"]
    if source == "bundled":
        return load_bundled()
    return load_kernelbench(source, level=int(spec.get("level", 1)), suite=spec.get("suite"))


def make_split(problem_ids: Iterable[int], seed: int, train_fraction: float = 0.8) -> dict:
    """Seeded train/eval split, following the paper's procedure exactly.

    For KernelBench level 1 (ids 1..100) and seed 42 this yields the paper's 20 eval problems.
    """
    ids = sorted(set(int(i) for i in problem_ids))
    random.Random(seed).shuffle(ids)
    n_train = int(train_fraction * len(ids))
    split: dict[str, Any] = {
        "seed": seed,
        "train": sorted(ids[:n_train]),
        "eval": sorted(ids[n_train:]),
    }
    canonical = json.dumps(split, sort_keys=True, separators=(",", ":"))
    split["split_hash"] = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return split
