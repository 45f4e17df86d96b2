"""GPU leases for jobs that run side by side on one machine.

Snakemake schedules against a `gpu` resource (``--resources gpu=N``) but never tells a job
*which* GPU to use (snakemake#281), so two 1-GPU jobs on a 2-GPU workstation would both land on
device 0. :func:`gpu_lease` gives each job its own devices: it takes an exclusive ``flock`` on
one lock file per device in a host-wide directory, picks the first free ones, and sets
``CUDA_VISIBLE_DEVICES`` to them for the job and every process it starts. Call it before
anything initialises CUDA (``import torch`` is fine; ``torch.cuda.*`` calls are not)::

    with gpu_lease(snakemake.resources.get("gpu", 0)) as devices:
        run_the_job()

Locks are released when the block ends or the process dies (the kernel drops ``flock``s), so a
killed job never leaves a device taken. Under SLURM (``SLURM_JOB_ID`` set) the scheduler has
already restricted the job to its devices; the lease then only checks that they are there.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_DIR_ENV = "TESTTIME_GPU_LOCK_DIR"
DEVICES_ENV = "TESTTIME_GPUS"


class GpuLeaseError(RuntimeError):
    pass


@dataclass
class Lease:
    """The devices a job holds: ids as CUDA_VISIBLE_DEVICES lists them, and their UUIDs if known."""

    devices: list[str]
    uuids: list[str] = field(default_factory=list)
    source: str = "local"  # "local" (lock files), "slurm" (scheduler-assigned) or "none" (CPU job)
    acquired_at: float = 0.0

    def describe(self) -> str:
        uuids = f" uuids={','.join(self.uuids)}" if self.uuids else ""
        return f"CUDA_VISIBLE_DEVICES={','.join(self.devices) or '<none>'} source={self.source}{uuids}"


def default_lock_dir() -> Path:
    """Host-local and shared by every job of every user on the machine (devices are host-wide)."""
    return Path(os.environ.get(LOCK_DIR_ENV, "/tmp/testtime-gpu-locks"))


def _nvidia_smi_devices() -> list[tuple[str, str]]:
    """(index, uuid) of every GPU the driver sees, ignoring CUDA_VISIBLE_DEVICES."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [tuple(part.strip() for part in line.split(",", 1)) for line in out.splitlines() if "," in line]  # type: ignore[misc]


def local_devices() -> list[str]:
    """Device ids jobs on this host may use, most explicit source first.

    ``TESTTIME_GPUS`` ("0,1" or a count "2"); else the ``CUDA_VISIBLE_DEVICES`` the workflow was
    started with (a user restricting it to a subset); else every GPU ``nvidia-smi`` lists; else
    the entries of /proc/driver/nvidia/gpus.
    """
    explicit = os.environ.get(DEVICES_ENV, "").strip()
    if explicit:
        return [str(i) for i in range(int(explicit))] if explicit.isdigit() and "," not in explicit else _split(explicit)
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    if inherited is not None and inherited.strip() not in ("", "-1"):
        return _split(inherited)
    smi = _nvidia_smi_devices()
    if smi:
        return [index for index, _ in smi]
    proc = Path("/proc/driver/nvidia/gpus")
    return [str(i) for i in range(len(list(proc.iterdir())))] if proc.is_dir() else []


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def _uuids(devices: list[str]) -> list[str]:
    """UUIDs of the leased devices, for logs and provenance (empty when nvidia-smi is absent)."""
    table = dict(_nvidia_smi_devices())
    by_uuid = {uuid: uuid for uuid in table.values()}
    return [table.get(d) or by_uuid.get(d, "") for d in devices if table.get(d) or by_uuid.get(d)]


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()} {os.environ.get('SNAKEMAKE_JOB', '')}\n".encode())
    return fd


def _lock_name(device: str) -> str:
    return "gpu-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in device) + ".lock"


@contextlib.contextmanager
def gpu_lease(
    n_gpus: int,
    *,
    devices: list[str] | None = None,
    lock_dir: str | Path | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
) -> Iterator[Lease]:
    """Hold ``n_gpus`` devices of this host for the duration of the block.

    Sets ``CUDA_VISIBLE_DEVICES`` to the leased ids (restored afterwards). Waits while other
    jobs hold the devices, up to ``timeout_s`` seconds (None: ``TESTTIME_GPU_LEASE_TIMEOUT_S``
    or 24 h), then raises GpuLeaseError. ``n_gpus == 0`` leases nothing.
    """
    if n_gpus < 0:
        raise ValueError(f"n_gpus must be >= 0, got {n_gpus}")
    previous = os.environ.get("CUDA_VISIBLE_DEVICES")

    def restore() -> None:
        if previous is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = previous

    if n_gpus == 0:
        # A CPU job: nothing to lease, and the environment is left as it is (config validation
        # already refuses a CUDA device for a stage that requests no GPU).
        yield Lease([], source="none", acquired_at=time.time())
        return

    if os.environ.get("SLURM_JOB_ID") and devices is None:
        # SLURM (gres/gpu) already confined the job; check it was given what it asked for.
        assigned = _split(previous or "")
        if len(assigned) < n_gpus:
            raise GpuLeaseError(
                f"job asked for {n_gpus} GPU(s) but SLURM job {os.environ['SLURM_JOB_ID']} sees "
                f"CUDA_VISIBLE_DEVICES={previous!r}; request GPUs through the stage's resources.<stage>.gpus"
            )
        yield Lease(assigned, _uuids(assigned), source="slurm", acquired_at=time.time())
        return

    pool = list(devices) if devices is not None else local_devices()
    if len(pool) < n_gpus:
        raise GpuLeaseError(
            f"job needs {n_gpus} GPU(s) but this host offers {len(pool)} ({','.join(pool) or 'none found'}); "
            f"set {DEVICES_ENV} or CUDA_VISIBLE_DEVICES, or lower resources.<stage>.gpus"
        )
    directory = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        directory.chmod(0o1777)  # other users' jobs share the devices, hence the locks
    limit = timeout_s if timeout_s is not None else float(os.environ.get("TESTTIME_GPU_LEASE_TIMEOUT_S", 86400))
    deadline = time.monotonic() + limit
    held: dict[str, int] = {}
    waited = False
    try:
        while True:
            for device in pool:
                if len(held) == n_gpus:
                    break
                if device not in held:
                    fd = _try_lock(directory / _lock_name(device))
                    if fd is not None:
                        held[device] = fd
            if len(held) == n_gpus:
                break
            # Give back partial holdings so two jobs each holding one of two devices cannot deadlock.
            for fd in held.values():
                os.close(fd)
            held.clear()
            if time.monotonic() >= deadline:
                raise GpuLeaseError(f"no {n_gpus} free GPU(s) among {pool} after {limit:.0f} s (locks in {directory})")
            if not waited:
                logger.info("waiting for %d free GPU(s) among %s", n_gpus, pool)
                waited = True
            time.sleep(poll_s)
        leased = [d for d in pool if d in held]
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(leased)
        lease = Lease(leased, _uuids(leased), source="local", acquired_at=time.time())
        logger.info("GPU lease acquired: %s", lease.describe())
        yield lease
    finally:
        for fd in held.values():
            os.close(fd)
        restore()
        if held:
            logger.info("GPU lease released: %s", ",".join(held))
