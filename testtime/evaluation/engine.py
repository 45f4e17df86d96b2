"""The trusted side of evaluation: spawn workers, compare outputs, time, write verdicts.

One :class:`Evaluator` serves one task. It forks a reference worker once (it never sees
candidate code) and keeps the reference outputs of every input set. For each candidate it
screens the code, forks a fresh candidate worker, checks its outputs on every set against the
reference, then times reference and candidate alternately on fresh input sets, judging the
output of every timed call. On a CPU the time is this process's own clock around each call
(``Evaluator._time_given``): nothing the candidate's process reports is used. Every failure is
a record, never an exception.

Two protocols share this engine (``EvalSettings.protocol``):
- ``hardened`` (default): static screen, wide-distribution trials, integrity checks after every
  call, interleaved timing with a median of per-pair ratios and a bootstrap CI, timed-output
  verification, TF32 off, integer inputs kept.
- ``kernelbench``: KernelBench's semantics (trial counts from config, mean of candidate trials
  then mean of reference trials, all inputs cast to fp32, PyTorch's TF32 default, grad enabled)
  without our defences, so a user can see how the paper's numbers arise. Isolation stays.
"""

from __future__ import annotations

import ast
import fcntl
import gc
import logging
import math
import mmap
import os
import secrets
import select
import shutil
import signal
import socket
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from testtime.evaluation import sandbox, wire
from testtime.evaluation.screen import screen
from testtime.evaluation.worker import supervise
from testtime.prompting import parse_untrusted

logger = logging.getLogger(__name__)

KB_TOLERANCES = {"float32": (1e-4, 1e-4), "float16": (1e-2, 1e-2), "bfloat16": (1e-2, 1e-2)}

# --- timing and forgery constants (named so that each threshold carries its reason) ---------------
# CPU (parent's clock): a call's time after the harness's calibrated share is taken out is at least
# this; below the jitter of that share (~10 us on an idle pipe) a kernel cannot be resolved anyway.
MIN_TIMED_NS = 1_000
# GPU (parent's clock, ``Evaluator._time_clocked``): a timed window is a batch of calls, as many as
# make the reference's batch last about this long, so that the round trips and the snapshot around
# it (tens of microseconds, calibrated by an echo and subtracted) are a small share of it ...
CLOCK_BATCH_NS = 10_000_000
# ... with at most this many outputs in a worker's stack, and at most this many bytes of them.
CLOCK_MAX_SLOTS = 64
CLOCK_STACK_BYTES = 512 * 1024 * 1024
# The GPU-timeline clock (``gpu_clock: timeline``): the timed worker reads its inputs from buffers
# of the clock process, at most this many bytes of them per timed worker ...
CLOCK_INPUT_BYTES = 1024 * 1024 * 1024
# ... and the clock holds the GPU this long before each window (doubled, up to the maximum, after a
# window whose start had passed before the clock could queue its end: the host was slower than the
# gate, and the GPU may have idled inside the window).
CLOCK_GATE_NS = 2_000_000
CLOCK_GATE_MAX_NS = 64_000_000
GPU_CLOCKS = ("timeline", "host")
# The batch size comes from the fastest of this many one-call windows and echoes of the reference.
BATCH_PROBES = 3
# Async-escape check (GPU): the candidate's gap between its current stream being done and the whole
# device being done may exceed the reference's own gap by ASYNC_GAP_REF_FACTOR, plus
# ASYNC_GAP_FLOOR_NS (the spec's 50 us: host-side noise of one synchronize on an idle device).
ASYNC_GAP_REF_FACTOR = 1.5
ASYNC_GAP_FLOOR_NS = 50_000
# GPU: the harness's share (the fastest echo window) is taken out of every window unless the task
# is harness-bound: decided once per task, from the reference alone before any candidate loads
# (HARNESS_PROBE_PAIRS reference and echo windows at the task's batch size), when the forwards'
# share of the reference's windows (median window - fastest echo) is under HARNESS_SIGNAL_FACTOR
# times the larger spread (max - min) of the two kinds of window. Then the difference is mostly
# noise: on an H200, identical code of the bundled tasks' CPU sizes (kernels of a few us) came out
# at 0.24x-86x with the subtraction. Harness-bound tasks compare whole windows (flag
# ``harness_bound``): identical code stays near 1.0, a real speedup is understated, never
# inflated; one decision per task keeps its candidates comparable. Measured there (docs/gpu-
# validation.md, session 6): forwards / larger spread at most 3.4 on the bundled tasks (where a
# subtraction went wrong), 2.5-40 on L1 tasks at full size, so L1 tasks near the line lose the
# subtraction, on the safe side.
HARNESS_SIGNAL_FACTOR = 4
HARNESS_PROBE_PAIRS = 8
# Between-evaluation spread (sd of log speedup) of identical code, per device, measured with
# benchmarks/bench_kernelbench_eval.py: the bootstrap CI of one evaluation's pairs alone contained
# 1.0 for 46/60 identical candidates on the 2-core CPU (p5 0.662, p95 1.104) and 35/40 on an H200;
# widened by these it must reach the nominal level (docs/evaluator.md, "Calibration"). CPU: 0.155
# reached 56/60 under a load average of 4-6 on the 2 cores (sessions 5 and 6), 0.2 reached 57/60
# on the parent's wall clock; on the workers' CPU clocks beside two busy processes (session 7)
# 0.05 reached 59/60 and 0.1 60/60. GPU-timeline clock (session 9, H200, the 20 L1 eval tasks at
# full size, 3 evaluations each): 44/60 alone, 55/60 with 0.002, 60/60 with 0.004; the host
# clock ("cuda_host") 0.0115.
CI_SPREAD = {"cpu": 0.1, "cuda": 0.004, "cuda_host": 0.0115}
# Percentile-bootstrap resamples for the speedup CI: 2000 keeps the 2.5/97.5% percentiles stable to
# about a percent for the 5-20 pairs we time, and costs milliseconds.
BOOTSTRAP_RESAMPLES = 2000
# Seeds of the wide (signed) correctness trials start this far above the normal trial seeds, so the
# two families never share a seed for any realistic correctness_trials.
WIDE_SEED_OFFSET = 1000
# CPU: before each timed round, with odds of one in this many, an untimed round on a wide set.
WIDE_ROUND_ODDS = 3
# GPU workers' resident-memory watch (_Worker.receive): RLIMIT_DATA does not see pinned host memory
# (torch.empty(..., pin_memory=True)), which the driver maps as shared memory; measured on an H200
# host, 4 GiB pinned in 2 s showed up only in RssShmem/VmRSS. So the parent reads the worker's VmRSS
# every MEMORY_POLL_MS while it waits and ends the call as ``oom`` above memory_mb plus
# GPU_RUNTIME_RSS_MB, the resident size of torch with a CUDA context (0.6 GiB measured there) with room.
MEMORY_POLL_MS = 100
GPU_RUNTIME_RSS_MB = 2048
# --- process housekeeping -------------------------------------------------------------------------
# After a read fails, how long to wait for the worker's exit status (it is normally already gone).
CRASH_REAP_S = 1.0
# A worker's keeper reports the worker's pid right after forking it.
KEEPER_START_S = 30.0
# On close: time for a worker to leave by itself after "exit", then to die after SIGKILL.
EXIT_GRACE_S = 0.5
KILL_GRACE_S = 5.0
# waitpid(WNOHANG) polling interval while reaping: short against the graces above, cheap on a CPU.
REAP_POLL_S = 0.01
# Records keep the last this-many characters of an error message (tracebacks can be huge) ...
ERROR_MESSAGE_CHARS = 2000
# ... and of a crashed or hung candidate's own output.
OUTPUT_TAIL_BYTES = 1000


@dataclass(frozen=True)
class EvalSettings:
    protocol: str = "hardened"
    device: str = "cpu"
    correctness_trials: int = 5
    wide_trials: int = 1
    wide_scale: float = 3.0
    timing_pairs: int = 5
    warmup: int = 10
    inner_repeats: int = 3  # CPU timing: a sample is the fastest of this many back-to-back calls
    tolerances: dict[str, dict[str, float]] = field(
        default_factory=lambda: {k: {"atol": a, "rtol": r} for k, (a, r) in KB_TOLERANCES.items()}
    )
    cast_integer_inputs: bool = False
    pytorch_tf32_default: bool = False
    allow_torch_compile: bool = False
    timeout_s: float = 20.0  # per request to a worker (one forward, one timed call)
    load_timeout_s: float = 120.0  # importing the candidate, including inline-CUDA compilation
    candidate_budget_s: float = 300.0  # wall-clock cap on one candidate, all phases together
    memory_mb: int = 4096
    threads: int = 1
    seed: int = 0  # base of the trial input seeds
    init_seed: int = 42
    ci_level: float = 0.95
    ci_spread: float | None = None  # between-evaluation sd of log speedups; None: CI_SPREAD of the device
    landlock: bool = True
    seccomp: bool = True  # candidate workers may not touch other processes' scheduling, limits, memory or signals
    cpu_core: int | None = None  # pin reference and candidate workers to this core (CPU timing)
    # hardened GPU timing: "timeline" (the clock process's CUDA events around the forwards on the GPU
    # timeline) or "host" (the parent's clock around whole batches, harness included)
    gpu_clock: str = "timeline"

    @classmethod
    def from_config(cls, section: dict[str, Any], device: str | None = None) -> EvalSettings:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in section.items() if k in known}
        if device is not None:
            values["device"] = device
        settings = cls(**values)
        if settings.protocol not in ("hardened", "kernelbench"):
            raise ValueError(f"evaluation.protocol: unknown protocol {settings.protocol!r}")
        if settings.gpu_clock not in GPU_CLOCKS:
            raise ValueError(f"evaluation.gpu_clock: {settings.gpu_clock!r} is not one of {', '.join(GPU_CLOCKS)}")
        return settings

    @property
    def hardened(self) -> bool:
        return self.protocol == "hardened"

    @property
    def on_gpu(self) -> bool:
        """Inputs generated on the device per call, outputs judged there by the reference worker."""
        return self.device.startswith("cuda")

    def cpu_cores(self) -> list[int]:
        """The cores reference and candidate workers are pinned to: ``cpu_core`` where given (a
        lane's core), else under the hardened protocol on a CPU the first ``threads`` cores this
        process may use (a candidate then cannot work on more cores than it is allotted)."""
        if self.cpu_core is not None:
            return [self.cpu_core]
        if self.hardened and self.device == "cpu":
            return sorted(os.sched_getaffinity(0))[: max(1, self.threads)]
        return []

    def worker_settings(self) -> dict[str, Any]:
        hardened = self.hardened
        seeds = [self.seed + i for i in range(self.correctness_trials)]
        return {
            "device": self.device,
            "memory_mb": self.memory_mb,
            "threads": self.threads,
            "init_seed": self.init_seed,
            "seeds": seeds,
            "wide_seeds": [self.seed + WIDE_SEED_OFFSET + i for i in range(self.wide_trials)] if hardened else [],
            "wide_scale": self.wide_scale,
            "cast_inputs": self.cast_integer_inputs or not hardened,
            "pytorch_tf32_default": self.pytorch_tf32_default or not hardened,
            "no_grad": hardened,
            "hardened": hardened,
            "landlock": self.landlock,
            "seccomp": self.seccomp,
            "cpu_cores": self.cpu_cores(),
            "pinned": hardened and self.device == "cpu",
            "lazy_inputs": self.on_gpu,
            "tolerances": self.tolerances,
        }


@dataclass
class EvalResult:
    correct: bool = False
    speedup: float = 0.0
    error_kind: str | None = None
    error_message: str | None = None
    runtime_us: float | None = None
    ref_runtime_us: float | None = None
    speedup_ci_low: float | None = None
    speedup_ci_high: float | None = None
    fast_1: bool = False
    fast_1_sig: bool = False
    paper_correct: bool = False  # the normal-distribution trials alone, as KernelBench would judge
    max_abs_diff: float | None = None
    trials_passed: int = 0
    harness_us: float | None = None  # CPU: the harness's share of a timed call, taken out of both sides
    runtime_trials_us: list[float] = field(default_factory=list)
    ref_runtime_trials_us: list[float] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    protocol: str = "hardened"
    timing_method: str = ""
    sandbox: str = ""
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class WorkerFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Worker:
    """A worker process under its keeper (``worker.supervise``), and the parent's end of its
    socket. ``keeper`` and ``pid`` are the two processes' ids."""

    def __init__(
        self,
        role: str,
        problem_src: str,
        candidate_src: str | None,
        settings: EvalSettings,
        scratch: str,
        seal: bool = False,
        ipc_events: bool = False,
    ):
        # a hardened candidate is checked for processes and threads after every answer (under
        # KernelBench's protocol too, whatever it started dies with it, unchecked)
        self.contained = role == "candidate" and settings.hardened
        self.role, self.scratch = role, scratch
        self.baseline_threads: int | None = None
        self.ready_scheduling: set[tuple[Any, ...]] = set()
        parent_end, child_end = socket.socketpair()
        pid_read, pid_write = os.pipe()
        worker_settings = {**settings.worker_settings(), "seal": seal, "ipc_events": ipc_events}
        # A plain fork, not multiprocessing: this class reaps its own processes, and multiprocessing
        # would keep polling (and at exit SIGTERM) pids it never saw exit.
        keeper = os.fork()
        if keeper == 0:  # pragma: no cover - runs in the child
            try:
                parent_end.close()
                os.close(pid_read)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)  # a candidate reading stdin reads nothing of the workflow's
                os.close(devnull)
                supervise(child_end, pid_write, role, problem_src, candidate_src, worker_settings, scratch)
            finally:
                os._exit(70)
        self.keeper = keeper
        self.reaped = False
        child_end.close()
        os.close(pid_write)
        try:
            # the keeper reports its worker's pid right after forking it (trusted code, no wait to speak of)
            self.pid: int | None = struct.unpack("!i", wire.read_exact(pid_read, 4, time.monotonic() + KEEPER_START_S))[0]
        except (OSError, EOFError):
            self.pid = None
        finally:
            os.close(pid_read)
        # Non-blocking, and every message read or written under one overall deadline (wire.recv):
        # a worker that sends part of a frame and stalls, or dribbles it, is a timeout like one
        # that never answers.
        parent_end.setblocking(False)
        self.sock = parent_end
        self.fd = parent_end.fileno()
        self.timeout = settings.timeout_s
        self.region: mmap.mmap | None = None
        self.copies: dict[str, bytearray] = {}  # exchange's output copies, per op
        self.mem_fd: int | None = None  # /proc/PID/mem of the worker, where exchange reads outputs
        # the largest frame accepted from it (a candidate's: set from the reference's outputs)
        self.max_message = wire.MAX_MESSAGE_BYTES
        # exchange also reads this worker's process CPU clock: always for trusted roles; for a
        # candidate sealed before it loaded, once the parent has counted its seccomp filters
        self.cpu_clock = role != "candidate"
        self.seal = seal
        # GPU: the resident-memory cap the parent enforces while waiting (CPU: RLIMIT_AS does it)
        self.rss_cap_kb = (settings.memory_mb + GPU_RUNTIME_RSS_MB) * 1024 if settings.on_gpu and settings.memory_mb > 0 else 0

    def receive(self, timeout: float | None = None) -> tuple[dict[str, Any], bytes]:
        """One whole message, which must arrive within ``timeout`` seconds from now."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        try:
            if self.rss_cap_kb:
                self._watch_memory(deadline)
            return wire.recv(self.fd, deadline, self.max_message)
        except TimeoutError:  # before OSError: it is one
            raise WorkerFailed("timeout", f"no complete answer within {timeout:.1f} s") from None
        except (EOFError, OSError):
            message = f"worker exited (status {self._reap(CRASH_REAP_S)}) without answering"
            if self.role == "reference" and (printed := _tail(os.path.join(self.scratch, "output.log"))):
                # trusted code crashed: what it printed is the diagnosis (a candidate's is added by the caller)
                message += f"\n--- reference-role worker output (tail) ---\n{printed}"
            raise WorkerFailed("crash", message) from None
        except ValueError as exc:
            raise WorkerFailed("protocol_error", f"malformed reply: {exc}") from None

    def _watch_memory(self, deadline: float) -> None:
        """Until the reply starts (or the deadline, which ``wire.recv`` then reports), read the
        worker's resident memory every MEMORY_POLL_MS; above the cap it is killed and the call is
        ``oom`` at once, instead of a timeout once pinning tens of GB has run out the clock."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not poller.poll(MEMORY_POLL_MS) and time.monotonic() < deadline:
            resident = _resident_kb(self.pid)
            if resident > self.rss_cap_kb:
                self.close(graceful=False)
                raise WorkerFailed(
                    "oom",
                    f"{resident // 1024} MB resident in host memory (pinned or shared memory included), "
                    f"over the cap of {self.rss_cap_kb // 1024} MB",
                )

    def request(
        self, op: str, index: int, timeout: float | None = None, payload: bytes = b"", **extra: Any
    ) -> tuple[dict[str, Any], bytes]:
        """Send one command and return its answer (after a timed call, once its checks passed)."""
        nonce = self.begin(op, timeout, payload, set=index, **extra)
        header, payload = self.answer(nonce, timeout)
        if op == "time":
            self.answer(nonce, timeout)  # "settled": the worker's checks of that call passed
        self.check_contained()
        return header, payload

    def begin(self, op: str, timeout: float | None = None, payload: bytes = b"", **extra: Any) -> str:
        """Send one command; returns the nonce its answers carry."""
        nonce = secrets.token_hex(8)
        extra.setdefault("set", -1)
        try:
            wire.send(
                self.fd,
                {"cmd": op, "nonce": nonce, **extra},
                payload,
                deadline=time.monotonic() + (self.timeout if timeout is None else timeout),
            )
        except TimeoutError:
            raise WorkerFailed("timeout", "the worker does not read its requests") from None
        except OSError:
            raise WorkerFailed("crash", "worker exited before the request") from None
        return nonce

    def share(self, size: int) -> None:
        """Share a fresh memory region of ``size`` bytes with the worker (once per worker): the
        inputs of timed calls travel through it, at memory speed rather than through the socket
        (measured: a 4 MiB round trip through the socket took 25 ms)."""
        size = max(1, size)
        if self.region is not None and len(self.region) >= size:
            return
        fd = os.memfd_create(SHARED_REGION_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            # sealed at its size: a worker that kept the descriptor and truncated it would make
            # this process's next access to the mapping a SIGBUS, killing the whole evaluation
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            region = mmap.mmap(fd, size)
            nonce = secrets.token_hex(8)
            deadline = time.monotonic() + self.timeout
            wire.send(self.fd, {"cmd": "share", "size": size, "nonce": nonce}, deadline=deadline)
            wire.wait_writable(self.fd, deadline)
            socket.send_fds(self.sock, [b"\0"], [fd])
        except TimeoutError:
            raise WorkerFailed("timeout", "the worker does not read its requests") from None
        except OSError:
            raise WorkerFailed("crash", "worker exited before the request") from None
        finally:
            os.close(fd)
        self.answer(nonce, None)
        self.region = region

    def exchange(
        self, op: str, metas: list[dict[str, Any]], inputs: bytes, bound: int, timeout: float | None = None
    ) -> tuple[dict[str, Any], memoryview, int, int | None]:
        """One call on ``inputs`` through the shared region ("given": timed forward; "echo":
        everything but the forward): (output meta, a copy of the output, ns on this process's
        clock from writing the inputs to holding that copy, ns of CPU time the worker spent
        meanwhile or None). An output over ``bound`` bytes (the reference's size) is described
        as ``too_large`` and not read. The copy lives in a buffer of this worker and ``op``,
        valid until its next exchange of that op."""
        assert self.region is not None
        # Both clocks start before the inputs exist. Started after writing them, a worker that
        # watched the region computed the output before its clock started and answered the call
        # from that (the red team's precomputation: identical work timed at 2.8-12x). The copy
        # of the inputs is this process's work, on neither worker's CPU clock; on the wall clock
        # both sides and the echo pay it alike.
        cpu_started = process_cpu_ns(self.pid) if self.cpu_clock and self.pid is not None else None
        started = time.perf_counter_ns()
        self.region[: len(inputs)] = inputs
        nonce = self.begin(op, timeout, inputs=metas)
        header, _ = self.answer(nonce, timeout)
        try:
            meta = wire.check_output_meta(header.get("output"))
            size = wire.output_nbytes(meta)
        except ValueError as exc:
            raise WorkerFailed("protocol_error", f"malformed output description: {exc}") from None
        if size > bound:
            meta, size = {**meta, "kind": "too_large"}, 0
        # into a buffer allocated (and faulted in) once: a fresh bytes object of several MiB per
        # call cost page faults inside the window (1.3 ms median for 8 MiB, much more under load)
        copy = self.copies.get(op)
        if copy is None or len(copy) < size:
            copy = self.copies[op] = bytearray(size)
        output = memoryview(copy)[:size]
        if size:
            self._read_output(meta, output)
        elapsed = time.perf_counter_ns() - started
        cpu = None if cpu_started is None or self.pid is None else process_cpu_ns(self.pid) - cpu_started
        if op == "given" and size and self.role == "candidate" and self._in_shared_region(meta["address"], size):
            # checked from here, on the kernel's map of the worker: the worker's own check of the
            # same (worker._check_aliasing) runs where a patched harness can skip it (an echo
            # describes the output its "given" call already had checked)
            raise WorkerFailed("output_aliases_input", "the output lies in the shared region of the inputs")
        if op == "given":
            # Only now, with this process's clock stopped, does the worker run its checks of the
            # call: run right after its reply (as before), a candidate's checks competed with this
            # process's copy of the output inside the timed window on a shared core, and the
            # reference has none to run.
            self.answer(self.begin("settle", timeout), timeout)
        self.check_contained()
        return meta, output, elapsed, cpu

    def _in_shared_region(self, address: int, size: int) -> bool:
        """Whether ``size`` bytes at ``address`` of the worker overlap a mapping of a region this
        process shared (``share``; a worker may map it more than once)."""
        try:
            with open(f"/proc/{self.pid}/maps") as f:
                spans = [line.split(None, 1)[0] for line in f if SHARED_REGION_NAME in line]
        except OSError:
            raise WorkerFailed("protocol_error", "the worker's memory map cannot be read") from None
        for span in spans:
            low, high = (int(v, 16) for v in span.split("-"))
            if address < high and low < address + size:
                return True
        return False

    def _read_output(self, meta: dict[str, Any], into: memoryview) -> None:
        """Copy a timed call's output out of the worker's memory, where its reply says it is
        (``wire.describe_in_place``). Read by this process through ``/proc/PID/mem``, before the
        worker's CPU clock is read: work that lands there later is not in the copy, and the
        worker spends no time of its own on it, so a harness patched to skip or shorten a copy
        has nothing to skip."""
        if meta.get("nbytes") != len(into) or "address" not in meta:
            raise WorkerFailed("protocol_error", "the output's address or size is missing or wrong")
        if self.mem_fd is None:
            try:
                self.mem_fd = os.open(f"/proc/{self.pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:  # a worker made undumpable refuses it; so would a host forbidding ptrace
                raise WorkerFailed("protocol_error", f"the worker's memory cannot be read ({exc.strerror})") from None
        got = 0
        try:
            while got < len(into):
                n = os.preadv(self.mem_fd, [into[got:]], meta["address"] + got)
                if n <= 0:
                    break
                got += n
        except OSError as exc:
            raise WorkerFailed("protocol_error", f"the output's address is not readable ({exc.strerror})") from None
        if got != len(into):
            raise WorkerFailed("protocol_error", f"the output's memory ended after {got} of {len(into)} bytes")

    def check_contained(self) -> None:
        """A candidate's processes and threads, from the kernel's view (which candidate code
        cannot fool): no process outside the worker, no thread beyond those it was ready with."""
        if not self.contained:
            return
        if strays := self.strays():
            raise WorkerFailed("tampering", f"process(es) {strays[:5]} started by the candidate left running outside its worker")
        threads = self.threads()
        if self.baseline_threads is None:
            self.baseline_threads = threads
        elif threads > self.baseline_threads:
            raise WorkerFailed(
                "tampering",
                f"{threads - self.baseline_threads} thread(s) left running in the worker ({threads}, ready with {self.baseline_threads})",
            )

    def threads(self) -> int:
        """The worker's threads, as the kernel counts them."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/task"))
        except OSError:
            return 0

    def scheduling(self) -> set[tuple[Any, ...]]:
        """(affinity, nice, policy) of each of the worker's threads."""
        return set(_scheduling_of(self.pid)) if self.pid is not None else set()

    def answer(self, nonce: str, timeout: float | None = None) -> tuple[dict[str, Any], bytes]:
        """The next answer to ``begin``'s command (or to a request's), checked against its nonce."""
        header, payload = self.receive(timeout)
        if header.get("nonce") != nonce:
            raise WorkerFailed("protocol_error", "reply does not answer the request (forged or stale)")
        if header.get("ok") is not True:
            raise WorkerFailed(str(header.get("kind", "runtime_error")), str(header.get("error", "")))
        return header, payload

    def _reap(self, grace: float) -> int | None:
        """The keeper's exit status (the worker's) once it is gone, waiting at most ``grace`` seconds."""
        deadline = time.monotonic() + grace
        while not self.reaped:
            try:
                pid, status = os.waitpid(self.keeper, os.WNOHANG)
            except ChildProcessError:
                self.reaped = True
                return None
            if pid:
                self.reaped = True
                return os.waitstatus_to_exitcode(status)
            if time.monotonic() >= deadline:
                return None
            time.sleep(REAP_POLL_S)
        return None

    def strays(self) -> list[int]:
        """Processes the worker started that live outside it: the keeper's children other than
        the worker (an orphan, e.g. a double-forked daemon, is reparented to the keeper)."""
        return [pid for pid in sandbox.children(self.keeper) if pid != self.pid]

    def close(self, graceful: bool = True) -> None:
        """End the worker and everything it started; nothing outlives this call. ``graceful``:
        ask it to exit first (pointless for one that stopped answering)."""
        if graceful:
            try:
                wire.send(self.fd, {"cmd": "exit"}, deadline=time.monotonic() + EXIT_GRACE_S)
            except OSError:  # gone already, or not reading (TimeoutError is an OSError)
                pass
            self._reap(EXIT_GRACE_S)
        if not self.reaped:
            if self.pid is not None:
                sandbox.kill_group(self.pid)  # the worker's session, atomically: fork loops in it stop at once
            # then the whole subtree below the keeper, setsid daemons included; the keeper then exits
            sandbox.kill_tree(self.keeper)
            self._reap(KILL_GRACE_S)
        if not self.reaped:  # a keeper that does not exit (it never should): end it, and its tree
            sandbox.kill_tree(self.keeper)
            os.kill(self.keeper, signal.SIGKILL)
            self._reap(KILL_GRACE_S)
        self.sock.close()
        if self.region is not None:
            self.region.close()
        if self.mem_fd is not None:
            os.close(self.mem_fd)
            self.mem_fd = None


def _itemsize(dtype: str) -> int:
    return int(np.dtype("float16" if "bfloat16" in dtype else dtype.removeprefix("torch.").replace("bool", "bool_")).itemsize)


def _any_finite(meta: dict[str, Any], out: np.ndarray | None) -> bool:
    """Whether a reference output has a finite element to judge (GPU: as its worker reported)."""
    if meta.get("kind") != "tensor":
        return False
    if out is None:
        return bool(meta.get("any_finite", True))
    return out.dtype.kind != "f" or bool(np.isfinite(out).any())


def harness_bound(ref_ns: list[float], echo_ns: list[float]) -> bool:
    """Whether the forwards' share of the reference's windows (median window - fastest echo) is
    under HARNESS_SIGNAL_FACTOR times the larger spread of the reference and echo windows, so
    that taking the harness's share out would leave mostly noise."""
    forwards = statistics.median(ref_ns) - min(echo_ns)
    noise = max(max(ref_ns) - min(ref_ns), max(echo_ns) - min(echo_ns))
    return forwards < HARNESS_SIGNAL_FACTOR * noise


# names in a candidate's source that build an extension (compiler processes)
EXTENSION_BUILDERS = ("cpp_extension", "load_inline")
# A candidate's frames: twice the reference's largest output plus this (headers, error messages).
MESSAGE_HEADROOM_BYTES = 16 << 20
# The name of the memory regions shared with workers, as /proc/PID/maps shows their mappings.
SHARED_REGION_NAME = "testtime-timing"


def builds_extension(src: str) -> bool:
    """Whether code names an extension builder (a name, an attribute or an import; comments
    and strings do not count: a comment naming ``load_inline`` used to unseal a candidate,
    moving it to the parent's wall clock)."""
    try:
        tree = parse_untrusted(src)
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in EXTENSION_BUILDERS:
            return True
        if isinstance(node, ast.Attribute) and node.attr in EXTENSION_BUILDERS:
            return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            dotted = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            for name in dotted + [alias.name for alias in node.names]:
                if any(part in EXTENSION_BUILDERS for part in name.split(".")):
                    return True
    return False


# CPU timing: the seccomp filters a candidate's worker must have once loaded (protect_others,
# no_processes, no_signals_out, beyond its parent's), counted by the kernel (/proc/PID/status)
# before its CPU clock is trusted as its time; another count: timed by the parent's wall clock
SEALED_FILTERS = 3
# reading a worker's CPU clock waits (at most this long) until none of its threads is running:
# the kernel's process clock lags for a thread that is on a CPU at that moment
CPU_SETTLE_S = 0.05


def process_cpu_ns(pid: int) -> int:
    """CPU time of process ``pid`` in ns: all its threads together, exited ones included (the
    kernel's process CPU clock, clock_getcpuclockid). Read once none of its threads is running
    (CPU_SETTLE_S at most), where the value is exact."""
    deadline = time.monotonic() + CPU_SETTLE_S
    while time.monotonic() < deadline and _any_running(pid):
        os.sched_yield()
    try:
        return time.clock_gettime_ns(((~pid) << 3) | 2)  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    except OSError:
        raise WorkerFailed("crash", "the worker exited during a timed call") from None


def _any_running(pid: int) -> bool:
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"R":
            return True
    return False


def _status_field(pid: int | None, field: str) -> int | None:
    """An integer field of /proc/PID/status (its first number), None when unknown or gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def seccomp_filters(pid: int | None) -> int | None:
    """The number of seccomp filters on process ``pid``, as the kernel reports it (None: unknown)."""
    return _status_field(pid, "Seccomp_filters")


def _resident_kb(pid: int | None) -> int:
    """VmRSS of ``pid`` in kB, shared and pinned mappings included (0 once it is gone)."""
    return _status_field(pid, "VmRSS") or 0


def _scheduling_of(pid: int) -> list[tuple[Any, ...]]:
    """(affinity, nice, policy) of every thread of ``pid`` (0: the calling thread only)."""
    tids = [0]
    if pid:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            return []
    found = []
    for tid in tids:
        try:
            found.append(
                (tuple(sorted(os.sched_getaffinity(tid))), os.getpriority(os.PRIO_PROCESS, tid), os.sched_getscheduler(tid))
            )
        except OSError:
            continue  # a thread that just ended
    return found


def output_scale(arrays: list[np.ndarray | None]) -> float:
    """Root mean square of the finite elements of ``arrays`` (0.0 when there are none)."""
    parts = [a[np.isfinite(a)].astype(np.float64).ravel() for a in arrays if a is not None and a.dtype.kind == "f"]
    values = np.concatenate(parts) if parts else np.empty(0)
    return float(np.sqrt(np.mean(np.square(values)))) if values.size else 0.0


def wide_atol(atol: float, normal_scale: float, wide_scale: float, cap: float) -> float:
    """The absolute tolerance on a wide set: ``atol`` times the growth of the reference output's
    scale from the normal sets (``normal_scale``) to this one (``wide_scale``), at most ``cap``.

    Scaling the inputs scales a computation's rounding error with its outputs: a float32 matmul
    of inputs scaled by 3 rounds 9 times as coarsely, so on randn-drawn matmuls the exact product
    itself, and a float64 candidate 15 times more accurate than the reference, missed a fixed
    1e-4 near zero (false ``robust_mismatch`` on bundled tasks 2, 3, 5, 6). The exploits the wide
    sets are for are wrong by the size of the output, far beyond this.
    """
    if not normal_scale > 0 or not wide_scale > 0:
        return atol
    return atol * min(cap, max(1.0, wide_scale / normal_scale))


def compare(
    ref: np.ndarray | None,
    ref_meta: dict[str, Any],
    meta: dict[str, Any],
    out: np.ndarray | None,
    atol: float,
    rtol: float,
    finite_only: bool = False,
) -> tuple[str | None, float | None]:
    """(error_kind, max_abs_diff) of one candidate output against the reference output.
    ``finite_only`` (wide sets): positions where the reference is not finite are not judged."""
    if out is None:
        return ("abstain" if meta.get("type") == "NoneType" else "output_type_error"), None
    if ref is None:
        return "reference_error", None
    if out.shape != ref.shape:
        return "shape_mismatch", None
    if out.dtype != ref.dtype or meta.get("dtype") != ref_meta.get("dtype"):
        return "dtype_mismatch", None
    if meta.get("device") != ref_meta.get("device"):
        return "output_type_error", None
    if 0 in meta.get("strides", []) and 0 not in ref_meta.get("strides", []) and out.size > 1:
        return "output_type_error", None  # an expanded (stride-0) view: not a materialised result
    if ref.dtype.kind in "biu":
        diff = float(np.abs(ref.astype(np.int64) - out.astype(np.int64)).max(initial=0))
        return (None if diff == 0 else "numerical_mismatch"), diff
    if ref.dtype.kind == "f" and ref.dtype.itemsize <= 8 and bool(np.isfinite(ref).all()):
        # the common case, everywhere finite: the same float64 test chunk by chunk, without the masked
        # copies below (the parent compares every timed call; on a 3M-element output this is ~5x faster)
        if not bool(np.isfinite(out).all()):
            return "nan_inf", None
        max_diff, ok = _within(ref.reshape(-1), out.reshape(-1), atol, rtol)
        return (None if ok else "numerical_mismatch"), max_diff
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    finite = np.isfinite(ref64)
    if not np.all(np.isfinite(out64[finite])) or (
        not finite_only and not np.array_equal(ref64[~finite], out64[~finite], equal_nan=True)
    ):
        return "nan_inf", None
    diff = np.abs(ref64[finite] - out64[finite])
    max_diff = float(diff.max(initial=0.0))
    ok = bool(np.all(diff <= atol + rtol * np.abs(ref64[finite])))
    return (None if ok else "numerical_mismatch"), max_diff


#: elements per chunk of :func:`_within`: two float64 temporaries of 512 KB stay in cache
COMPARE_CHUNK = 1 << 16


def _within(ref: np.ndarray, out: np.ndarray, atol: float, rtol: float) -> tuple[float, bool]:
    """(max |ref - out|, whether |ref - out| <= atol + rtol * |ref| everywhere) of two flat finite
    arrays, in float64 as :func:`compare` computes it, one cache-sized chunk at a time."""
    max_diff, ok = 0.0, True
    for at in range(0, ref.size, COMPARE_CHUNK):
        bound = ref[at : at + COMPARE_CHUNK].astype(np.float64)
        diff = out[at : at + COMPARE_CHUNK].astype(np.float64)
        diff -= bound
        np.abs(diff, out=diff)
        max_diff = max(max_diff, float(diff.max(initial=0.0)))
        if ok:
            np.abs(bound, out=bound)
            bound *= rtol
            bound += atol
            ok = bool((diff <= bound).all())
    return max_diff, ok


def order_median_ci(ratios: list[float], level: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI of the median per-pair ratio: the order statistics X(k), X(n+1-k)
    with the largest k whose two-sided binomial tail stays within 1 - level (for n <= 5 at 95%
    none does: the whole range, which covers 1 - 2^(1-n) = 93.75% at n = 5)."""
    values = sorted(float(r) for r in ratios)
    n = len(values)
    k = 1
    while k < n // 2 and 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n <= 1 - level:
        k += 1
    return values[k - 1], values[n - k]


def bootstrap_median_ci(
    ratios: list[float], level: float = 0.95, n_boot: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the median per-pair ratio."""
    values = np.asarray(ratios, dtype=np.float64)
    if len(values) < 2:
        return float(values[0]), float(values[0])
    rng = np.random.default_rng(seed)
    medians = np.median(values[rng.integers(0, len(values), size=(n_boot, len(values)))], axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))


def widened_ci(estimate: float, low: float, high: float, spread: float, level: float = 0.95) -> tuple[float, float]:
    """The CI (low, high) around ``estimate`` widened by a between-evaluation spread: ``spread``
    is the standard deviation of log speedups that repeated evaluations of identical code show
    beyond what one evaluation's pairs can see (placement, clocks, the machine's state), added
    in quadrature to each half-width on the log scale."""
    if spread <= 0 or not estimate > 0 or not low > 0 or not high > 0:
        return low, high
    z = statistics.NormalDist().inv_cdf(0.5 + level / 2)
    below = math.hypot(math.log(estimate / low), z * spread)
    above = math.hypot(math.log(high / estimate), z * spread)
    return estimate * math.exp(-below), estimate * math.exp(above)


class Evaluator:
    """Evaluates candidates of one task; use as a context manager."""

    def __init__(self, problem_src: str, settings: EvalSettings) -> None:
        # Workers are forked from this process: with torch imported here once (no op run, no CUDA
        # initialised, so forking stays safe), no worker pays the import again (measured on an
        # H200 host: 2.9 s per worker, four workers per CLI call of two candidates).
        import torch

        if settings.on_gpu and torch.cuda.is_initialized():
            # a forked child cannot use CUDA once its parent has initialised it: every worker
            # would die at its first CUDA call (exit status 3, nothing on stderr)
            raise RuntimeError(
                "the evaluating process has already initialised CUDA, so the CUDA workers it forks cannot "
                "use the GPU: evaluate on device 'cuda' from a process that has not touched CUDA "
                "(e.g. a fresh interpreter; testtime's CLI and workflow jobs do)"
            )
        self.problem_src = problem_src
        self.settings = settings
        self.scratch = tempfile.mkdtemp(prefix="testtime-eval-")
        self.reference: _Worker | None = None
        self.reference_outputs: list[tuple[dict[str, Any], np.ndarray | None]] = []  # (meta, array on CPU)
        self.reference_error: str | None = None
        self.wide_skipped: list[int] = []
        self.n_normal = settings.correctness_trials
        # (affinity, nice, policy) of the reference worker's threads and of the parent's own thread
        # (which workers inherit), checked before every timing pair
        self.reference_scheduling: set[tuple[Any, ...]] = set()
        self.parent_scheduling = _scheduling_of(0)
        self.reference_tainted = False
        # CPU timing: a third, reference-role process draws the fresh input sets. Drawing in the
        # reference worker left it warmer than the candidate for its next call (measured on the
        # 2-core VM: the reference timed against itself at 0.70-0.94x); now neither timed
        # worker draws, and each follows the drawer or the other worker alike.
        self.drawer: _Worker | None = None
        # GPU timing: the clock process, the shape of every worker's output stack, the batch size
        # (see _time_clocked)
        self.clock: _Worker | None = None
        self.stack_spec: dict[str, Any] = {}
        self.batch_n = 1
        self.harness_bound = False
        # the GPU-timeline clock: its input buffers per slot (as the clock describes them), its gate
        self.timeline = settings.gpu_clock == "timeline"
        self.clock_inputs: dict[str, dict[str, Any]] = {}
        self.gate_ns = float(CLOCK_GATE_NS)
        self.late_windows = 0

    def __enter__(self) -> Evaluator:
        self._start_reference()
        if self.reference_error is not None and self.reference_error.startswith("crash"):
            # trusted code does not crash on its own: a transient failure (seen on an H200 right
            # after hostile candidates had been killed: CUDA initialisation); one more try
            logger.warning("reference start failed (%s); retrying once", self.reference_error.splitlines()[0])
            self._restart_reference()
        return self

    def __exit__(self, *exc: Any) -> None:
        # the clock first: it maps the reference's memory (CUDA IPC), which should not outlive it
        for worker in (self.clock, self.drawer, self.reference):
            if worker is not None:
                worker.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _start_reference(self) -> None:
        ref_dir = tempfile.mkdtemp(prefix="reference-", dir=self.scratch)
        self.reference = _Worker("reference", self.problem_src, None, self.settings, ref_dir)
        self.reference_outputs, self.wide_skipped, self.reference_error = [], [], None
        self.normal_scale: float | None = None  # of the normal sets' reference outputs (_wide_atol)
        try:
            header, _ = self.reference.receive(self.settings.load_timeout_s)
            if header.get("ok") is not True:
                raise WorkerFailed(str(header.get("kind")), str(header.get("error")))
            for index in range(int(header["n_sets"])):
                try:
                    meta, payload = self.reference.request("run", index, probe=True)
                except WorkerFailed as exc:
                    if index < self.n_normal or exc.kind not in ("runtime_error", "oom"):
                        raise
                    # the reference itself fails on this wide set (a domain it does not admit)
                    self.reference_outputs.append(({"kind": "error"}, None))
                    self.wide_skipped.append(index)
                    continue
                out = None if self.settings.on_gpu else wire.decode_output(meta["output"], payload)
                self.reference_outputs.append((meta["output"], out))
                if index >= self.n_normal and not _any_finite(meta["output"], out):
                    # wide inputs outside the op's domain everywhere (log, sqrt of negatives): no
                    # position to judge. Partly outside: only the finite positions are judged.
                    self.wide_skipped.append(index)
            for _ in range(self.settings.warmup):
                self.reference.request("time", 0)
            self.reference_scheduling = self.reference.scheduling()
            if self.settings.hardened and self.settings.on_gpu:
                self._start_clock()
        except WorkerFailed as exc:
            self.reference_error = f"{exc.kind}: {exc.message}"
            logger.error("reference failed: %s", self.reference_error)

    def _restart_reference(self) -> None:
        if self.clock is not None:  # it maps the old reference's stack
            self.clock.close(graceful=False)
            self.clock = None
        if self.reference is not None:
            self.reference.close()
        self._start_reference()

    def evaluate(self, candidate_src: str, screened_code: str | None = None) -> EvalResult:
        """Judge ``candidate_src`` (a module defining ModelNew). ``screened_code`` is the part the
        candidate wrote (screened statically); the whole source is screened when omitted."""
        started = time.monotonic()
        result = EvalResult(protocol=self.settings.protocol)
        try:
            self._evaluate(candidate_src, candidate_src if screened_code is None else screened_code, result)
        except Exception as exc:
            # before its worker started (the screen, the assembly's checks): whatever the text
            # led to is this candidate's record, never the end of a job of many
            logger.exception("unexpected error while screening a candidate")
            result.correct = False
            result.error_kind = "syntax_error" if isinstance(exc, (RecursionError, MemoryError)) else "protocol_error"
            result.error_message = f"{type(exc).__name__}: {exc}"[-ERROR_MESSAGE_CHARS:]
        finally:
            result.wall_s = time.monotonic() - started
        result.speedup = result.speedup if result.correct else 0.0
        result.fast_1 = bool(result.correct and result.speedup > 1.0)
        result.fast_1_sig = bool(result.correct and (result.speedup_ci_low or 0.0) > 1.0)
        return result

    def _evaluate(self, candidate_src: str, screened_code: str, result: EvalResult) -> None:
        if self.reference_error is not None:
            result.error_kind, result.error_message = "reference_error", self.reference_error
            return
        if not screened_code.strip():
            result.error_kind, result.error_message = "extraction_failed", "empty candidate"
            return
        try:
            findings = screen(screened_code, self.settings.allow_torch_compile)
        except SyntaxError as exc:
            result.error_kind, result.error_message = "syntax_error", exc.msg + (f" (line {exc.lineno})" if exc.lineno else "")
            return
        if findings:
            result.flags.extend(f"screen: {f}" for f in findings)
            if self.settings.hardened:
                result.error_kind = "forbidden_construct"
                result.error_message = "; ".join(str(f) for f in findings)
                return
        cand_dir = tempfile.mkdtemp(prefix="candidate-", dir=self.scratch)
        self.parent_scheduling = _scheduling_of(0)
        # a candidate that builds an extension, or one allowed torch.compile, starts compiler
        # processes (loading, or at its first call), so it cannot be sealed against starting
        # processes (sandbox.no_processes); any other is, before it loads
        builds = self.settings.allow_torch_compile or builds_extension(candidate_src)
        worker = _Worker("candidate", self.problem_src, candidate_src, self.settings, cand_dir, seal=not builds)
        # a frame the size of the reference's largest output twice over, plus room for a header and
        # an error message: a worker that announced gigabytes made this process hold them (a
        # 1 GiB frame cost 2.4 GB here), beside every other lane of its job
        largest = max((wire.output_nbytes(meta) for meta, _ in self.reference_outputs if meta.get("kind") == "tensor"), default=0)
        worker.max_message = 2 * largest + MESSAGE_HEADROOM_BYTES
        deadline = time.monotonic() + self.settings.candidate_budget_s

        def remaining(limit: float | None = None) -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed("timeout", f"candidate exceeded its {self.settings.candidate_budget_s:.0f} s budget")
            return min(left, limit or self.settings.timeout_s)

        try:
            header, _ = worker.receive(remaining(self.settings.load_timeout_s))
            if header.get("ok") is not True:
                raise WorkerFailed(str(header.get("kind", "load_error")), str(header.get("error", "")))
            result.sandbox = str(header.get("sandbox", ""))
            if not header.get("seccomp"):
                result.flags.append("no_seccomp")  # other processes' scheduling is then only verified, not protected
            # counted from outside, not taken from the header its own code could have written
            # (a container's own filters, inherited, count too): a seal installed before any of
            # its code ran cannot be undone, and a filter it added itself changes the count
            sealed = (seccomp_filters(os.getpid()) or 0) + SEALED_FILTERS
            worker.cpu_clock = worker.seal and seccomp_filters(worker.pid) == sealed and bool(self.settings.cpu_cores())
            worker.check_contained()  # processes left from loading; the thread count it is ready with
            worker.ready_scheduling = worker.scheduling()
            self._check_correctness(worker, result, remaining)
            if not self.settings.hardened:
                self._time_kernelbench(worker, result, remaining)
            elif self.settings.on_gpu:
                self._time_clocked(worker, result, remaining)
            else:
                self._time_given(worker, result, remaining)
            if self.settings.hardened:
                self._check_scheduling(worker)  # nothing it did after its last timing may reach the next candidate
            result.correct = True
        except WorkerFailed as exc:
            result.error_kind, result.error_message = exc.kind, exc.message[-ERROR_MESSAGE_CHARS:]
            if exc.kind in ("crash", "timeout", "protocol_error"):
                printed = _tail(os.path.join(cand_dir, "output.log"))
                if printed:
                    result.error_message += f"\n--- candidate output (tail) ---\n{printed}"
        except Exception as exc:
            # The replies are checked field by field (wire.check_output_meta); a case those checks
            # missed must still end as this candidate's record, never kill a job of many. Logged
            # with its traceback: it is a gap in the checks to close.
            logger.exception("unexpected error while judging a candidate")
            result.error_kind = "protocol_error"
            result.error_message = f"a reply the evaluator could not use ({type(exc).__name__}: {exc})"[-ERROR_MESSAGE_CHARS:]
        finally:
            worker.close(graceful=result.error_kind not in ("timeout", "crash", "protocol_error"))
            shutil.rmtree(cand_dir, ignore_errors=True)
            if self.reference is not None and not self.reference.scheduling() <= self.reference_scheduling:
                self.reference_tainted = True
            if self.reference_tainted:  # its timings can no longer be trusted
                self.reference_tainted = False
                self._restart_reference()
            elif self.clock is None and self.settings.hardened and self.settings.on_gpu and self.reference_error is None:
                self._restart_clock()  # dropped during this candidate (_drop_clock)

    def _check_scheduling(self, worker: _Worker) -> None:
        """Before a timing pair: nobody's affinity, priority or policy changed (seccomp forbids
        changing other processes' where available; this check also covers where it is not)."""
        assert self.reference is not None
        changed = []
        if _scheduling_of(0) != self.parent_scheduling:
            changed.append("the evaluation parent's")
            self._restore_parent_scheduling()
        if not self.reference.scheduling() <= self.reference_scheduling:
            changed.append("the reference worker's")
            self.reference_tainted = True
        if not worker.scheduling() <= worker.ready_scheduling:
            changed.append("its own")
        if changed:
            raise WorkerFailed("tampering", f"scheduling (CPU affinity, priority or policy) changed: {', '.join(changed)}")

    def _restore_parent_scheduling(self) -> None:
        if not self.parent_scheduling:
            return
        affinity, nice, policy = self.parent_scheduling[0]
        try:
            os.sched_setaffinity(0, affinity)
            os.sched_setscheduler(0, policy, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:  # raising one's own priority back needs privilege
            logger.warning("could not restore the evaluation process's scheduling: %s", exc)

    def _compare(self, index: int, meta: dict[str, Any], payload: bytes, result: EvalResult) -> str | None:
        try:
            out = wire.decode_output(meta, payload)
        except (KeyError, ValueError) as exc:
            raise WorkerFailed("protocol_error", f"malformed output: {exc}") from None
        ref_meta, ref = self.reference_outputs[index]
        atol, rtol = self._tolerance(ref_meta)
        if index >= self.n_normal:
            atol = self._wide_atol(atol, ref)
        kind, diff = compare(ref, ref_meta, meta, out, atol, rtol, finite_only=index >= self.n_normal)
        if diff is not None:
            result.max_abs_diff = max(diff, result.max_abs_diff or 0.0)
        return kind

    def _judge(self, index: int, meta: dict[str, Any], result: EvalResult) -> str | None:
        """GPU: the reference worker maps the candidate's output and compares it on the device."""
        assert self.reference is not None
        try:
            verdict, _ = self.reference.request("judge", index, output=meta)
        except WorkerFailed as exc:
            self._restart_reference()  # it may have been left in any state
            raise WorkerFailed(
                "judge_error", f"the reference worker failed judging this output ({exc.kind}: {exc.message})"
            ) from None
        diff = verdict.get("max_abs_diff")
        if isinstance(diff, (int, float)):
            result.max_abs_diff = max(float(diff), result.max_abs_diff or 0.0)
        if verdict.get("kind") == "protocol_error":
            raise WorkerFailed("protocol_error", str(verdict.get("detail", "unreadable shared output")))
        return verdict.get("kind")

    def _verdict_of(self, index: int, header: dict[str, Any], payload: bytes, result: EvalResult) -> str | None:
        meta = header.get("output")
        if self.settings.on_gpu:  # a handle the reference worker maps, checked there (ipc._valid)
            if not isinstance(meta, dict):
                raise WorkerFailed("protocol_error", "no output description")
            return self._judge(index, meta, result)
        try:
            wire.check_output_meta(meta)
        except ValueError as exc:
            raise WorkerFailed("protocol_error", f"malformed output description: {exc}") from None
        return self._compare(index, meta, payload, result)

    def _wide_atol(self, atol: float, ref: np.ndarray | None) -> float:
        """``wide_atol`` for a wide set's reference output ``ref``: the growth of the output's
        scale over the normal sets' reference outputs, at most the square of the inputs' scaling
        (a product of two scaled inputs)."""
        if self.normal_scale is None:
            self.normal_scale = output_scale([out for _, out in self.reference_outputs[: self.n_normal]])
        return wide_atol(atol, self.normal_scale, output_scale([ref]), self.settings.wide_scale**2)

    def _tolerance(self, ref_meta: dict[str, Any]) -> tuple[float, float]:
        dtype = str(ref_meta.get("dtype", "torch.float32")).replace("torch.", "")
        tol = self.settings.tolerances.get(dtype) or self.settings.tolerances.get("float32") or {"atol": 1e-4, "rtol": 1e-4}
        return float(tol["atol"]), float(tol["rtol"])

    def _check_correctness(self, worker: _Worker, result: EvalResult, remaining: Callable[..., float]) -> None:
        for index in range(len(self.reference_outputs)):
            if index in self.wide_skipped:
                continue
            header, payload = worker.request("run", index, remaining())
            kind = self._verdict_of(index, header, payload, result)
            wide = index >= self.n_normal
            if kind is None:
                result.trials_passed += 1
                if index == self.n_normal - 1:
                    result.paper_correct = True
                continue
            if wide and kind in ("numerical_mismatch", "nan_inf"):
                kind = "robust_mismatch"  # right on the task's inputs, wrong on signed/wide ones
            label = "wide trial" if wide else "trial"
            raise WorkerFailed(
                kind, f"{label} {index}: {kind}" + (f" (max abs diff {result.max_abs_diff:.3g})" if result.max_abs_diff else "")
            )
        if self.wide_skipped:
            result.flags.append("wide_trials_skipped_domain")

    def _time_given(self, worker: _Worker, result: EvalResult, remaining: Callable[..., float]) -> None:
        """Hardened CPU timing, measured from outside the candidate's process.

        Every timed call is a fresh input set, drawn by the reference worker under a seed this
        process picks at random just before (so no cache and no precomputation can know it), sent
        with the request, and answered with the complete output, which is judged against the
        reference's output on the same set. The time of a call is the CPU time the kernel
        accounts to the worker's process over the request (its process CPU clock, read by this
        process: every thread, exited ones too; a sealed candidate can start no process to move
        work to), less the harness's share (decoding the request, writing the output, replying),
        calibrated on the reference worker by an ``echo`` of the same set that does everything
        but the forward. Time the worker waits for a core on a busy machine is not in it:
        timed by this process's wall clock around the request, identical code came out at
        0.73-0.93x beside two busy processes on the 2-core VM. A candidate that could not be
        sealed (it builds an extension, or may use torch.compile), or whose seccomp filters this
        process does not count as expected, is timed that way still (flag ``wall_clock``).
        Nothing the candidate's process reports is used, so patching the harness, its clocks
        or its replies gains at most the harness's own share. A sample is the fastest of
        ``inner_repeats`` calls per side; reference and candidate alternate who goes first.
        When the harness's share swamps the forwards (``harness_bound`` on this evaluation's
        own calls), whole calls are compared instead (flag ``harness_bound``).
        """
        assert self.reference is not None
        repeats = max(1, self.settings.inner_repeats)
        rounds = self.settings.warmup + self.settings.timing_pairs * repeats
        ref_rtt, cand_rtt, echo_rtt = [], [], []
        on_cpu_clock = worker.cpu_clock
        if not on_cpu_clock:
            result.flags.append("wall_clock")
        collect = gc.isenabled()
        gc.disable()  # a collection in this process would land in one side's round trip
        try:
            for round_ in range(rounds):
                self._check_scheduling(worker)
                if self.settings.wide_trials and secrets.randbelow(WIDE_ROUND_ODDS) == 0:
                    self._judge_wide_round(worker, result, remaining)
                metas, inputs = self._draw()
                bound = self._share(worker, inputs)
                answers = {}
                for who in ("ref", "cand") if round_ % 2 == 0 else ("cand", "ref"):
                    side = self.reference if who == "ref" else worker
                    budget = remaining() if who == "cand" else None
                    meta, output, wall, cpu = side.exchange("given", metas, inputs, bound, budget)
                    answers[who] = meta, output
                    (ref_rtt if who == "ref" else cand_rtt).append(cpu if on_cpu_clock and cpu is not None else wall)
                    # Each side echoes right after its call, so both run the same sequence of
                    # requests: with the reference alone echoing (after both calls) it had run
                    # last more often, its memory warmer (identical LogSoftmax at 0.76-0.87x
                    # beside two busy processes, 0.97-1.02 echoing both). Only the reference's
                    # echo is used: the calibration.
                    _, _, wall, cpu = side.exchange("echo", metas, inputs, bound, budget)
                    if who == "ref":
                        echo_rtt.append(cpu if on_cpu_clock and cpu is not None else wall)
                kind = self._compare_given(answers["ref"], answers["cand"], result)
                if kind is not None:
                    raise WorkerFailed("timed_output_mismatch", f"output of timed call {round_} (a fresh input set): {kind}")
        finally:
            if collect:
                gc.enable()
        # Each side's sample is its fastest call of a pair's rounds (slowdowns on a shared machine
        # are one-sided); the harness's share is the echoes' fastest, the same way, median over pairs.
        warm = self.settings.warmup
        windows = [slice(warm + p * repeats, warm + (p + 1) * repeats) for p in range(self.settings.timing_pairs)]
        overhead = statistics.median(min(echo_rtt[w]) for w in windows)
        result.harness_us = overhead / 1e3
        if harness_bound([min(ref_rtt[w]) for w in windows], [min(echo_rtt[w]) for w in windows]):
            # the harness's share swamps the forwards at this load (measured in a CI run on the
            # 2-core VM: an 8.9 ms share around 2-4 ms forwards, trials left at the 1 us floor and
            # identical code at 0.4-0.9x): compare whole round trips instead, as on a GPU
            overhead = 0.0
            result.flags.append("harness_bound")
        ref_ns = [max(MIN_TIMED_NS, min(ref_rtt[w]) - overhead) for w in windows]
        cand_ns = [max(MIN_TIMED_NS, min(cand_rtt[w]) - overhead) for w in windows]
        result.timing_method = "worker_cpu_clock" if on_cpu_clock else "parent_clock"
        self._set_timing(result, ref_ns, cand_ns)

    def _share(self, worker: _Worker, inputs: bytes) -> int:
        """Make sure both workers and the drawer share a region big enough for ``inputs``;
        returns the largest output a timed call may have (the reference's size: a larger one
        cannot match it)."""
        assert self.reference is not None and self.drawer is not None
        self.reference.share(len(inputs))
        worker.share(len(inputs))
        self.drawer.share(len(inputs))
        return wire.output_nbytes(self.reference_outputs[0][0])

    def _judge_wide_round(self, worker: _Worker, result: EvalResult, remaining: Callable[..., float]) -> None:
        """An untimed round on a fresh wide set (random signs), slipped in among the timed
        rounds at random: no call count or order tells a candidate which inputs are judged wide."""
        assert self.reference is not None
        metas, inputs = self._draw(signs=[1 if secrets.randbits(1) else -1 for _ in range(8)])
        bound = self._share(worker, inputs)
        try:
            ref_meta, ref_out, _, _ = self.reference.exchange("given", metas, inputs, bound)
        except WorkerFailed as exc:
            if exc.kind not in ("runtime_error", "oom"):
                raise
            if "wide_trials_skipped_domain" not in result.flags:
                result.flags.append("wide_trials_skipped_domain")  # the reference fails on it too
            return
        cand_meta, cand_out, _, _ = worker.exchange("given", metas, inputs, bound, remaining())
        kind = self._compare_given((ref_meta, ref_out), (cand_meta, cand_out), result, finite_only=True)
        if kind in ("numerical_mismatch", "nan_inf"):
            raise WorkerFailed("robust_mismatch", f"a wide set among the timed calls: {kind}")
        if kind is not None:
            raise WorkerFailed(kind, f"a wide set among the timed calls: {kind}")

    def _draw(self, signs: list[int] | None = None) -> tuple[list[dict[str, Any]], bytes]:
        """A fresh input set from the drawer, under a seed nobody could predict (``signs``: a
        wide one). The drawer is a reference-role worker, started at the first draw: it never
        sees candidate code."""
        if self.drawer is None:
            self.drawer = _Worker("reference", self.problem_src, None, self.settings, tempfile.mkdtemp(dir=self.scratch))
            ready, _ = self.drawer.receive(self.settings.load_timeout_s)
            if ready.get("ok") is not True:
                raise WorkerFailed("reference_error", f"the drawing worker failed: {ready.get('error')}")
        region = self.drawer.region
        at = 0 if region is not None else None
        header, payload = self.drawer.request("draw", -1, seed=secrets.randbits(62), signs=signs, at=at)
        size = header.get("in_region")
        if region is not None and isinstance(size, int) and 0 <= size <= len(region):
            payload = region[:size]
        return header["inputs"], payload

    def _compare_given(
        self,
        ref: tuple[dict[str, Any], memoryview],
        cand: tuple[dict[str, Any], memoryview],
        result: EvalResult,
        finite_only: bool = False,
    ) -> str | None:
        if cand[0].get("kind") == "too_large":
            return "shape_mismatch"
        try:
            ref_out = wire.decode_output(ref[0], ref[1])
            out = wire.decode_output(cand[0], cand[1])
        except (KeyError, ValueError) as exc:
            raise WorkerFailed("protocol_error", f"malformed output: {exc}") from None
        atol, rtol = self._tolerance(ref[0])
        if finite_only:  # a wide set
            atol = self._wide_atol(atol, ref_out)
        kind, diff = compare(ref_out, ref[0], cand[0], out, atol, rtol, finite_only)
        if diff is not None:
            result.max_abs_diff = max(diff, result.max_abs_diff or 0.0)
        return kind

    def _set_timing(self, result: EvalResult, ref_ns: list[float], cand_ns: list[float]) -> None:
        ratios = [r / c for r, c in zip(ref_ns, cand_ns)]
        result.speedup = float(statistics.median(ratios))
        low, high = bootstrap_median_ci(ratios, self.settings.ci_level)
        clock = self.settings.device.split(":")[0] + ("_host" if self.settings.on_gpu and not self.timeline else "")
        spread = self.settings.ci_spread if self.settings.ci_spread is not None else CI_SPREAD[clock]
        result.speedup_ci_low, result.speedup_ci_high = widened_ci(result.speedup, low, high, spread, self.settings.ci_level)
        result.runtime_us = statistics.median(cand_ns) / 1e3
        result.ref_runtime_us = statistics.median(ref_ns) / 1e3
        result.runtime_trials_us = [c / 1e3 for c in cand_ns]
        result.ref_runtime_trials_us = [r / 1e3 for r in ref_ns]

    def _start_clock(self) -> None:
        """GPU: start the clock process (a reference-role worker that never sees candidate code),
        give the reference its stack, map it, and choose the batch size from the reference's
        own speed."""
        assert self.reference is not None
        spec = self.reference_outputs[0][0]
        if spec.get("kind") != "tensor":
            raise WorkerFailed("reference_error", "GPU timing needs a tensor output")
        shape, dtype = [int(v) for v in spec["shape"]], str(spec["dtype"])
        out_bytes = max(1, math.prod(shape) * _itemsize(dtype))
        slots = max(1, min(CLOCK_MAX_SLOTS, CLOCK_STACK_BYTES // out_bytes))
        self.clock = _Worker(
            "reference", self.problem_src, None, self.settings, tempfile.mkdtemp(dir=self.scratch), ipc_events=self.timeline
        )
        ready, _ = self.clock.receive(self.settings.load_timeout_s)
        if ready.get("ok") is not True:
            raise WorkerFailed("reference_error", f"the clock process failed: {ready.get('error')}")
        self.clock_inputs = {}
        if self.timeline:
            for side in ("ref", "cand"):
                layout, _ = self.clock.request("inputs", -1, slot=side, max_sets=slots, max_bytes=CLOCK_INPUT_BYTES)
                if "refused" in layout:  # inputs the clock cannot share: the host clock for this task
                    logger.warning("GPU-timeline clock unavailable (%s); timing on the host clock", layout["refused"])
                    self.timeline, self.clock_inputs = False, {}
                    break
                self.clock_inputs[side] = layout
                slots = min(slots, int(layout["capacity"]))
        self.stack_spec = {"slots": slots, "shape": shape, "dtype": dtype}
        self._map(self.reference, "ref", None)
        for _ in range(self.settings.warmup):
            self._window(self.reference, "ref", 1, grow=False)
        per_call = min(self._window(self.reference, "ref", 1)[0] for _ in range(BATCH_PROBES))
        echo = min(self._window(self.reference, "ref", 1, echo=True)[0] for _ in range(BATCH_PROBES))
        self.batch_n = max(1, min(slots, math.ceil(CLOCK_BATCH_NS / max(per_call - echo, MIN_TIMED_NS))))
        ref_ns, echo_ns = [], []
        for _ in range(HARNESS_PROBE_PAIRS):
            ref_ns.append(self._window(self.reference, "ref", self.batch_n)[0])
            echo_ns.append(self._window(self.reference, "ref", self.batch_n, echo=True)[0])
        self.harness_bound = harness_bound(ref_ns, echo_ns)

    def _map(self, worker: _Worker, slot: str, budget: float | None) -> None:
        layout = self.clock_inputs.get(slot)
        extra = {key: layout[key] for key in ("inputs", "ready", "done")} if layout else {}
        header, _ = worker.request("stack", -1, budget, **self.stack_spec, **extra)
        assert self.clock is not None
        answer, _ = self.clock.request("map", -1, slot=slot, meta=header.get("stack"), timeline=bool(layout), **self.stack_spec)
        if "refused" in answer:
            raise WorkerFailed("protocol_error", f"the output stack cannot be mapped: {answer['refused']}")

    def _window(
        self,
        side: _Worker,
        slot: str,
        n: int,
        budget: float | None = None,
        echo: bool = False,
        signs: list[int] | None = None,
        seeds: list[int] | None = None,
        grow: bool = True,
    ) -> tuple[int, float]:
        """One timed window of ``side`` on ``n`` fresh sets: on the GPU timeline
        (``_timeline_window``) unless ``gpu_clock: host``; on the host clock, from sending
        ``side`` a batch of ``n`` fresh seeds to the clock process holding a copy of its ``n``
        outputs (snapshot ``slot``, or overwritten). Work the worker leaves running past its reply
        is either done by then or missing from the copy, which is then judged wrong. Returns the
        window's length (ns) and the gap the worker reported (ns the device stayed busy after its
        stream was done; 0 if none)."""
        assert self.clock is not None
        seeds = seeds or [secrets.randbits(62) for _ in range(n)]
        if self.timeline:
            return self._timeline_window(side, slot, seeds, budget, echo, signs, grow)
        started = time.perf_counter_ns()
        nonce = side.begin("batch", budget, seeds=seeds, signs=signs, echo=echo)
        header, _ = side.answer(nonce, budget)
        self.clock.request("snap", -1, slot=slot, n=len(seeds))
        elapsed = time.perf_counter_ns() - started
        # its checks of the batch only now, the window closed (as for CPU calls, see exchange)
        side.answer(side.begin("settle", budget), budget)
        side.check_contained()
        gap = header.get("gap_ns")
        return elapsed, float(gap) if isinstance(gap, (int, float)) else 0.0

    def _timeline_window(
        self,
        side: _Worker,
        slot: str,
        seeds: list[int],
        budget: float | None,
        echo: bool,
        signs: list[int] | None,
        grow: bool = True,
    ) -> tuple[int, float]:
        """One timed window on the GPU timeline (``gpu_clock: timeline``), measured by the clock
        process, which never loads candidate code:

        1. the clock draws the sets of ``seeds`` into memory no worker maps, holds the GPU for the
           gate, copies the sets into ``slot``'s input buffers, and records the slot's ready
           event and then its start event (E0);
        2. the worker queues behind the ready event its forwards on those buffers and the done
           event, and replies with where its outputs will be (CUDA IPC descriptions);
        3. the clock queues a wait on the done event, a copy of the outputs from there, and its
           end event (E1); the window is E0 to E1.

        A worker that starts early reads the previous window's inputs (its outputs are judged
        wrong); one that signals done before its outputs are complete has them copied
        incomplete; work it leaves running afterwards is missing from the copy, or shows in
        the device-busy gap of ``settle`` (``async_escape``). The gate keeps the GPU busy
        until all three have queued their work, so no host latency is inside the window; a
        window whose start had already passed when the clock queued its end is done again
        with a longer gate (and kept as it is once the gate is at its maximum; warm-up windows,
        ``grow`` false, are kept as they are)."""
        clock = self.clock
        assert clock is not None

        def on_clock(op: str, **extra: Any) -> dict[str, Any]:
            try:
                return clock.request(op, -1, budget, slot=slot, **extra)[0]
            except WorkerFailed as exc:
                self._drop_clock()
                if slot == "cand" and exc.kind == "timeout":  # the candidate's work never signalled done
                    raise WorkerFailed("timeout", f"the timed batch did not finish ({exc.message})") from None
                raise WorkerFailed("judge_error", f"the clock process failed ({exc.kind}: {exc.message})") from None

        while True:
            on_clock("arm", seeds=seeds, signs=signs, gate_ns=self.gate_ns)
            queued, _ = side.answer(side.begin("queue", budget, n=len(seeds), echo=echo), budget)
            closed = on_clock("close", outputs=queued.get("outputs"))
            if "refused" in closed:
                raise WorkerFailed("protocol_error", f"timed outputs: {closed['refused']}")
            settled, _ = side.answer(side.begin("settle", budget), budget)
            side.check_contained()
            if not closed.get("late") or self.gate_ns >= CLOCK_GATE_MAX_NS or not grow:
                break
            self.gate_ns = min(2 * self.gate_ns, float(CLOCK_GATE_MAX_NS))
        if closed.get("late") and grow:
            self.late_windows += 1
        ns, gap = closed.get("ns"), settled.get("gap_ns")
        if not isinstance(ns, (int, float)):
            raise WorkerFailed("judge_error", "the clock process returned no window length")
        return int(ns), float(gap) if isinstance(gap, (int, float)) else 0.0

    def _time_clocked(self, worker: _Worker, result: EvalResult, remaining: Callable[..., float]) -> None:
        """Hardened GPU timing: windows on the GPU timeline (``_timeline_window``) or on this
        process's clock (``_window``, ``gpu_clock: host``).

        Reference and candidate alternate on batches of the same fresh seeds, which this process
        draws at random for every window, so no cache or precomputation can know them; both
        batches' outputs are compared by the clock process, every window. The harness's share of
        a window (timeline: the hand-over between CUDA contexts and the clock's copy of the
        outputs; host clock: round trips, drawing the inputs, copying outputs, the snapshot) is
        measured by an echo of the reference (all of it but the forwards) and taken out of both
        sides.

        Work the candidate leaves on the device slows whichever windows follow (GPU
        time-slicing), its own next one too. With the order alternating, only the reference
        windows of odd pairs directly follow a candidate window, a minority of the pairs, and
        the median of the pair ratios is taken. (A check against the reference's windows with
        no candidate loaded was tried and dropped: on an H200 the reference's windows of small
        kernels ran up to 1.7x slower among a candidate's than back to back, with nothing left
        on the device, so it rejected identical code.)
        """
        assert self.reference is not None and self.clock is not None
        n = self.batch_n
        self.late_windows = 0
        self._map(worker, "cand", remaining())
        try:
            for _ in range(self.settings.warmup):  # both sides, alternately, so neither starts colder
                self._window(self.reference, "ref", 1, grow=False)  # (first calls may be slow to queue)
                self._window(worker, "cand", 1, remaining(), grow=False)
            ref_ns, cand_ns, echo_ns, ref_gaps, cand_gaps = [], [], [], [], []
            for pair in range(self.settings.timing_pairs):
                self._check_scheduling(worker)
                if self.settings.wide_trials and secrets.randbelow(WIDE_ROUND_ODDS) == 0:
                    self._clocked_wide_round(worker, remaining)
                seeds = [secrets.randbits(62) for _ in range(n)]
                for who in ("ref", "cand") if pair % 2 == 0 else ("cand", "ref"):
                    if who == "ref":
                        ns, gap = self._window(self.reference, "ref", n, seeds=seeds)
                        ref_ns.append(ns)
                        ref_gaps.append(gap)
                    else:
                        ns, gap = self._window(worker, "cand", n, remaining(), seeds=seeds)
                        cand_ns.append(ns)
                        cand_gaps.append(gap)
                if (kind := self._compare_snaps(n, result)) is not None:
                    raise WorkerFailed("timed_output_mismatch", f"outputs of timed batch {pair} (fresh input sets): {kind}")
                echo_ns.append(self._window(self.reference, "ref", n, echo=True, seeds=seeds)[0])
        finally:
            try:
                if self.clock is not None:
                    self.clock.request("unmap", -1, slot="cand")
            except WorkerFailed:
                self._drop_clock()
        if statistics.median(cand_gaps) > ASYNC_GAP_REF_FACTOR * max(statistics.median(ref_gaps), 0.0) + ASYNC_GAP_FLOOR_NS:
            result.flags.append("async_escape")
            raise WorkerFailed(
                "async_escape",
                f"work outlived the forward on another stream: the device was busy {statistics.median(cand_gaps) / 1e3:.0f} us "
                f"after the current stream was done (reference {statistics.median(ref_gaps) / 1e3:.0f} us)",
            )
        overhead = 0.0 if self.harness_bound else min(echo_ns)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "GPU windows: forwards %.0f us, echo %.0f us (spread %.0f us), reference spread %.0f us, "
                "speedup %.3f subtracted, %.3f whole",
                (statistics.median(ref_ns) - min(echo_ns)) / 1e3,
                min(echo_ns) / 1e3,
                (max(echo_ns) - min(echo_ns)) / 1e3,
                (max(ref_ns) - min(ref_ns)) / 1e3,
                statistics.median(
                    [max(MIN_TIMED_NS, r - min(echo_ns)) / max(MIN_TIMED_NS, c - min(echo_ns)) for r, c in zip(ref_ns, cand_ns)]
                ),
                statistics.median([r / c for r, c in zip(ref_ns, cand_ns)]),
            )
        if self.harness_bound:
            result.flags.append("harness_bound")
        if self.late_windows:  # windows the gate did not cover at its maximum (host latency inside)
            result.flags.append(f"late_windows:{self.late_windows}")
        result.harness_us = min(echo_ns) / 1e3
        result.timing_method = "gpu_timeline" if self.timeline else "parent_clock"
        self._set_timing(
            result,
            [max(MIN_TIMED_NS, (r - overhead) / n) for r in ref_ns],
            [max(MIN_TIMED_NS, (c - overhead) / n) for c in cand_ns],
        )

    def _compare_snaps(self, n: int, result: EvalResult, finite_only: bool = False) -> str | None:
        assert self.clock is not None
        try:
            verdict, _ = self.clock.request("compare", -1, n=n, finite_only=finite_only)
        except WorkerFailed as exc:
            self._drop_clock()
            raise WorkerFailed("judge_error", f"the clock process failed judging ({exc.kind}: {exc.message})") from None
        diff = verdict.get("max_abs_diff")
        if isinstance(diff, (int, float)):
            result.max_abs_diff = max(float(diff), result.max_abs_diff or 0.0)
        return verdict.get("kind")

    def _clocked_wide_round(self, worker: _Worker, remaining: Callable[..., float]) -> None:
        """An untimed batch of fresh wide sets (random signs) among the timed ones."""
        signs = [1 if secrets.randbits(1) else -1 for _ in range(8)]
        seeds = [secrets.randbits(62) for _ in range(self.batch_n)]
        try:
            self._window(self.reference, "ref", self.batch_n, signs=signs, seeds=seeds)
        except WorkerFailed as exc:
            if exc.kind not in ("runtime_error", "oom"):
                raise
            return  # the reference fails on it too: nothing to judge
        self._window(worker, "cand", self.batch_n, remaining(), signs=signs, seeds=seeds)
        kind = self._compare_snaps(self.batch_n, EvalResult(), finite_only=True)
        if kind in ("numerical_mismatch", "nan_inf"):
            raise WorkerFailed("robust_mismatch", f"a wide set among the timed calls: {kind}")
        if kind is not None:
            raise WorkerFailed(kind, f"a wide set among the timed calls: {kind}")

    def _drop_clock(self) -> None:
        """A failed clock process is killed at once and replaced only once the candidate is gone
        (``_evaluate``): a candidate still holding the GPU would skew, or hang, the new clock's
        calibration, and with it every later candidate of the task."""
        if self.clock is not None:
            self.clock.close(graceful=False)
            self.clock = None

    def _restart_clock(self) -> None:
        """After a failure in the clock process (or a failed unmap): a fresh one, the reference
        mapped again."""
        if self.clock is not None:
            self.clock.close(graceful=False)
            self.clock = None
        try:
            self._start_clock()
        except WorkerFailed as exc:
            self.reference_error = f"{exc.kind}: {exc.message}"

    def _time_kernelbench(self, worker: _Worker, result: EvalResult, remaining: Callable[..., float]) -> None:
        """KernelBench: candidate trials first, then the reference re-timed; mean of each."""
        assert self.reference is not None
        for _ in range(self.settings.warmup):
            worker.request("time", 0, remaining())
        cand = [float(worker.request("time", 0, remaining())[0]["ns"]) for _ in range(self.settings.timing_pairs)]
        ref = [float(self.reference.request("time", 0)[0]["ns"]) for _ in range(self.settings.timing_pairs)]
        result.timing_method = "cuda_event" if self.settings.device.startswith("cuda") else "perf_counter"
        result.runtime_us, result.ref_runtime_us = statistics.mean(cand) / 1e3, statistics.mean(ref) / 1e3
        result.speedup = result.ref_runtime_us / result.runtime_us
        result.runtime_trials_us = [c / 1e3 for c in cand]
        result.ref_runtime_trials_us = [r / 1e3 for r in ref]


def _tail(path: str, limit: int = OUTPUT_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode(errors="replace").strip()
    except OSError:
        return ""


def evaluate_one(problem_src: str, candidate_src: str, settings: EvalSettings, screened_code: str | None = None) -> EvalResult:
    with Evaluator(problem_src, settings) as ev:
        return ev.evaluate(candidate_src, screened_code)
