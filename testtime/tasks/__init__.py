"""Task data: the bundled CPU suite, KernelBench loaders, and train/eval splits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from testtime.tasks.kernelbench import load_kernelbench
from testtime.tasks.sizes import CPU_SIZES, SIZE_VARIANTS, apply_size_overrides, size_variant
from testtime.tasks.task import Task, parse_stem, suite_revision

__all__ = [
    "BUNDLED_DIR",
    "CPU_SIZES",
    "SIZE_VARIANTS",
    "Task",
    "apply_size_overrides",
    "load_bundled",
    "load_kernelbench",
    "load_suite",
    "make_split",
    "parse_stem",
    "size_overrides_of",
    "size_variant",
    "suite_revision",
]

#: Data this package reads, hashed with its code (testtime.codehash): editing a bundled task reruns
#: task preparation.
CODE_DATA = ("bundled", "headroom")
BUNDLED_DIR = Path(__file__).parent / "bundled"
#: The 'headroom' suite: elementwise ops written out the long way (1 / (1 + exp(-x)), x * sigmoid(x),
#: ...), each with a fused torch builtin that is genuinely faster on a CPU (1.5-2.9x measured), so
#: that a small model's correct answers differ in speed and selection has something to choose.
HEADROOM_DIR = Path(__file__).parent / "headroom"
#: The suites shipped with the package, by their `source` name.
PACKAGED = {"bundled": BUNDLED_DIR, "headroom": HEADROOM_DIR}


def load_bundled(source: str = "bundled") -> list[Task]:
    """A suite shipped with the package (`PACKAGED`: by default the 20 small level-1-style tasks),
    sorted by problem_id."""
    tasks = []
    for path in PACKAGED[source].glob("*.py"):
        problem_id, name = parse_stem(path.stem)
        tasks.append(Task(problem_id, name, path.read_bytes().decode("utf-8"), 1, source))
    return sorted(tasks, key=lambda t: t.problem_id)


def load_suite(spec: Mapping[str, Any]) -> list[Task]:
    """Load tasks from a config spec.

    `{"source": "bundled"}` (or another suite of `PACKAGED`), or `{"source": <parquet|checkout dir|hf:...>, "level": 1}` with an
    optional "suite" label. An optional `"sizes": "full" | "cpu"` (default "full") picks the
    problem sizes: "cpu" rewrites each KernelBench level-1 task's module-level size constants
    (`CPU_SIZES`; see `size_overrides_of`). The bundled suite is already CPU-sized, so "cpu"
    leaves it unchanged.
    """
    if "source" not in spec:
        raise ValueError(f"suite spec {dict(spec)!r} has no 'source'")
    sizes = _sizes_of(spec)
    source = spec["source"]
    if source in PACKAGED:
        return load_bundled(source)
    tasks = load_kernelbench(source, level=int(spec.get("level", 1)), suite=spec.get("suite"))
    if sizes == "full":
        return tasks
    return [dataclasses.replace(t, code=size_variant(t.problem_id, t.code, sizes)[0]) for t in tasks]


def size_overrides_of(spec: Mapping[str, Any]) -> dict[int, dict[str, int]]:
    """The size overrides `load_suite(spec)` applies, by problem_id ({} at full size).

    Recorded by the workflow as a deviation from the paper's problem sizes.
    """
    sizes = _sizes_of(spec)
    if sizes == "full" or spec.get("source") in PACKAGED:
        return {}
    return {pid: dict(CPU_SIZES[pid]) for pid in sorted(CPU_SIZES)}


def _sizes_of(spec: Mapping[str, Any]) -> str:
    sizes = spec.get("sizes", "full")
    if sizes not in SIZE_VARIANTS:
        raise ValueError(f"suite spec 'sizes' is {sizes!r}; expected one of {SIZE_VARIANTS}")
    level = int(spec.get("level", 1))
    if sizes != "full" and spec.get("source") not in PACKAGED and level != 1:
        raise ValueError(f"suite spec 'sizes': {sizes!r} is only defined for level 1, not {level}")
    return sizes


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
