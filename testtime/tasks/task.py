"""The Task record shared by every suite, and helpers over task collections."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

_STEM = re.compile(r"^(\d+)_(.+)$")


@dataclass(frozen=True)
class Task:
    problem_id: int
    name: str  # file stem without the "{id}_" prefix, e.g. "ReLU"
    code: str  # full module source, verbatim
    level: int
    suite: str  # "bundled" or e.g. "kernelbench-l1"


def parse_stem(stem: str) -> tuple[int, str]:
    """Split a KernelBench file stem like "12_Matmul_with_diagonal_matrices_" into (12, name).

    A trailing ".py" is dropped; the name's own trailing underscores are kept because they
    are part of the upstream file name.
    """
    if stem.endswith(".py"):
        stem = stem[: -len(".py")]
    match = _STEM.match(stem)
    if match is None:
        raise ValueError(f"task name {stem!r} does not look like '{{problem_id}}_{{Name}}'")
    return int(match.group(1)), match.group(2)


def suite_revision(tasks: Iterable[Task]) -> str:
    """Short content hash of a suite, so results can record exactly which problems they used."""
    rows = sorted((t.problem_id, t.name, t.code) for t in tasks)
    digest = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode("utf-8"))
    return digest.hexdigest()[:12]
