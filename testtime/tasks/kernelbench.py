"""Load KernelBench problems from a Parquet file, a git checkout, or the Hugging Face Hub."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from testtime.tasks.task import Task, parse_stem

HF_PREFIX = "hf:"
COLUMNS = ("code", "level", "name", "problem_id")


def load_kernelbench(source: str | Path, level: int = 1, suite: str | None = None) -> list[Task]:
    """Load one level of KernelBench, sorted by problem_id.

    `source` is a Parquet file in the published dataset layout, a KernelBench checkout (or
    any directory holding `level{level}/`), or `hf:<repo>[@<revision>]`.
    """
    suite = suite or f"kernelbench-l{level}"
    if isinstance(source, str) and source.startswith(HF_PREFIX):
        return _from_records(_hf_records(source, level), level, suite, origin=source)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"KernelBench source not found: {path}")
    if path.is_dir():
        return _from_directory(path, level, suite)
    return _from_records(_parquet_records(path), level, suite, origin=str(path))


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several unrelated types for unreadable files
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    return table.select(list(COLUMNS)).to_pylist()


def _hf_records(source: str, level: int) -> list[dict[str, Any]]:
    name, _, revision = source[len(HF_PREFIX) :].partition("@")
    try:
        import datasets
    except ImportError as exc:
        raise ImportError(f"{source}: loading from the Hugging Face Hub needs the 'datasets' package") from exc
    try:
        rows = datasets.load_dataset(name, split=f"level_{level}", revision=revision or None)
    except Exception as exc:  # offline, unknown revision, missing split, ...
        raise RuntimeError(f"{source}: could not load split level_{level} ({exc})") from exc
    missing = [c for c in COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {list(COLUMNS)}")
    return [dict(row) for row in rows]


def _from_records(records: Iterable[Mapping[str, Any]], level: int, suite: str, origin: str) -> list[Task]:
    records = list(records)
    rows = [r for r in records if int(r["level"]) == level]
    if not rows:
        levels = sorted({int(r["level"]) for r in records})
        raise ValueError(f"{origin}: no rows for level {level} (levels present: {levels})")
    tasks = []
    for row in rows:
        problem_id = int(row["problem_id"])
        name_id, name = parse_stem(str(row["name"]))
        if name_id != problem_id:
            raise ValueError(f"{origin}: row name {row['name']!r} disagrees with problem_id {problem_id}")
        tasks.append(Task(problem_id, name, str(row["code"]), level, suite))
    return _checked(tasks, origin)


def _from_directory(root: Path, level: int, suite: str) -> list[Task]:
    candidates = [root / "KernelBench" / f"level{level}", root / f"level{level}"]
    level_dir = next((d for d in candidates if d.is_dir()), None)
    if level_dir is None:
        raise FileNotFoundError(f"{root}: no level {level} directory (looked for {[str(d) for d in candidates]})")
    tasks = []
    for path in level_dir.glob("*.py"):
        if path.name == "__init__.py":
            continue
        problem_id, name = parse_stem(path.stem)
        # Decode bytes directly: read_text() would rewrite line endings and break verbatim code.
        tasks.append(Task(problem_id, name, path.read_bytes().decode("utf-8"), level, suite))
    if not tasks:
        raise ValueError(f"{level_dir}: no task files for level {level}")
    return _checked(tasks, str(level_dir))


def _checked(tasks: list[Task], origin: str) -> list[Task]:
    ids = [t.problem_id for t in tasks]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"{origin}: duplicate problem_id(s) {duplicates}")
    return sorted(tasks, key=lambda t: t.problem_id)
