"""GPU leases: real processes contend for real lock files; no two ever hold the same device."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from testtime.gpus import GpuLeaseError, gpu_lease, local_devices
from testtime.scheduling import shard_tasks

WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    from testtime.gpus import gpu_lease
    with gpu_lease(int(sys.argv[1]), devices=sys.argv[2].split(","), lock_dir=sys.argv[3], poll_s=0.05) as lease:
        start = time.time()
        seen = os.environ["CUDA_VISIBLE_DEVICES"]
        time.sleep(float(sys.argv[4]))
        print(json.dumps({{"devices": lease.devices, "env": seen, "start": start, "end": time.time()}}))
    """
)


def run_workers(tmp_path: Path, n_workers: int, n_gpus: int, pool: str, hold_s: float) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root=str(ROOT)))
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(n_gpus), pool, str(tmp_path / "locks"), str(hold_s)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(n_workers)
    ]
    out = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    return out


def test_concurrent_jobs_never_share_a_device(tmp_path):
    leases = run_workers(tmp_path, n_workers=6, n_gpus=1, pool="0,1", hold_s=0.6)
    for rec in leases:
        assert rec["env"] == ",".join(rec["devices"]) and len(rec["devices"]) == 1
    for i, a in enumerate(leases):
        for b in leases[i + 1 :]:
            overlap = a["start"] < b["end"] and b["start"] < a["end"]
            assert not (overlap and set(a["devices"]) & set(b["devices"])), (a, b)
    # both devices were in use at the same moment (the lease does not serialise everything)
    assert any(a["start"] < b["end"] and b["start"] < a["end"] for i, a in enumerate(leases) for b in leases[i + 1 :])
    assert {d for rec in leases for d in rec["devices"]} == {"0", "1"}


def test_two_gpu_jobs_take_disjoint_pairs(tmp_path):
    leases = run_workers(tmp_path, n_workers=3, n_gpus=2, pool="0,1,2,3", hold_s=0.5)
    for i, a in enumerate(leases):
        assert len(set(a["devices"])) == 2
        for b in leases[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                assert not set(a["devices"]) & set(b["devices"])


def test_a_killed_job_frees_its_device(tmp_path):
    script = tmp_path / "holder.py"
    script.write_text(
        f"import sys, time\nsys.path.insert(0, {str(ROOT)!r})\nfrom testtime.gpus import gpu_lease\n"
        f"with gpu_lease(1, devices=['0'], lock_dir={str(tmp_path)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(GpuLeaseError, match="no 1 free GPU"):
            with gpu_lease(1, devices=["0"], lock_dir=tmp_path, timeout_s=0.3, poll_s=0.05):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with gpu_lease(1, devices=["0"], lock_dir=tmp_path, timeout_s=5) as lease:
        assert lease.devices == ["0"]


def test_environment_is_restored_and_cpu_jobs_lease_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with gpu_lease(0) as lease:
        assert lease.devices == [] and os.environ["CUDA_VISIBLE_DEVICES"] == "7"
    with gpu_lease(1, devices=["3", "5"], lock_dir=tmp_path) as lease:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3" == lease.devices[0]
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "7"


def test_too_few_devices_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("TESTTIME_GPUS", "1")
    assert local_devices() == ["0"]
    with pytest.raises(GpuLeaseError, match="needs 2 GPU"):
        with gpu_lease(2, lock_dir=tmp_path):
            pass


def test_under_slurm_the_assigned_devices_are_checked(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with gpu_lease(1) as lease:
        assert lease.source == "slurm" and lease.devices == ["1"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    with pytest.raises(GpuLeaseError, match="SLURM job 12"):
        with gpu_lease(1):
            pass


def test_local_devices_order_of_sources(monkeypatch):
    monkeypatch.setenv("TESTTIME_GPUS", "2,5")
    assert local_devices() == ["2", "5"]
    monkeypatch.delenv("TESTTIME_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert local_devices() == ["4", "6"]


@pytest.mark.parametrize("n_tasks, n_shards", [(5, 5), (20, 5), (7, 3), (2, 5), (1, 1)])
def test_shards_partition_the_tasks_without_splitting_one(n_tasks, n_shards):
    ids = [i * 3 for i in range(n_tasks)] * 4  # each task appears once per sample
    parts = [shard_tasks(ids, s, n_shards) for s in range(n_shards)]
    assert sorted(t for p in parts for t in p) == sorted(set(ids))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    assert all(p == sorted(p) for p in parts)


def test_bad_shard_index_is_rejected():
    with pytest.raises(ValueError, match="shard 3 of 3"):
        shard_tasks([1, 2], 3, 3)
