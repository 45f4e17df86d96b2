"""Fetching model weights and task suites: the workflow's only network access (rules/retrieve.smk).

A remote source in the config is

- ``hf:ORG/NAME[@REVISION]``: a Hugging Face Hub repository at a branch, tag or commit (default
  ``main``): a model repository under ``models``, a dataset repository under ``suites`` (the
  KernelBench dataset's parquet files, e.g. ``hf:ScalingIntelligence/KernelBench@<commit>``);
- ``github:ORG/NAME@COMMIT``: the GitHub archive of a commit (suites: a KernelBench problem tree,
  ``KernelBench/level{N}/{id}_{Name}.py``).

Each download lands once in a cache and is re-used from there: the Hugging Face hub cache layout
(``models--ORG--NAME/{blobs,snapshots/<commit>,refs}``) for ``hf:``, one ``<commit>.tar.gz`` per
archive for ``github:``. A machine without internet is given a pre-populated cache (and
``HF_HUB_OFFLINE=1``). Every retrieval writes a manifest beside its output: the source, the commit
it resolved to, and the sha256 of every file it used.

Parse-time helpers (``is_remote``, ``parse_source``) use the standard library only, so
``rules/common.smk`` can import this module while Snakemake parses the workflow.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

HOSTS = ("hf", "github")
GITHUB_ARCHIVE_URL = "https://github.com/{owner}/{repo}/archive/{revision}.tar.gz"
#: The problem files of a KernelBench tree inside an archive: <top>/KernelBench/level{N}/<stem>.py
_TREE_FILE = re.compile(r"^[^/]+/KernelBench/level(\d+)/([^/]+)\.py$")
_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]*"
_SOURCE = re.compile(rf"^(?P<host>hf|github):(?P<owner>{_NAME})/(?P<repo>{_NAME})(?:@(?P<revision>{_NAME}))?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
SUITE_COLUMNS = ("code", "level", "name", "problem_id")


class RetrieveError(RuntimeError):
    """A download or a downloaded artefact failed; the message names the source and what to do."""


@dataclass(frozen=True)
class RemoteSource:
    host: str  # "hf" or "github"
    owner: str
    repo: str
    revision: str  # branch, tag or commit ("main" when the source names none)

    @property
    def repo_id(self) -> str:
        return f"{self.owner}/{self.repo}"

    def __str__(self) -> str:
        return f"{self.host}:{self.repo_id}@{self.revision}"


def is_remote(source: str) -> bool:
    """Whether a config ``source`` is fetched by the retrieve rules (``hf:`` or ``github:``)."""
    return isinstance(source, str) and source.split(":", 1)[0] in HOSTS and ":" in source


def parse_source(source: str) -> RemoteSource:
    """``hf:ORG/NAME[@REVISION]`` or ``github:ORG/NAME@COMMIT``; ValueError says what is expected."""
    match = _SOURCE.match(source)
    if match is None:
        raise ValueError(
            f"{source!r} is not 'hf:ORG/NAME[@REVISION]' or 'github:ORG/NAME@COMMIT' "
            "(a revision is a branch, tag or commit hash without '/')"
        )
    if match["host"] == "github" and not match["revision"]:
        raise ValueError(f"{source!r}: a GitHub source names the commit whose archive is fetched ('github:ORG/NAME@COMMIT')")
    return RemoteSource(match["host"], match["owner"], match["repo"], match["revision"] or "main")


# ---------------------------------------------------------------- caches


def hf_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where ``hf:`` downloads go: ``<cache_dir>/hf`` when configured, else the Hugging Face hub
    cache (``HF_HUB_CACHE``, or ``HF_HOME/hub``, or ``~/.cache/huggingface/hub``), read now
    rather than when huggingface_hub was imported."""
    if cache_dir:
        return Path(cache_dir).expanduser() / "hf"
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def archive_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Where ``github:`` archives go: ``<cache_dir>/github``, else ``~/.cache/testtime/github``."""
    if cache_dir:
        return Path(cache_dir).expanduser() / "github"
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "testtime" / "github"


def archive_path(source: RemoteSource, cache_dir: str | Path | None = None) -> Path:
    """The cached archive of a ``github:`` source: ``<archive cache>/ORG/NAME/<revision>.tar.gz``."""
    return archive_cache_dir(cache_dir) / source.owner / source.repo / f"{source.revision}.tar.gz"


def hub_offline() -> bool:
    """HF_HUB_OFFLINE as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


# ---------------------------------------------------------------- checksums and manifests


def sha256_file(path: str | Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _versions() -> dict[str, str]:
    found = {}
    for name in ("huggingface_hub", "pyarrow"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _write_manifest(path: str | Path, manifest: dict[str, Any], sections: dict[str, Any]) -> dict[str, Any]:
    from testtime import provenance

    manifest = {**manifest, "provenance": provenance.build(sections, retrieve_packages=_versions())}
    provenance.write_json_atomic(path, manifest)
    return manifest


# ---------------------------------------------------------------- Hugging Face Hub


def _hf_snapshot(
    source: RemoteSource,
    repo_type: str,
    cache: Path,
    allow_patterns: list[str] | None,
    ignore_patterns: list[str] | None,
) -> Path:
    """Download (or find in the cache) one revision of a hub repository; its snapshot folder."""
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        folder = snapshot_download(
            source.repo_id,
            repo_type=repo_type,
            revision=source.revision,
            cache_dir=cache,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            local_files_only=offline,
        )
    except Exception as exc:  # offline, unknown revision, gated repo, network down, ...
        where = f"{cache}/{repo_type}s--{source.owner}--{source.repo}"
        hint = (
            "HF_HUB_OFFLINE=1 is set, so only the cache is read"
            if offline
            else "check the network, the revision, and HF_TOKEN for gated repositories"
        )
        raise RetrieveError(
            f"{source}: could not fetch {repo_type} repository {source.repo_id} at revision {source.revision!r} from the "
            f"Hugging Face Hub into {cache} ({type(exc).__name__}: {exc}). {hint}. On a machine without internet, "
            f"copy a populated cache ({where}/...) there and set HF_HUB_OFFLINE=1 (README: Fetching weights and data)."
        ) from exc
    return Path(folder)


def _snapshot_files(folder: Path, allow_patterns: list[str] | None, ignore_patterns: list[str] | None) -> list[str]:
    """Files of a snapshot (relative POSIX paths) that the patterns select, sorted."""
    from huggingface_hub.utils import filter_repo_objects

    paths = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return list(filter_repo_objects(paths, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))


def _commit_of(folder: Path, source: RemoteSource) -> str:
    commit = folder.name
    if not _COMMIT.match(commit):
        raise RetrieveError(f"{source}: snapshot folder {folder} is not named by a commit hash")
    if _COMMIT.match(source.revision) and commit != source.revision:
        raise RetrieveError(f"{source}: the cache returned commit {commit}, not the pinned {source.revision}")
    return commit


def retrieve_model(
    source: str,
    out_dir: str | Path,
    manifest_path: str | Path,
    *,
    cache_dir: str | Path | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
) -> dict[str, Any]:
    """Fetch an ``hf:`` model repository into the cache and expose it at ``out_dir``.

    ``out_dir`` holds one symbolic link per selected file, into the cache's snapshot (weights are
    never copied: a 120B checkpoint is ~240 GB), so ``from_pretrained``/vLLM read it as a local
    directory. The manifest (written to ``manifest_path``) records the resolved commit and each
    file's sha256 and size.
    """
    src = parse_source(source)
    if src.host != "hf":
        raise RetrieveError(f"{source}: model weights come from the Hugging Face Hub ('hf:ORG/NAME[@REVISION]')")
    cache = hf_cache_dir(cache_dir)
    folder = _hf_snapshot(src, "model", cache, allow_patterns, ignore_patterns)
    commit = _commit_of(folder, src)
    files = _snapshot_files(folder, allow_patterns, ignore_patterns)
    if "config.json" not in files:
        raise RetrieveError(
            f"{source}: commit {commit} has no config.json among the files selected by allow_patterns={allow_patterns} "
            f"ignore_patterns={ignore_patterns} ({len(files)} selected): not a model repository, or a partial cache"
        )
    from testtime.records import atomic_dir  # pandas/pyarrow: not at parse time

    checksums = {}
    with atomic_dir(out_dir) as tmp:
        for rel in files:
            target = folder / rel
            link = tmp / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target.absolute())
            checksums[rel] = {"sha256": sha256_file(target), "size": target.stat().st_size}
            logger.info("%s: %s (%d bytes)", source, rel, checksums[rel]["size"])
    manifest = {
        "source": source,
        "repo_type": "model",
        "repo_id": src.repo_id,
        "revision": src.revision,
        "commit": commit,
        "snapshot": str(folder),
        "allow_patterns": allow_patterns,
        "ignore_patterns": ignore_patterns,
        "files": checksums,
    }
    sections = {"model": {"source": source, "allow_patterns": allow_patterns, "ignore_patterns": ignore_patterns}}
    return _write_manifest(manifest_path, manifest, sections)


# ---------------------------------------------------------------- task suites


def _hf_suite_rows(src: RemoteSource, cache: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows of every parquet file of a KernelBench dataset revision (split ``level_N`` files)."""
    import pyarrow.parquet as pq

    folder = _hf_snapshot(src, "dataset", cache, ["*.parquet"], None)
    commit = _commit_of(folder, src)
    files = _snapshot_files(folder, ["*.parquet"], None)
    if not files:
        raise RetrieveError(f"{src}: dataset commit {commit} has no parquet file")
    rows: list[dict[str, Any]] = []
    for rel in files:
        table = pq.read_table(folder / rel)
        missing = [c for c in ("code", "name") if c not in table.column_names]
        if missing:
            raise RetrieveError(f"{src}: {rel} lacks column(s) {missing}; expected {list(SUITE_COLUMNS)}")
        level = re.search(r"level_?(\d+)", rel)
        for row in table.to_pylist():
            if row.get("level") is None and level:
                row["level"] = int(level.group(1))
            rows.append(row)
    checksums = {rel: {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size} for rel in files}
    return rows, {"repo_type": "dataset", "commit": commit, "snapshot": str(folder), "files": checksums}


def fetch_archive(src: RemoteSource, cache_dir: str | Path | None = None) -> Path:
    """The cached GitHub archive of a commit, downloaded over HTTPS when missing."""
    import urllib.request

    path = archive_path(src, cache_dir)
    if path.is_file():
        logger.info("%s: using cached archive %s", src, path)
        return path
    url = GITHUB_ARCHIVE_URL.format(owner=src.owner, repo=src.repo, revision=src.revision)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        logger.info("%s: downloading %s", src, url)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as response:  # noqa: S310 (fixed https URL)
            shutil.copyfileobj(response, out)
        with tarfile.open(tmp, "r:gz"):
            pass  # a truncated or HTML answer fails here, not in a later job
        os.replace(tmp, path)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        raise RetrieveError(
            f"{src}: could not download {url} ({type(exc).__name__}: {exc}). On a machine without internet, "
            f"download that archive elsewhere and place it at {path} (README: Fetching weights and data)."
        ) from exc
    return path


def _archive_rows(src: RemoteSource, path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Problem files of the KernelBench tree in a GitHub archive, verbatim (bytes decoded as UTF-8)."""
    rows: list[dict[str, Any]] = []
    checksums: dict[str, str] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                match = _TREE_FILE.match(member.name)
                if not member.isfile() or match is None or match.group(2) == "__init__":
                    continue
                data = tar.extractfile(member).read()
                rel = member.name.split("/", 1)[1]
                checksums[rel] = hashlib.sha256(data).hexdigest()
                rows.append({"code": data.decode("utf-8"), "level": int(match.group(1)), "name": match.group(2)})
            # git archive records the commit in the pax global header (git get-tar-commit-id)
            recorded = tar.pax_headers.get("comment")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise RetrieveError(f"{src}: {path} is not a readable tar.gz archive ({exc}); delete it to download it again") from exc
    if recorded and not _COMMIT.match(recorded):
        recorded = None
    if recorded and _COMMIT.match(src.revision) and recorded != src.revision:
        raise RetrieveError(f"{src}: {path} is the archive of commit {recorded}, not {src.revision}")
    if not rows:
        raise RetrieveError(f"{src}: {path} holds no KernelBench/level*/*.py problem files")
    commit = recorded or (src.revision if _COMMIT.match(src.revision) else None)
    info = {
        "url": GITHUB_ARCHIVE_URL.format(owner=src.owner, repo=src.repo, revision=src.revision),
        "archive": str(path),
        "archive_sha256": sha256_file(path),
        "commit": commit,
        "files": dict(sorted(checksums.items())),
    }
    return rows, info


def suite_rows(records: Iterable[Mapping[str, Any]], origin: str) -> list[dict[str, Any]]:
    """KernelBench rows in the project's layout (code, level, name without '.py', problem_id),
    checked (a name's id is its problem_id, no id twice in a level) and sorted by level and id."""
    from testtime.tasks.task import parse_stem

    rows = []
    for record in records:
        name = str(record["name"])
        name = name[: -len(".py")] if name.endswith(".py") else name
        problem_id, _ = parse_stem(name)
        if record.get("problem_id") is not None and int(record["problem_id"]) != problem_id:
            raise RetrieveError(f"{origin}: row {name!r} has problem_id {record['problem_id']}")
        rows.append({"code": str(record["code"]), "level": int(record["level"]), "name": name, "problem_id": problem_id})
    keys = [(r["level"], r["problem_id"]) for r in rows]
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise RetrieveError(f"{origin}: (level, problem_id) {duplicates} appear twice")
    return sorted(rows, key=lambda r: (r["level"], r["problem_id"]))


def write_suite(rows: list[dict[str, Any]], path: str | Path) -> None:
    """The suite as one parquet file in the KernelBench dataset's column layout (atomically)."""
    import pyarrow as pa

    from testtime.records import write_table_atomic

    schema = pa.schema([("code", pa.string()), ("level", pa.int64()), ("name", pa.string()), ("problem_id", pa.int64())])
    table = pa.Table.from_pylist([{c: r[c] for c in SUITE_COLUMNS} for r in rows], schema=schema)
    write_table_atomic(table, path)


def retrieve_suite(source: str, out_path: str | Path, manifest_path: str | Path, *, cache_dir: str | Path | None = None) -> dict:
    """Fetch a KernelBench suite (``hf:`` dataset or ``github:`` archive) and convert it to one
    local parquet file with columns code, level, name, problem_id (every level the source holds;
    ``prepare_tasks`` reads the configured one).

    The manifest records the resolved commit, the sha256 of every downloaded file (and of each
    problem file of an archive), the output's sha256 and, per level, the task count and the
    ``suite_revision`` that task records will carry.
    """
    from testtime.tasks.task import Task, parse_stem, suite_revision

    src = parse_source(source)
    if src.host == "hf":
        records, info = _hf_suite_rows(src, hf_cache_dir(cache_dir))
    else:
        records, info = _archive_rows(src, fetch_archive(src, cache_dir))
    rows = suite_rows(records, str(src))
    write_suite(rows, out_path)
    levels = {}
    for level in sorted({r["level"] for r in rows}):
        tasks = [Task(r["problem_id"], parse_stem(r["name"])[1], r["code"], level, "") for r in rows if r["level"] == level]
        levels[str(level)] = {"tasks": len(tasks), "suite_revision": suite_revision(tasks)}
    manifest = {
        "source": source,
        "repo_id": src.repo_id,
        "revision": src.revision,
        **info,
        "levels": levels,
        "output": {"path": str(out_path), "sha256": sha256_file(out_path)},
    }
    return _write_manifest(manifest_path, manifest, {"suite_source": {"source": source}})
