"""Cost of running the workflow through SLURM instead of locally, on a single-node test cluster.

Prints: time to a working cluster (scripts/slurm_up.sh), wall time of one job (prepare_tasks)
and of the tiny end-to-end config (config/test/config.yaml, figures/fig4.pdf) run locally and
through profiles/slurm, and the overhead per SLURM job and per DAG level. Needs root (or sudo)
on Debian/Ubuntu; stops the daemons it started.

    python benchmarks/bench_slurm.py [--skip-e2e]
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench_slurm")
SLURM = ["--profile", "profiles/slurm", "--slurm-init-seconds-before-status-checks", "1", "--latency-wait", "5"]
TINY = ["--configfile", "config/test/config.yaml"]


def copy(base: Path, name: str) -> Path:
    work = base / name
    shutil.copytree(
        ROOT,
        work,
        ignore=shutil.ignore_patterns(
            "results", ".snakemake", ".pytest_cache", ".git", "figures", "__pycache__", ".venv", ".wheels"
        ),
    )
    (work / "figures").mkdir(exist_ok=True)
    return work


def timed(cmd: list[str], cwd: Path, limit: int = 1200) -> tuple[float, str]:
    start = time.monotonic()
    out = subprocess.run(["timeout", "-k", "10", str(limit), *cmd], cwd=cwd, capture_output=True, text=True)
    wall = time.monotonic() - start
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-5000:])
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({out.returncode})")
    return wall, out.stdout + out.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-e2e", action="store_true", help="only the one-job comparison")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    smk = [sys.executable, "-m", "snakemake"]
    base = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    up, _ = timed(["bash", str(ROOT / "scripts/slurm_up.sh")], ROOT, 900)
    rows = [("slurm_up.sh (cluster working; packages already installed unless first run)", up, "")]
    try:
        target = ["results/tasks/bundled/tasks.parquet"]
        local1, _ = timed([*smk, *target, "-c1", *TINY], copy(base, "local1"))
        slurm1, text = timed([*smk, *target, *SLURM, *TINY], copy(base, "slurm1"))
        assert len(re.findall(r"submitted with SLURM jobid", text)) == 1
        rows += [
            ("one job (prepare_tasks), local", local1, ""),
            ("one job (prepare_tasks), SLURM", slurm1, f"overhead {slurm1 - local1:.1f} s"),
        ]
        if not args.skip_e2e:
            local, _ = timed([*smk, "figures/fig4.pdf", "-c2", *TINY], copy(base, "local"))
            slurm, text = timed([*smk, "figures/fig4.pdf", *SLURM, *TINY], copy(base, "slurm"))
            n = len(re.findall(r"submitted with SLURM jobid", text))
            levels = 4  # tasks+model | sample | evaluate | select_samples (merges and figure run locally)
            rows += [
                ("tiny end-to-end (10 jobs), local -c2", local, ""),
                (
                    f"tiny end-to-end, SLURM ({n} sbatch jobs)",
                    slurm,
                    f"overhead {slurm - local:.1f} s = {(slurm - local) / n:.1f} s per job, {(slurm - local) / levels:.1f} s per DAG level",
                ),
            ]
    finally:
        subprocess.run(["bash", str(ROOT / "scripts/slurm_down.sh")], capture_output=True, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
    print("\n== SLURM vs local (2-core machine; shared load inflates both)")
    for label, seconds, note in rows:
        print(f"{label:<75} {seconds:7.1f} s  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
