"""The workflow on a real single-node SLURM cluster, through profiles/slurm.

The module's fixture starts munged, slurmctld and slurmd (scripts/slurm_up.sh: installs the
Debian packages when missing, declares two fake GPUs through gres), runs the tiny end-to-end
config through ``--profile profiles/slurm`` with the evaluation stage asking for a GPU, and
stops only the daemons it started (scripts/slurm_down.sh). Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, copy_repo

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

SLURM_FLAGS = [
    "--profile",
    "profiles/slurm",
    # jobs here take seconds, not hours: poll early (the cluster keeps finished jobs 300 s)
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--latency-wait",
    "5",
]
GPU_EVAL = "resources:\n  evaluation:\n    gpus: 1\n"
UP_TIMEOUT_S = 900  # apt-get on a cold machine included
RUN_TIMEOUT_S = 900


def _can_administer() -> bool:
    if os.geteuid() == 0:
        return True
    return shutil.which("sudo") is not None and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def cluster():
    """A running single-node cluster; the daemons this fixture started are stopped afterwards."""
    if not _can_administer():
        pytest.skip("starting SLURM daemons needs root or passwordless sudo")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("SLURM is not installed and there is no apt-get to install it (Debian/Ubuntu only)")
    start = time.monotonic()
    up = subprocess.run(["bash", str(ROOT / "scripts/slurm_up.sh")], capture_output=True, text=True, timeout=UP_TIMEOUT_S)
    if up.returncode in (3, 4):
        pytest.skip(f"cannot start a test cluster here: {up.stderr.strip().splitlines()[-1]}")
    assert up.returncode == 0, f"slurm_up.sh failed:\n{up.stderr[-4000:]}"
    seconds = time.monotonic() - start
    print(f"\nSLURM test cluster up in {seconds:.1f} s", file=sys.stderr)
    try:
        yield {"up_seconds": seconds, "log": up.stderr}
    finally:
        down = subprocess.run(["bash", str(ROOT / "scripts/slurm_down.sh")], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr


def fresh_copy(base: Path, name: str) -> Path:
    return copy_repo(base / name)


def snakemake_on_slurm(
    work: Path, targets: list[str], override: str, limit_s: int = RUN_TIMEOUT_S
) -> tuple[subprocess.CompletedProcess, float]:
    """snakemake under a hard timeout: SIGTERM alone does not stop it while it waits for jobs."""
    (work / "override.yaml").write_text(override)
    cmd = [
        "timeout",
        "-k",
        "10",
        str(limit_s),
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        *SLURM_FLAGS,
        "--configfile",
        "config/test/config.yaml",
        "override.yaml",
    ]
    start = time.monotonic()
    out = subprocess.run(
        cmd, cwd=work, capture_output=True, text=True, timeout=limit_s + 60, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    return out, time.monotonic() - start


def gpus_requested(job_id: str) -> str:
    """What a job asked SLURM for in GPUs ('' for none), read back from slurmctld (finished jobs
    stay visible for MinJobAge = 300 s)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    found = re.search(r"\bTresPerJob=(\S*gpu\S*)", out.stdout)
    return found.group(1) if found else ""


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    work = fresh_copy(tmp_path_factory.mktemp("slurm"), "repo")
    out, seconds = snakemake_on_slurm(work, ["figures/fig4.pdf"], GPU_EVAL)
    print(f"tiny end-to-end run through profiles/slurm: {seconds:.1f} s", file=sys.stderr)
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-6000:])
    return work, out.stdout + out.stderr


def test_jobs_ran_as_slurm_jobs(slurm_run):
    work, text = slurm_run
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", text)
    ids = [job for job, _ in submitted]
    # prepare_tasks, materialize_model, 2 x sample, 2 x evaluate, select_samples; merges and fig4 are local
    assert len(ids) == 7, text[-3000:]
    assert sorted(rule for _, rule in submitted) == sorted(
        ["prepare_tasks", "materialize_model", "sample", "sample", "evaluate", "evaluate", "select_samples"]
    )
    assert (work / "figures/fig4.pdf").read_bytes().startswith(b"%PDF")
    # every job's own log names the SLURM job it ran in, and those are the ids snakemake submitted
    in_logs = set()
    local = ("fig4.log", "merge_evaluations", "/slurm/")  # localrules, and SLURM's own output files
    for log in (work / "results/logs").rglob("*.log"):
        found = re.findall(r"job environment: .*SLURM_JOB_ID=(\d+)", log.read_text())
        if not any(part in str(log) for part in local):
            assert len(found) == 1, f"{log} has no SLURM job id"
        in_logs.update(found)
    assert in_logs == set(ids)
    # and the SLURM logs are kept under the profile's slurm-logdir
    assert len(list((work / "results/logs/slurm").rglob("*.log"))) == 7


def test_gpu_job_sees_its_gpu_and_cpu_jobs_get_none(slurm_run):
    work, text = slurm_run
    devices = []
    for log in sorted((work / "results/logs/evaluate").rglob("*.log")):
        body = log.read_text()
        job = re.search(r"job environment: .*SLURM_JOB_ID=(\d+)", body).group(1)
        visible = re.search(r"job environment: .*CUDA_VISIBLE_DEVICES=(\S+)", body)
        assert visible, f"{log}: no CUDA_VISIBLE_DEVICES in a job that asked for a GPU"
        assert "source=slurm" in body  # the lease checked SLURM's assignment
        assert gpus_requested(job) == "gres:gpu:1"
        devices.append(visible.group(1))
    assert len(devices) == 2 and all(d in ("0", "1") for d in devices)
    for log in (work / "results/logs/sample").rglob("*.log"):
        env_line = re.search(r"job environment: .*", log.read_text()).group(0)
        assert gpus_requested(re.search(r"SLURM_JOB_ID=(\d+)", env_line).group(1)) == ""
        assert not re.search(r"CUDA_VISIBLE_DEVICES=\d", env_line)  # a CPU job is given no GPU


def test_results_match_a_local_run_in_shape(slurm_run):
    work, _ = slurm_run
    evals = pd.read_parquet(work / "results/evaluations/smollm2-135m/bundled/seed42.parquet")
    assert len(evals) == 2 * 4  # subset_size 2, k 4
    table = pd.read_csv(work / "results/tables/smollm2-135m/bundled/table3.csv")
    assert (table["n_seeds"] == 2).all()


def test_a_failing_job_fails_the_run_instead_of_hanging(cluster, tmp_path):
    work = fresh_copy(tmp_path, "repo")
    # an offset past the suite's eval tasks: prepare_tasks raises inside its SLURM job
    bad = "suites:\n  bundled:\n    source: bundled\n    subset_offset: 1000\n"
    out, seconds = snakemake_on_slurm(work, ["results/tasks/bundled/tasks.parquet"], bad, limit_s=300)
    text = out.stdout + out.stderr
    assert out.returncode not in (0, 124, 137), f"rc {out.returncode} after {seconds:.0f} s:\n{text[-3000:]}"
    assert re.search(r"SLURM-job '\d+' failed", text), text[-3000:]
    assert "Error in rule prepare_tasks" in text
    assert "selects no eval task" in (work / "results/logs/prepare_tasks/bundled.log").read_text()
    assert seconds < 240
