"""Check profiles/workstation on a multi-GPU machine: GPU evaluation jobs run at once, each on its own GPU.

Runs the real workflow (Snakefile, rules, workflow_scripts, the hardened evaluator on CUDA) in a
fresh copy of the repository:

1. ``prepare_tasks`` builds the bundled suite (4 eval tasks);
2. this script writes reference-equivalent samples for seeds 42 and 43 (the forward body of each
   reference, as scripts/gpu_validation.py does), so no language model is needed on the GPU box;
3. ``snakemake --profile profiles/workstation`` evaluates them on CUDA: 2 seeds x 2 shards = 4
   `evaluate` jobs asking for 1 GPU each, at most ``--gpus`` at a time.

It then proves from the jobs' own logs (lease acquired/released with timestamps, the
CUDA_VISIBLE_DEVICES and GPU UUID of each) that two jobs held different GPUs at the same time and
that no two jobs ever held the same GPU at once; an ``nvidia-smi`` monitor sampled during the run
shows compute processes on two GPUs at the same instant. Exit status 0 when all checks pass.

    PYTHONPATH=. python scripts/gpu_workstation_check.py            # needs snakemake, pyarrow, scipy, jsonschema
    bash scripts/gpu_workstation_check.sh                           # same, installing those from .wheels/ first
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("gpu_workstation_check")
LEASE = re.compile(
    r"^(\S+ \S+) testtime\.gpus INFO GPU lease acquired: CUDA_VISIBLE_DEVICES=(\S+) source=(\w+)(?: uuids=(\S+))?", re.M
)
RELEASE = re.compile(r"^(\S+ \S+) testtime\.gpus INFO GPU lease released: (\S+)", re.M)


def stamp(text: str) -> float:
    return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def snakemake(args: list[str], cwd: Path, timeout: int) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "10", str(timeout), sys.executable, "-m", "snakemake", *args]
    log.info("$ %s", " ".join(cmd[4:]))
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-5000:] + out.stderr[-8000:])
        raise SystemExit(f"snakemake failed with exit status {out.returncode}")
    return out


def write_samples(work: Path, seeds: list[int], k: int) -> None:
    """Reference-equivalent candidates (correct by construction) as the sample rule would write them."""
    import pandas as pd

    from testtime.prompting import reference_forward_body
    from testtime.records import read_parquet, write_parquet

    tasks = read_parquet(work / "results/tasks/bundled/tasks.parquet")
    split = json.loads((work / "results/tasks/bundled/split.json").read_text())
    chosen = tasks[tasks["selected"]]
    for seed in seeds:
        rows = [
            {
                "model": "smollm2-135m",
                "suite": "bundled",
                "seed": seed,
                "problem_id": t.problem_id,
                "sample_index": i,
                "raw_action": reference_forward_body(t.code),
                "completion": reference_forward_body(t.code),
                "lp_sum": -1.0 - i,
                "lp_mean": -0.1 - i / 100,
                "n_tokens": 10,
                "finish_reason": "stop",
            }
            for t in chosen.itertuples()
            for i in range(k)
        ]
        path = work / f"results/samples/smollm2-135m/bundled/seed{seed}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        prov = {
            "model": "smollm2-135m",
            "suite": "bundled",
            "suite_revision": split["suite_revision"],
            "seed": seed,
            "note": "reference-equivalent samples written by scripts/gpu_workstation_check.py",
        }
        write_parquet(pd.DataFrame(rows), path, prov)
    log.info("wrote %d samples per seed for tasks %s", len(chosen) * k, list(chosen["problem_id"]))


def start_monitor(path: Path) -> subprocess.Popen | None:
    if not shutil.which("nvidia-smi"):
        log.warning("no nvidia-smi: skipping the process monitor")
        return None
    out = open(path, "w")
    return subprocess.Popen(
        ["nvidia-smi", "--query-compute-apps=timestamp,gpu_uuid,pid,process_name", "--format=csv,noheader", "-lms", "200"],
        stdout=out,
        stderr=subprocess.DEVNULL,
    )


def leases(work: Path) -> list[dict]:
    found = []
    for path in sorted((work / "results/logs/evaluate").rglob("*.log")):
        text = path.read_text()
        acquired, released = LEASE.findall(text), RELEASE.findall(text)
        job = re.search(r"job environment: (.*)", text)
        if len(acquired) != 1 or len(released) != 1:
            raise SystemExit(f"{path}: expected one GPU lease acquired and released, found {len(acquired)}/{len(released)}")
        (t0, devices, source, uuids), (t1, _) = acquired[0], released[0]
        found.append(
            {
                "job": str(path.relative_to(work / "results/logs/evaluate")),
                "devices": devices,
                "source": source,
                "uuids": uuids or "",
                "start": stamp(t0),
                "end": stamp(t1),
                "env": job.group(1) if job else "",
            }
        )
    return found


def overlaps(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def monitor_summary(path: Path) -> tuple[int, dict[str, int]]:
    """Most GPUs that had compute processes at one sampled instant, and samples seen per GPU."""
    by_time: dict[str, set[str]] = {}
    per_gpu: dict[str, int] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3 and parts[1].startswith("GPU-"):
            by_time.setdefault(parts[0], set()).add(parts[1])
            per_gpu[parts[1]] = per_gpu.get(parts[1], 0) + 1
    return max((len(v) for v in by_time.values()), default=0), per_gpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gpus", type=int, default=2, help="GPUs the workstation profile may use at once")
    parser.add_argument("--shards", type=int, default=2, help="evaluation jobs per seed")
    parser.add_argument("--k", type=int, default=8, help="samples per task")
    parser.add_argument("--workdir", type=Path, default=None, help="where the repository copy goes (default: a temp dir)")
    parser.add_argument("--timeout", type=int, default=1500, help="seconds for the evaluation run")
    parser.add_argument(
        "--device",
        default="cuda",
        help="evaluation device; 'cpu' dry-runs the check's plumbing on a machine without GPUs (fake device ids)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="gpu-ws-check-"))) / "repo"
    shutil.copytree(
        ROOT,
        work,
        ignore=shutil.ignore_patterns(
            "results", ".snakemake", ".pytest_cache", ".git", "figures", "__pycache__", ".venv", ".wheels"
        ),
    )
    (work / "figures").mkdir(exist_ok=True)
    (work / "check.yaml").write_text(
        "# scripts/gpu_workstation_check.py: bundled suite, 4 eval tasks, evaluation on CUDA, 1 GPU per job\n"
        "models:\n  smollm2-135m:\n    source: unused-samples-are-written-by-the-check\n    materialize: false\n"
        "suites:\n  bundled:\n    source: bundled\n    subset_size: 4\n"
        f"sampling:\n  k: {args.k}\n"
        f"evaluation:\n  device: {args.device}\n  memory_mb: 0\n  dedupe: false\n  timing_pairs: 5\n  warmup: 3\n"
        f"resources:\n  evaluation:\n    gpus: 1\n    shards: {args.shards}\n    threads: 1\n"
    )
    seeds = [42, 43]
    lock_dir = Path(tempfile.mkdtemp(prefix="gpu-locks-"))  # isolated from other users' jobs
    os.environ["TESTTIME_GPU_LOCK_DIR"] = str(lock_dir)
    if args.device == "cpu":
        os.environ.setdefault("TESTTIME_GPUS", str(args.gpus))  # plumbing check only: fake device ids

    snakemake(["results/tasks/bundled/tasks.parquet", "--cores", "2", "--configfile", "check.yaml"], work, 600)
    write_samples(work, seeds, args.k)
    targets = [f"results/evaluations/smollm2-135m/bundled/seed{s}.parquet" for s in seeds]
    monitor_path = work / "nvidia-smi-apps.csv"
    monitor = start_monitor(monitor_path) if args.device != "cpu" else None
    t0 = time.time()
    try:
        out = snakemake(
            [
                *targets,
                "--profile",
                "profiles/workstation",
                "--resources",
                f"gpu={args.gpus}",
                "--allowed-rules",
                "evaluate",
                "merge_evaluations",
                "--configfile",
                "check.yaml",
            ],
            work,
            args.timeout,
        )
    finally:
        if monitor:
            monitor.terminate()
            monitor.wait(timeout=30)
    wall = time.time() - t0
    n_jobs = len(re.findall(r"^rule evaluate:", out.stdout + out.stderr, re.M)) or len(
        list((work / "results/logs/evaluate").rglob("*.log"))
    )

    found = leases(work)
    failures = []
    for rec in found:
        log.info(
            "%-28s GPU %s %-12s %s  %.1f-%.1f s",
            rec["job"],
            rec["devices"],
            rec["source"],
            rec["uuids"],
            rec["start"] - t0,
            rec["end"] - t0,
        )
    if len(found) != len(seeds) * args.shards:
        failures.append(f"expected {len(seeds) * args.shards} evaluate jobs with a lease, found {len(found)}")
    if any(r["source"] != "local" or "," in r["devices"] for r in found):
        failures.append("every job should hold exactly one locally leased GPU")
    pairs = [(a, b) for i, a in enumerate(found) for b in found[i + 1 :] if overlaps(a, b)]
    clashes = [
        (a["job"], b["job"]) for a, b in pairs if a["devices"] == b["devices"] or (a["uuids"] and a["uuids"] == b["uuids"])
    ]
    concurrent = [(a["job"], b["job"], a["devices"], b["devices"]) for a, b in pairs if a["devices"] != b["devices"]]
    if clashes:
        failures.append(f"jobs held the same GPU at the same time: {clashes}")
    if not concurrent:
        failures.append("no two GPU jobs ran at the same time")
    most, per_gpu = monitor_summary(monitor_path)
    if monitor and per_gpu and most < 2:
        failures.append(f"nvidia-smi never saw compute processes on two GPUs at once (per GPU: {per_gpu})")

    import pandas as pd

    from testtime.records import read_provenance

    for target in targets:
        records = pd.read_parquet(work / target)
        prov = read_provenance(work / target)
        gpus = sorted({(s.get("gpu"), (s.get("job") or {}).get("CUDA_VISIBLE_DEVICES")) for s in prov.get("shards", [])}, key=str)
        log.info(
            "%s: %d records, %d correct, device %s, shards ran on %s",
            target,
            len(records),
            int(records["correct"].sum()),
            prov.get("device"),
            gpus,
        )
        if prov.get("device") != args.device or not records["correct"].any():
            failures.append(f"{target}: expected CUDA evaluation records with correct reference-equivalent candidates")

    print("\n== gpu_workstation_check summary")
    print(f"evaluate jobs: {len(found)} ({n_jobs} started), wall {wall:.1f} s, --resources gpu={args.gpus}")
    print(f"overlapping pairs on different GPUs: {len(concurrent)}; same-GPU overlaps: {len(clashes)}")
    for job_a, job_b, dev_a, dev_b in concurrent[:4]:
        print(f"  {job_a} (GPU {dev_a}) || {job_b} (GPU {dev_b})")
    print(f"nvidia-smi: most GPUs busy at one instant = {most}; samples per GPU = {per_gpu or 'n/a'}")
    for rec in found:
        print(
            f"  {rec['job']}: CUDA_VISIBLE_DEVICES={rec['devices']} uuid={rec['uuids'] or '?'} "
            f"[{rec['start'] - t0:6.1f}, {rec['end'] - t0:6.1f}] s"
        )
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("OK: GPU evaluation jobs ran at the same time on different GPUs, never two on one GPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
