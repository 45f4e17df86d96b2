"""Parquet records with provenance in the file's schema metadata (see docs/records.md), and the
atomic writes behind them: a file (``write_table_atomic``) or a whole directory (``atomic_dir``)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

META_KEY = b"testtime.provenance"


def write_parquet(df: pd.DataFrame, path: str | Path, provenance: dict[str, Any]) -> None:
    """Write atomically (temp file + rename), so a killed job never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(provenance, sort_keys=True, default=str).encode()
    write_table_atomic(table.replace_schema_metadata(meta), path)


def write_table_atomic(table: pa.Table, path: str | Path) -> None:
    """Write an Arrow table as Parquet through a temporary file and a rename: a killed job never
    leaves a half-written record."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(out_dir: str | Path) -> Iterator[Path]:
    """Build a directory in a temporary sibling of ``out_dir``, yielded, then rename it over
    ``out_dir`` (replacing what was there) when the block succeeds. If the block raises, the
    temporary directory is removed and ``out_dir`` is left as it was, so a killed job never leaves
    a half-written directory."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_parquet(path: str | Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


def read_provenance(path: str | Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(META_KEY, b"{}"))
