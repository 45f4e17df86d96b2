"""Worker processes: one per task for the reference, one per candidate.

Both are forked from the evaluation parent, which has imported torch but never executed task
or candidate code and never run a torch op (libgomp's thread pool does not survive fork).
A worker answers commands from the parent over a byte pipe (see ``wire``):

- ``run``  (set i)  -> forward on input set i, reply with the output tensor;
- ``time`` (set i)  -> one timed forward on input set i, reply with nanoseconds; the output is
                       kept as the set's "last timed output";
- ``last`` (set i)  -> reply with the last timed output of set i (checked by the parent);
- ``exit``.

Everything the verdict depends on is prepared before candidate code loads: the numeric flags
are fixed, every input set is generated from the problem's ``get_inputs()`` under its seed
(plus "wide" sets: the float inputs redrawn from a signed, wider distribution), and the
identities of the functions and flags the harness relies on are recorded. After every call the
worker checks them again, checks that the inputs it handed out are unchanged and that the
output aliases none of them; any change ends the candidate as ``tampering``,
``input_mutation`` or ``output_aliases_input``.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import traceback
import types
from contextlib import ExitStack
from typing import Any

from testtime.evaluation import wire

# What the checks below call, bound when the (trusted) parent imports this module: candidate
# code may rebind the names in ``os`` and ``time`` (the integrity check watches ``time``'s).
_listdir, _sleep, _monotonic_ns = os.listdir, time.sleep, time.monotonic_ns
_getaffinity, _getpriority, _getscheduler = os.sched_getaffinity, os.getpriority, os.sched_getscheduler


def _load_module(name: str, source: str, filename: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = filename
    code = compile(source, filename, "exec")
    sys.modules[name] = module
    exec(code, module.__dict__)
    return module


def _reuse_freed_memory() -> None:
    """Keep glibc from handing freed blocks back to the OS.

    Otherwise each forward's multi-MB output lands on freshly mapped pages, and whether a call
    pays those page faults depends on the process's allocation history: measured on the 2-core
    VM, the same ReLU call took 0.6 ms or 4 ms in phases, independently in the two workers.
    With a fixed mmap threshold (glibc's maximum, 32 MiB) and no trimming, a few warm-up calls
    settle both workers into reusing their heap.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
    # mallopt takes a C int: the 1 << 62 this passed before arrived as 0, a trim threshold of
    # nothing, and the heap shrank after every forward (brk down then up, 1-3 thousand page
    # faults a call, by allocation history: identical Softplus timed at 1.6-1.9x)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def fix_global_state(settings: dict[str, Any]) -> None:
    """The numeric switches, set identically in reference and candidate workers."""
    import torch

    torch.set_num_threads(int(settings.get("threads", 1)))
    torch.set_default_dtype(torch.float32)
    torch.set_grad_enabled(not settings.get("no_grad", True))
    # Off: exact fp32 everywhere. PyTorch's default keeps matmul exact but runs cuDNN convs in TF32.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = bool(settings.get("pytorch_tf32_default", False))
    torch.set_float32_matmul_precision("highest")
    torch.set_flush_denormal(False)


def _state() -> dict[str, Any]:
    import torch

    return {
        "default_dtype": str(torch.get_default_dtype()),
        "grad_enabled": torch.is_grad_enabled(),
        "num_threads": torch.get_num_threads(),
        "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "python_threads": threading.active_count(),
    }


def _function_ids() -> dict[str, int]:
    """Identity of every attribute of the namespaces a verdict or timing depends on."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    ids: dict[str, int] = {}
    for label, namespace in (("torch", torch), ("F", F), ("Tensor", torch.Tensor), ("Module", nn.Module), ("time", time)):
        for key, value in vars(namespace).items():
            ids[f"{label}.{key}"] = id(value)
    for key, cls in vars(nn).items():
        if isinstance(cls, type) and issubclass(cls, nn.Module) and "forward" in vars(cls):
            ids[f"nn.{key}.forward"] = id(vars(cls)["forward"])
    if torch.cuda.is_available():
        ids.update({f"cuda.{k}": id(v) for k, v in vars(torch.cuda).items()})
        ids.update({f"cuda.Event.{k}": id(v) for k, v in vars(torch.cuda.Event).items()})
    return ids


def _children() -> int:
    count = 0
    for tid in _listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                count += len(f.read().split())
        except OSError:
            continue
    return count


def os_threads() -> int:
    """Threads of this process as the kernel counts them: Python's ``threading`` does not see
    threads started through ``_thread``, ctypes or a C extension."""
    return len(_listdir("/proc/self/task"))


# A joined thread may still be leaving the kernel for a moment after ``join`` returns; longer than
# this (generous for a loaded machine), and it is still running.
THREAD_EXIT_GRACE_NS = 100_000_000
# alignment of each input set in the GPU-timeline clock's buffers (vectorised loads assume it)
INPUT_ALIGN = 256


def settle_threads(baseline: int) -> int:
    """Wait (at most THREAD_EXIT_GRACE_NS) for the thread count to fall back to ``baseline``;
    returns the count then."""
    threads = os_threads()
    if threads <= baseline:
        return threads
    deadline = _monotonic_ns() + THREAD_EXIT_GRACE_NS
    while threads > baseline and _monotonic_ns() < deadline:
        _sleep(0.0002)
        threads = os_threads()
    return threads


def _scheduling() -> dict[str, Any]:
    """This process's own scheduling: a candidate may not take more cores or a higher priority."""
    return {
        "affinity": sorted(_getaffinity(0)),
        "nice": _getpriority(os.PRIO_PROCESS, 0),
        "policy": _getscheduler(0),
    }


def prime_thread_pools(device: str) -> None:
    """Run the kinds of op a forward runs, so that the thread pools torch starts lazily (OpenMP's
    on the first parallel region, measured: one more thread at 2 threads) exist before the
    integrity baseline counts threads: a thread that appears later is the candidate's."""
    import torch
    import torch.nn.functional as F

    x = torch.rand(256, 1024, device=device)
    torch.relu(x).add_(1)
    x @ x.T
    F.conv2d(torch.rand(1, 3, 16, 16, device=device), torch.rand(4, 3, 3, 3, device=device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Integrity:
    """What the harness recorded before candidate code ran, and the check against it."""

    def __init__(self) -> None:
        self.state = _state()
        self.ids = _function_ids()
        self.children = _children()
        self.threads = os_threads()
        self.scheduling = _scheduling()

    def violations(self) -> list[str]:
        state = _state()
        found = [f"{k}: {v!r} -> {state[k]!r}" for k, v in self.state.items() if state[k] != v]
        current = _function_ids()
        found += [f"{k} replaced" for k, v in self.ids.items() if current.get(k, v) != v]
        if _children() > self.children:
            found.append("child process left running")
        if (threads := settle_threads(self.threads)) > self.threads:
            found.append(
                f"{threads - self.threads} thread(s) left running (the kernel counts {threads}, the harness had {self.threads})"
            )
        scheduling = _scheduling()
        found += [f"own {k} changed: {v!r} -> {scheduling[k]!r}" for k, v in self.scheduling.items() if scheduling[k] != v]
        return found[:10]


class InputSource:
    """The input sets of one task, generated by the harness from a spec frozen before candidate
    code loads.

    Sets ``0..n-1`` are the correctness sets: ``get_inputs()`` under each trial seed, then the
    "wide" sets (the float inputs redrawn from a signed, wider distribution). Any higher index
    is a fresh timing set (its own seed), so a candidate cannot have seen a timed input before.
    Eager sources (CPU) keep the correctness sets and hand out clones; lazy sources (CUDA, where
    full-size inputs reach 8 GiB) regenerate a set on the device for every call and keep only its
    fingerprint. Every regenerated set must match the frozen shapes and dtypes, and a recorded
    set its fingerprint, so changing the problem's globals or RNG from candidate code shows.
    """

    def __init__(self, problem: types.ModuleType, settings: dict[str, Any]) -> None:
        import torch

        self.device = settings["device"]
        self.lazy = bool(settings.get("lazy_inputs"))
        self.seeds = list(settings["seeds"])
        self.wide_seeds = list(settings.get("wide_seeds", []))
        self.scale = float(settings.get("wide_scale", 3.0))
        self.cast = bool(settings.get("cast_inputs"))
        # bound now: candidate code may rebind the module's names later
        self._get_inputs = problem.get_inputs
        self._manual_seed = torch.manual_seed
        self._sum, self._amax, self._equal = torch.sum, torch.amax, torch.equal
        self.n = len(self.seeds) + len(self.wide_seeds)
        self.spec: list[list[Any]] = []
        self.fingerprints: list[list[Any]] = []
        self.cache: list[list[Any]] = []
        for index in range(self.n):
            inputs = self._generate(index)
            self.spec.append(_spec_of(inputs))
            self.fingerprints.append(self.fingerprint(inputs))
            if not self.lazy:
                self.cache.append(inputs)
            del inputs

    def _normal(self, seed: int) -> list[Any]:
        import torch

        self._manual_seed(seed)
        with torch.device(self.device):  # factory calls in get_inputs allocate on the device directly
            inputs = list(self._get_inputs())
        inputs = [x.to(self.device) if isinstance(x, torch.Tensor) else x for x in inputs]
        if self.cast:
            # KernelBench casts every input tensor to the precision dtype, integer targets included (bug #151).
            inputs = [x.to(torch.float32) if isinstance(x, torch.Tensor) else x for x in inputs]
        return inputs

    def _generate(self, index: int) -> list[Any]:
        n_normal = len(self.seeds)
        if index < n_normal:
            return self._normal(self.seeds[index])
        if index >= self.n:
            return self._normal(self.seeds[0] + 10_000 + index)
        # the first float input negated, the next not, and so on: signs that catch kernels relying
        # on the inputs' sign (identity for ReLU on rand) and products of them (|A @ B|)
        return self.widen(self._normal(self.wide_seeds[index - n_normal]), [-1, 1] * 8)

    def widen(self, inputs: list[Any], signs: list[int]) -> list[Any]:
        """A wide set: the problem's own inputs (its generator, another seed) with each float
        tensor scaled by ``wide_scale`` and a sign. Scaling keeps every structure get_inputs()
        guarantees (triangular, symmetric, diagonal, banded, sparse; integer index ranges are
        untouched) and moves values out of the range they were drawn from."""
        import torch

        floats = 0
        widened = []
        for x in inputs:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                sign = signs[floats % len(signs)] if signs else 1
                floats += 1
                x = x * (self.scale * (-1.0 if sign < 0 else 1.0))
            widened.append(x)
        return widened

    def get(self, index: int) -> list[Any]:
        """A fresh copy of set ``index`` that the callee may keep or modify."""
        if not self.lazy and index < self.n:
            return _clone(self.cache[index])
        inputs = self._generate(index)
        expected = self.spec[index] if index < self.n else self.spec[0]
        if _spec_of(inputs) != expected or (index < self.n and self.fingerprint(inputs) != self.fingerprints[index]):
            raise _Verdict("tampering", f"input set {index} no longer matches the harness's frozen spec")
        return inputs

    def is_wide(self, index: int) -> bool:
        return len(self.seeds) <= index < self.n

    def drawn(self, seed: int, signs: list[int] | None = None) -> list[Any]:
        """A fresh set under ``seed`` (which the parent draws at random for every timed call);
        with ``signs``, a wide one (``widen``)."""
        inputs = self._normal(seed)
        if signs:
            inputs = self.widen(inputs, signs)
        if _spec_of(inputs) != self.spec[0]:
            raise _Verdict("reference_error", "get_inputs() returned a different shape or dtype under another seed")
        return inputs

    def unchanged(self, index: int, given: list[Any], before: list[Any] | None) -> bool:
        """Whether the inputs handed to a call are as generated (before: their fingerprint then)."""
        import torch

        if not self.lazy and index < self.n:
            return all(
                not isinstance(g, torch.Tensor) or (g.shape == k.shape and self._equal(g, k))
                for g, k in zip(given, self.cache[index])
            )
        return self.fingerprint(given) == before

    def fingerprint(self, inputs: list[Any]) -> list[Any]:
        """Sums that change when any element of an input changes (almost surely). Plain
        reductions in the input's own dtype: a float64 upcast of an 8 GiB input would not fit."""
        import torch

        prints: list[Any] = []
        for x in inputs:
            if not isinstance(x, torch.Tensor):
                prints.append(repr(x))
                continue
            flat = x.reshape(-1)
            if x.is_floating_point():
                prints.append(
                    [float(self._sum(flat)), float(self._sum(flat[::3])), float(self._amax(flat)) if flat.numel() else 0.0]
                )
            else:
                prints.append([int(self._sum(flat)), int(self._sum(flat[::7]))])
        return prints


def _clone(inputs: list[Any]) -> list[Any]:
    import torch

    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


def _spec_of(inputs: list[Any]) -> list[Any]:
    import torch

    return [[list(x.shape), str(x.dtype)] if isinstance(x, torch.Tensor) else repr(x) for x in inputs]


class _Harness:
    """The command loop of one worker, holding only harness-owned references."""

    def __init__(self, conn: Any, settings: dict[str, Any], model: Any, source: InputSource, integrity: Integrity | None):
        import torch

        self.conn = conn
        self.settings = settings
        self.model = model
        self.source = source
        self.integrity = integrity
        self.device = settings["device"]
        self.cuda = self.device.startswith("cuda")
        self.pending: tuple[Any, list[Any], int, list[Any] | None] | None = None
        self.tolerances = settings.get("tolerances", {})
        self.last_given: tuple[Any, ...] | None = None  # (inputs, output, ...) of the last "given" call or batch
        self.region: Any = None  # the region shared with the parent (``share``)
        # GPU clocked timing: this worker's outputs land in ``stack`` (exported once to the clock
        # process); the reference keeps its last real output for the parent's "echo" calibration
        self.stack: Any = None
        self.echo_out: Any = None
        # clock process only: mapped stacks of the timed workers, and snapshots taken from them
        self.mapped: dict[str, Any] = {}
        self.mappings: dict[str, Any] = {}
        self.snaps: dict[str, Any] = {}
        # The GPU-timeline clock (engine._timeline_window). Clock process: per timed slot, the
        # input buffers it draws into (allocations of their own, exported to that slot's worker
        # only), its ready event, its start event and the worker's done event. Timed worker: the
        # clock's buffers mapped, and the two events.
        self.slots: dict[str, dict[str, Any]] = {}
        self.out_maps: dict[str, Any] = {}
        self.out_spec: tuple[int, list[int], str] = (0, [], "")
        self.outputs: list[Any] = []
        self.cycles_per_ns = 0.0
        self.views: list[Any] = []  # per input position: (buffer, set bytes, shape, dtype) or a value
        self.capacity = 0
        self.ready_event: Any = None
        self.done_event: Any = None
        self.queued = False
        # bound now, before candidate code could replace them (the integrity check also watches them)
        self._perf = time.perf_counter_ns
        self._sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=self.device) if self.cuda else None

    def _inputs(self, index: int) -> tuple[list[Any], list[Any] | None]:
        """Inputs for one call and, for lazily generated ones, their fingerprint before the call."""
        inputs = self.source.get(index)
        before = self.source.fingerprint(inputs) if self.source.lazy or index >= self.source.n else None
        return inputs, before

    def call(self, index: int, timed: bool) -> tuple[Any, dict[str, Any]]:
        import torch

        inputs, before = self._inputs(index)
        info: dict[str, Any] = {}
        # Self-timed calls ("time") serve KernelBench's protocol only (and warm-ups): hardened
        # timing is the parent's clock around "given" calls (CPU) or batches (GPU); nothing
        # this process reports about time is used there.
        if timed and self.cuda:
            self.flush.zero_()  # evict L2 outside the timed interval
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self._sync()
            t0 = self._perf()
            start.record()
            out = self.model(*inputs)
            end.record()
            self._sync()  # device-wide: work left on side streams lands in host time
            info["host_ns"] = self._perf() - t0
            info["ns"] = start.elapsed_time(end) * 1e6
        elif timed:
            t0 = self._perf()
            out = self.model(*inputs)
            info["ns"] = self._perf() - t0
        else:
            out = self.model(*inputs)
            self._sync()
        self.pending = (out, inputs, index, before)
        return out, info

    def _check_pending(self) -> None:
        """Checks of the last call. After a timed call they run once the timing reply is sent
        (keeping the parent's round-trip clock on the call alone, which is how it spots forged
        timings) and are answered in a second "settled" message, before the parent lets the
        other worker run: housekeeping never overlaps a timed call.
        """
        if self.pending is None or self.integrity is None:
            self.pending = None
            return
        out, inputs, index, before = self.pending
        self.pending = None
        problems = self.integrity.violations()
        if problems:
            raise _Verdict("tampering", "; ".join(problems))
        if not self.source.unchanged(index, inputs, before):
            raise _Verdict("input_mutation", "an input tensor was modified in place")
        _check_aliasing(out, inputs)

    def _describe_output(self, out: Any, cmd: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        """The output as bytes (CPU), or on a GPU as a handle the reference worker can map."""
        import torch

        if not self.source.lazy:
            return wire.encode_output(out)
        if type(out) is torch.Tensor and out.is_cuda:
            from testtime.evaluation import ipc

            meta = ipc.export(out)
            if cmd.get("probe"):  # the reference describes its own output once, for the parent
                meta = {
                    **{k: v for k, v in meta.items() if k != "ipc"},
                    "finite": bool(torch.isfinite(out).all()) if out.is_floating_point() else True,
                    "any_finite": bool(torch.isfinite(out).any()) if out.is_floating_point() else True,
                }
            return meta, b""
        meta, _ = wire.encode_output(out)
        return meta, b""

    def judge(self, index: int, meta: dict[str, Any]) -> dict[str, Any]:
        """Reference worker: compute set ``index`` and compare a candidate's shared output (on a
        wide set, where the reference is finite)."""
        out, _ = self.call(index, timed=False)
        self.pending = None
        return judge_output(out, meta, self.tolerances, finite_only=self.source.is_wide(index))

    def share(self, size: int) -> None:
        """Map the region the parent shares with this worker (its descriptor follows the
        command on the socket): inputs of "given" calls arrive there, outputs leave there."""
        import mmap
        import socket

        _, fds, _, _ = socket.recv_fds(self.conn, 1, 1)
        try:
            self.region = mmap.mmap(fds[0], size)
        finally:
            for fd in fds:
                os.close(fd)

    def given(self, metas: list[dict[str, Any]]) -> dict[str, Any]:
        """A forward on the inputs the parent just wrote into the shared region (hardened CPU
        timing). The reply says where the output's elements are in this process's memory; the
        parent reads them from there (``/proc/PID/mem``) once the reply has arrived, before it
        reads this process's CPU clock: no copy of the output is on anyone's clock."""
        # the last call's output is let go first, so the new one and its temporaries can reuse
        # its memory (both workers alike; the page faults that made one worker slower than the
        # other were glibc's trim threshold, see _reuse_freed_memory)
        self.last_given = None
        inputs = wire.decode_inputs(metas, self.region)
        out = self.model(*inputs)
        meta, elements = wire.describe_in_place(out)
        self.last_given = (inputs, out, meta, elements)
        return meta

    def echo(self, metas: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything ``given`` does but the forward (reference only): the parent's calibration
        of the harness's own share of a timed exchange (decoding the inputs, the reply)."""
        wire.decode_inputs(metas, self.region)
        return self.last_given[2] if self.last_given is not None else wire.encode_output(None)[0]

    def _check_given(self) -> None:
        """After a "given" call: the integrity check, and the output must not share memory with
        an input (the parent's copy of the inputs is pristine, so mutating them gains nothing)."""
        if self.integrity is None or self.last_given is None:
            return
        problems = self.integrity.violations()
        if problems:
            raise _Verdict("tampering", "; ".join(problems))
        inputs, out = self.last_given[:2]
        _check_aliasing(out, inputs)

    def make_stack(self, slots: int, shape: list[int], dtype: str) -> dict[str, Any]:
        """GPU clocked timing: allocate the buffer the outputs of timed batches are copied to, and
        export it once; the clock process maps it and snapshots it at the end of every window."""
        import torch

        from testtime.evaluation import ipc

        self.stack = torch.empty((slots, *shape), dtype=getattr(torch, dtype.removeprefix("torch.")), device=self.device)
        return ipc.export(self.stack)

    def batch(self, seeds: list[int], signs: list[int], echo: bool) -> dict[str, Any]:
        """GPU clocked timing: one forward per seed on a fresh set drawn on the device (inside the
        parent's window: the inputs exist only once the request arrives), each output copied into
        the stack, then a device-wide synchronize. ``echo`` (reference only): everything but the
        forward. The parent's clock runs from the request to the clock process's snapshot of the
        stack; what this reply says about time is not read."""
        import torch

        if self.stack is None or not 0 < len(seeds) <= self.stack.shape[0]:
            raise _Verdict("protocol_error", "a timed batch without a stack large enough")
        for i, seed in enumerate(seeds):
            inputs = self.source.drawn(int(seed), signs)
            out = self.echo_out if echo else self.model(*inputs)
            if type(out) is not torch.Tensor or out.shape != self.stack.shape[1:] or out.dtype != self.stack.dtype:
                raise _Verdict("shape_mismatch", "a timed output's type, shape or dtype differs from the reference's")
            self.stack[i].copy_(out)
            self.last_given = (inputs, out)
        # Side-stream work not joined in forward: the current stream is done before the device is.
        # Measured here, in the candidate's own process: a patched harness that skips this gains
        # nothing, since the window ends only when the clock process holds the outputs.
        done = torch.cuda.Event()
        done.record()
        done.synchronize()
        t0 = self._perf()
        self._sync()
        if not echo:
            self.echo_out = self.last_given[1] if self.last_given is not None else None
        return {"gap_ns": self._perf() - t0}

    def make_inputs(self, slot: str, max_sets: int, max_bytes: int) -> dict[str, Any]:
        """Clock process (GPU-timeline clock): allocate the buffers a slot's worker reads its timed
        inputs from, room for as many sets as ``max_sets`` and ``max_bytes`` allow, each set
        256-byte aligned (vectorised kernels assume aligned inputs), and its ready and done events."""
        import torch

        from testtime.evaluation import ipc

        if slot in self.slots:
            self.slots.pop(slot)["holder"].close()
        layout: list[Any] = []
        set_bytes = 0
        for x in self.source.drawn(self.source.seeds[0]):
            if isinstance(x, torch.Tensor):
                per = -(-x.numel() * x.element_size() // INPUT_ALIGN) * INPUT_ALIGN
                layout.append((list(x.shape), x.dtype, per))
                set_bytes += per
            elif x is None or isinstance(x, (bool, int, float, str)):
                layout.append(("value", x))
            else:
                raise ValueError(f"an input of type {type(x).__name__} cannot be shared")
        capacity = max(1, min(max_sets, max_bytes // max(set_bytes, 1)))
        holder = ExitStack()
        buffers, metas = [], []
        for entry in layout:
            if entry[0] == "value":
                buffers.append(None)
                metas.append({"value": entry[1]})
                continue
            shape, dtype, per = entry
            raw = holder.enter_context(ipc.dedicated(capacity * per))
            buffers.append((raw, per, shape, dtype))
            metas.append({"tensor": ipc.export(raw), "set_bytes": per, "shape": shape, "dtype": str(dtype)})
        # Both events are the clock's: creating an IPC event makes a file in /dev/shm, which only
        # this process may do (sandbox.confine); the worker opens them, waits on one, records the other
        ready, done = torch.cuda.Event(interprocess=True), torch.cuda.Event(interprocess=True)
        ready.record()  # recorded once, so that a wait on it before the first window returns
        if not self.cycles_per_ns:  # the gate's unit: GPU cycles of torch.cuda._sleep
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda._sleep(1000)
            begin.record()
            torch.cuda._sleep(1_000_000)
            end.record()
            end.synchronize()
            self.cycles_per_ns = 1_000_000 / max(begin.elapsed_time(end) * 1e6, 1.0)
        self.slots[slot] = {
            "holder": holder,
            "buffers": buffers,
            "capacity": capacity,
            "ready": ready,
            "done": done,
            "start": None,
        }
        return {
            "inputs": metas,
            "capacity": capacity,
            "ready": bytes(ready.ipc_handle()).hex(),
            "done": bytes(done.ipc_handle()).hex(),
        }

    def map_inputs(self, metas: list[dict[str, Any]], ready: str, done: str) -> None:
        """Timed worker (GPU-timeline clock): map the clock's input buffers and open its ready and
        done events."""
        import torch

        from testtime.evaluation import ipc

        previous = self.mappings.pop("inputs", None)
        if previous is not None:  # a new clock process (its predecessor failed)
            previous.close()
        holder = ExitStack()
        views: list[Any] = []
        capacity = None
        for meta in metas:
            if "tensor" not in meta:
                views.append(("value", meta.get("value")))
                continue
            raw = holder.enter_context(ipc.opened(meta["tensor"]))
            per = int(meta["set_bytes"])
            views.append((raw, per, [int(v) for v in meta["shape"]], getattr(torch, str(meta["dtype"]).removeprefix("torch."))))
            capacity = min(capacity or raw.numel() // per, raw.numel() // per)
        self.mappings["inputs"] = holder
        self.views, self.capacity = views, capacity or self.out_spec[0]
        device = torch.cuda.current_device()
        self.ready_event = torch.cuda.Event.from_ipc_handle(device, bytes.fromhex(ready))
        self.done_event = torch.cuda.Event.from_ipc_handle(device, bytes.fromhex(done))

    def _input_set(self, i: int) -> list[Any]:
        return [view[1] if view[0] == "value" else _set_view(view, i) for view in self.views]

    def queue(self, n: int, echo: bool) -> list[dict[str, Any]]:
        """Timed worker (GPU-timeline clock): queue ``n`` forwards, on input sets the clock process
        has yet to draw, behind its ready event, then the done event; returns without waiting,
        with where the outputs will be (CUDA IPC descriptions). What it queues starts only once
        the clock has drawn the inputs and recorded its start event; the window ends when the
        clock, waiting on the done event, has copied the outputs from there. Nothing of this
        worker's own runs in the window but the forwards. ``echo`` (reference only): all of it
        but the forwards (the last output, described ``n`` times)."""
        import torch

        from testtime.evaluation import ipc

        slots, shape, dtype = self.out_spec
        if self.ready_event is None or not 0 < n <= min(slots, self.capacity):
            raise _Verdict("protocol_error", "a timed batch without mapped inputs, or larger than they hold")
        self.last_given = None
        self.outputs = []  # kept until the next batch: the clock reads them after this reply
        torch.cuda.current_stream().wait_event(self.ready_event)
        for i in range(n):
            inputs = self._input_set(i)
            out = self.echo_out if echo and self.echo_out is not None else self.model(*inputs)
            if type(out) is not torch.Tensor or not out.is_cuda or list(out.shape) != shape or str(out.dtype) != dtype:
                raise _Verdict("shape_mismatch", "a timed output's type, shape or dtype differs from the reference's")
            self.outputs.append(out)
            self.last_given = (inputs, out)
        self.done_event.record()
        if not echo:
            self.echo_out = self.outputs[-1]
        self.queued = True
        return [ipc.export(out, sync=False) for out in self.outputs]

    def settle_queued(self) -> int:
        """After a queued batch, the window closed: ns the device stayed busy after this worker's
        stream was done (side-stream work not joined in forward)."""
        self.queued = False
        self.done_event.synchronize()
        t0 = self._perf()
        self._sync()
        return self._perf() - t0

    def arm(self, slot: str, seeds: list[int], signs: list[int], gate_ns: float) -> None:
        """Clock process (GPU-timeline clock): draw the fresh sets, then hold the GPU for
        ``gate_ns`` (so that the worker's queued work and this process's wait on it are in place
        before the window starts), copy the sets into the slot's buffers, and record the ready
        event and the start event right behind the copy. Drawn before the gate, into memory
        no worker maps, so a draw that blocks the host stays out of the gate; copied after it, so
        no worker can read the inputs before the start event."""
        import torch

        state = self.slots[slot]
        if not 0 < len(seeds) <= state["capacity"]:
            raise _Verdict("protocol_error", "more sets than the input buffers hold")
        drawn = [self.source.drawn(int(seed), signs) for seed in seeds]
        if gate_ns > 0:
            torch.cuda._sleep(int(gate_ns * self.cycles_per_ns))
        for i, inputs in enumerate(drawn):
            for buffer, x in zip(state["buffers"], inputs):
                if buffer is not None:
                    _set_view(buffer, i).copy_(x)
        state["ready"].record()
        state["start"] = torch.cuda.Event(enable_timing=True)
        state["start"].record()

    def close_window(self, slot: str, outputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Clock process (GPU-timeline clock): wait on the worker's done event, copy the outputs
        from where the worker said they are, record the end event; the window's length in ns,
        and whether it is ``late``: the start event had already passed when all this was
        queued, so the GPU may have idled inside the window waiting for the host (the parent
        lengthens the gate). The outputs must be complete when copied: work that finishes them
        later leaves a wrong copy, work that finishes them in time is inside the window."""
        import torch

        state, snaps = self.slots[slot], self.snaps[slot]
        if not 0 < len(outputs) <= snaps.shape[0]:
            return {"refused": f"{len(outputs)} outputs for a window of at most {snaps.shape[0]}"}
        try:
            views = [self.out_maps[slot].view(meta) for meta in outputs]
        except (ValueError, KeyError, TypeError) as exc:
            return {"refused": f"an output cannot be mapped: {exc}"}
        if any(v.shape != snaps.shape[1:] or v.dtype != snaps.dtype for v in views):
            return {"refused": "an output's shape or dtype differs from the reference's"}
        torch.cuda.current_stream().wait_event(state["done"])
        for i, view in enumerate(views):
            snaps[i].copy_(view)
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        late = bool(state["start"].query())
        end.synchronize()
        return {"ns": state["start"].elapsed_time(end) * 1e6, "late": late}

    def map_stack(
        self, slot: str, meta: dict[str, Any] | None, slots: int, shape: list[int], dtype: str, timeline: bool = False
    ) -> None:
        """Clock process: map a timed worker's stack (checked against what was asked for); for
        the GPU-timeline clock (no stack), make room for the snapshots of its outputs."""
        import torch

        from testtime.evaluation import ipc

        self.unmap(slot)
        if timeline:
            self.snaps[slot] = torch.empty(
                (slots, *shape), dtype=getattr(torch, dtype.removeprefix("torch.")), device=self.device
            )
            self.out_maps[slot] = ipc.Mappings()
            return
        meta = meta or {}
        expected = [slots, *shape]
        if meta.get("shape") != expected or meta.get("dtype") != dtype or meta.get("storage_offset") != 0:
            raise ValueError(f"stack {meta.get('shape')} {meta.get('dtype')}, expected {expected} {dtype}")
        if (meta.get("strides") or [None])[0] != math.prod(shape):
            raise ValueError("the stack is not contiguous")
        holder = ExitStack()
        self.mapped[slot] = holder.enter_context(ipc.opened(meta))
        self.mappings[slot] = holder

    def unmap(self, slot: str) -> None:
        self.mapped.pop(slot, None)
        self.snaps.pop(slot, None)
        mappings = self.out_maps.pop(slot, None)
        if mappings is not None:
            mappings.close()
        holder = self.mappings.pop(slot, None)
        if holder is not None:
            holder.close()

    def snap(self, slot: str, n: int) -> None:
        """Clock process: copy the first ``n`` outputs of a mapped stack (the end of a window)."""
        self.snaps[slot] = self.mapped[slot][:n].clone()
        self._sync()

    def compare_snaps(self, n: int, finite_only: bool) -> dict[str, Any]:
        """Clock process: the candidate's snapshot against the reference's, same fresh sets."""
        ref, out = self.snaps["ref"][:n], self.snaps["cand"][:n]
        tol = self.tolerances.get(str(ref.dtype).removeprefix("torch.")) or self.tolerances.get("float32") or {}
        kind, diff = compare_tensors(
            ref, out, float(tol.get("atol", 1e-4)), float(tol.get("rtol", 1e-4)), finite_only=finite_only
        )
        return {"kind": kind, "max_abs_diff": diff}

    def serve(self) -> None:
        while True:
            cmd, _ = wire.recv(self.conn.fileno())
            op = cmd.get("cmd")
            if op == "exit":
                return
            index = int(cmd.get("set", -1))
            nonce = cmd.get("nonce")
            try:
                if op == "share":
                    self.share(int(cmd["size"]))
                    _reply(self.conn, {"ok": True, "nonce": nonce})
                    continue
                if op in ("given", "echo"):
                    meta = (self.given if op == "given" else self.echo)(cmd.get("inputs") or [])
                    _reply(self.conn, {"ok": True, "nonce": nonce, "output": meta})
                    continue
                if op == "settle":  # the parent's clock has stopped on the last "given" call or batch
                    gap = self.settle_queued() if self.queued else None
                    self._check_given()
                    _reply(self.conn, {"ok": True, "nonce": nonce, "settled": True, "gap_ns": gap})
                    continue
                if op == "stack":
                    spec = (int(cmd["slots"]), [int(v) for v in cmd["shape"]], str(cmd["dtype"]))
                    meta = None
                    if cmd.get("inputs") is not None:  # the GPU-timeline clock: its inputs, no stack
                        self.out_spec = spec
                        self.map_inputs(cmd["inputs"], str(cmd["ready"]), str(cmd["done"]))
                    else:
                        meta = self.make_stack(*spec)
                    _reply(self.conn, {"ok": True, "nonce": nonce, "stack": meta})
                    continue
                if op == "queue":
                    echo = bool(cmd.get("echo")) and self.integrity is None  # a candidate always computes
                    outputs = self.queue(int(cmd["n"]), echo)
                    _reply(self.conn, {"ok": True, "nonce": nonce, "outputs": outputs})
                    continue
                if op == "batch":
                    signs = [int(v) for v in cmd.get("signs") or []]
                    echo = bool(cmd.get("echo")) and self.integrity is None  # a candidate always computes
                    info = self.batch([int(v) for v in cmd.get("seeds") or []], signs, echo)
                    _reply(self.conn, {"ok": True, "nonce": nonce, **info})
                    continue
                if op in ("inputs", "arm", "close", "map", "unmap", "snap", "compare"):  # the clock process only
                    answer: dict[str, Any] = {}
                    if op == "inputs":
                        try:
                            answer = self.make_inputs(str(cmd["slot"]), int(cmd["max_sets"]), int(cmd["max_bytes"]))
                        except ValueError as exc:
                            answer = {"refused": str(exc)}
                    elif op == "arm":
                        signs = [int(v) for v in cmd.get("signs") or []]
                        self.arm(str(cmd["slot"]), [int(v) for v in cmd["seeds"]], signs, float(cmd.get("gate_ns", 0)))
                    elif op == "close":
                        answer = self.close_window(str(cmd["slot"]), list(cmd.get("outputs") or []))
                    elif op == "map":
                        try:
                            self.map_stack(
                                str(cmd["slot"]),
                                cmd.get("meta") or {},
                                int(cmd["slots"]),
                                cmd["shape"],
                                cmd["dtype"],
                                timeline=bool(cmd.get("timeline")) and str(cmd["slot"]) in self.slots,
                            )
                        except ValueError as exc:
                            answer = {"refused": str(exc)}
                    elif op == "unmap":
                        self.unmap(str(cmd["slot"]))
                    elif op == "snap":
                        self.snap(str(cmd["slot"]), int(cmd["n"]))
                    else:
                        answer = self.compare_snaps(int(cmd["n"]), bool(cmd.get("finite_only")))
                    _reply(self.conn, {"ok": True, "nonce": nonce, **answer})
                    continue
                if op == "draw":  # the drawing worker only (a reference-role process)
                    signs = [int(v) for v in cmd.get("signs") or []]
                    metas, payload = wire.encode_inputs(self.source.drawn(int(cmd["seed"]), signs))
                    at = cmd.get("at")
                    if self.region is not None and isinstance(at, int) and 0 <= at <= len(self.region) - len(payload):
                        # at memory speed, not through the socket
                        self.region[at : at + len(payload)] = payload
                        _reply(self.conn, {"ok": True, "nonce": nonce, "inputs": metas, "in_region": len(payload)})
                    else:
                        _reply(self.conn, {"ok": True, "nonce": nonce, "inputs": metas}, payload)
                    continue
                if op == "judge":
                    _reply(self.conn, {"ok": True, "nonce": nonce, **self.judge(index, cmd.get("output") or {})})
                    continue
                out, info = self.call(index, timed=op == "time")
                if op == "time":
                    _reply(self.conn, {"ok": True, "nonce": nonce, **info})
                    self._check_pending()
                    _reply(self.conn, {"ok": True, "nonce": nonce, "settled": True})
                else:
                    self._check_pending()
                    meta, payload = self._describe_output(out, cmd)
                    _reply(self.conn, {"ok": True, "nonce": nonce, "output": meta, **info}, payload)
            except _Verdict as verdict:
                _reply(self.conn, {"ok": False, "nonce": nonce, "kind": verdict.kind, "error": verdict.message})
                return  # the process state can no longer be trusted
            except MemoryError as exc:
                self.pending = self.last_given = None
                _reply(self.conn, {"ok": False, "nonce": nonce, "kind": "oom", "error": _describe(exc)})
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a candidate is a failure too
                self.pending = self.last_given = None
                text = _describe(exc)
                kind = "oom" if "out of memory" in text or "can't allocate memory" in text else "runtime_error"
                _reply(self.conn, {"ok": False, "nonce": nonce, "kind": kind, "error": text})


def _set_view(buffer: tuple[Any, int, list[int], Any], i: int) -> Any:
    """Input set ``i`` of one input in a GPU-timeline clock buffer (the clock's and the worker's
    alike): (uint8 buffer, bytes per set, shape, dtype)."""
    raw, per, shape, dtype = buffer
    return raw[i * per : i * per + math.prod(shape) * dtype.itemsize].view(dtype).view(shape)


def _check_aliasing(out: Any, inputs: list[Any]) -> None:
    import torch

    if not isinstance(out, torch.Tensor) or out.numel() == 0:
        return
    lo = out.untyped_storage().data_ptr()
    hi = lo + out.untyped_storage().nbytes()
    for given in inputs:
        if isinstance(given, torch.Tensor) and given.numel() > 0:
            g_lo = given.untyped_storage().data_ptr()
            if g_lo < hi and lo < g_lo + given.untyped_storage().nbytes():
                raise _Verdict("output_aliases_input", "the output shares memory with an input")


def judge_output(
    ref: Any, meta: dict[str, Any], tolerances: dict[str, dict[str, float]], finite_only: bool = False
) -> dict[str, Any]:
    """Compare a candidate's shared CUDA output with the reference output, on the GPU."""
    import torch

    if meta.get("kind") != "tensor":
        return {"kind": "abstain" if meta.get("type") == "NoneType" else "output_type_error", "max_abs_diff": None}
    if type(ref) is not torch.Tensor:
        return {"kind": "reference_error", "max_abs_diff": None}
    if meta.get("shape") != list(ref.shape):
        return {"kind": "shape_mismatch", "max_abs_diff": None}
    if meta.get("dtype") != str(ref.dtype):
        return {"kind": "dtype_mismatch", "max_abs_diff": None}
    if meta.get("device") != ref.device.type or "ipc" not in meta:
        return {"kind": "output_type_error", "max_abs_diff": None}
    if 0 in meta.get("strides", []) and 0 not in ref.stride() and ref.numel() > 1:
        return {"kind": "output_type_error", "max_abs_diff": None}  # an expanded view, not a result
    from testtime.evaluation import ipc

    tol = tolerances.get(str(ref.dtype).removeprefix("torch.")) or tolerances.get("float32") or {"atol": 1e-4, "rtol": 1e-4}
    try:
        with ipc.opened(meta) as out:
            kind, diff = compare_tensors(ref, out, float(tol["atol"]), float(tol["rtol"]), finite_only=finite_only)
    except ValueError as exc:
        return {"kind": "protocol_error", "max_abs_diff": None, "detail": str(exc)}
    return {"kind": kind, "max_abs_diff": diff}


def compare_tensors(
    ref: Any, out: Any, atol: float, rtol: float, chunk: int = 1 << 26, finite_only: bool = False
) -> tuple[str | None, float]:
    """(error_kind, max_abs_diff) with the semantics of ``engine.compare``, chunked so that an
    8 GiB output needs only a few hundred MiB of float64 temporaries."""
    import torch

    r, o = ref.reshape(-1), out.reshape(-1)
    if not ref.is_floating_point():
        diff = max(
            (int((r[i : i + chunk].long() - o[i : i + chunk].long()).abs().max()) for i in range(0, r.numel(), chunk)), default=0
        )
        return (None if diff == 0 else "numerical_mismatch"), float(diff)
    max_diff, nan_inf, mismatch = 0.0, False, False
    for i in range(0, r.numel(), chunk):
        a, b = r[i : i + chunk].double(), o[i : i + chunk].double()
        finite = torch.isfinite(a)
        if not bool(torch.isfinite(b[finite]).all()):
            nan_inf = True
            break
        if not finite_only and not bool(finite.all()):
            an, bn = a[~finite], b[~finite]
            if not bool(((an == bn) | (torch.isnan(an) & torch.isnan(bn))).all()):
                nan_inf = True
                break
        d = torch.where(finite, (a - b).abs(), torch.zeros_like(a))
        max_diff = max(max_diff, float(d.max()) if d.numel() else 0.0)
        mismatch = mismatch or bool((d > atol + rtol * a.abs()).any())
    if nan_inf:
        return "nan_inf", max_diff
    return (None if not mismatch else "numerical_mismatch"), max_diff


class _Verdict(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def serve(conn: Any, role: str, problem_src: str, candidate_src: str | None, settings: dict[str, Any], scratch: str) -> None:
    """Entry point of a forked worker; never returns."""
    status = 0
    try:
        # Inherited descriptors include the parent's ends of other workers' pipes: a candidate
        # could talk to the reference worker through them. Keep only stdio and our own pipe.
        keep = conn.fileno()
        os.closerange(3, keep)
        os.closerange(keep + 1, 1 << 16)
        import faulthandler

        faulthandler.disable()  # a crashing candidate is an expected outcome, not a report for stderr
        from testtime.evaluation.sandbox import confine

        # what a candidate prints is kept apart from the workflow's own logs; redirected before
        # confining, so that a failure there (CUDA initialisation) is in the log the parent reads
        log = os.open(os.path.join(scratch, "output.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        sandbox = confine(
            scratch,
            int(settings.get("memory_mb", 0)),
            settings["device"],
            settings.get("landlock", True),
            shm=bool(settings.get("ipc_events")),
        )
        _reuse_freed_memory()
        if settings.get("cpu_cores"):
            # Reference and candidate share the same allotted cores, so a busier or slower core
            # never favours one side; a hardened candidate may not leave them (seccomp below), so
            # threads or processes it starts cannot work in parallel beyond its allotment.
            os.sched_setaffinity(0, {int(c) for c in settings["cpu_cores"]})
        import torch

        fix_global_state(settings)
        try:
            problem = _load_module("testtime_problem", problem_src, "problem.py")
            source = InputSource(problem, settings)
            init_inputs = problem.get_init_inputs()
        except BaseException as exc:  # noqa: BLE001 - a broken problem is reported, not raised
            _reply(conn, {"ok": False, "phase": "reference", "kind": "reference_error", "error": _describe(exc)})
            return
        hardened = settings.get("hardened", True)
        if role == "candidate":
            prime_thread_pools(settings["device"])
        integrity = Integrity() if hardened and role == "candidate" else None
        seccomp = False
        if role == "reference":
            cls = problem.Model
        else:
            from testtime.evaluation.sandbox import no_processes, no_signals_out, protect_others

            # before candidate code runs (module level included): other processes' scheduling,
            # limits and memory are out of reach
            seccomp = bool(settings.get("seccomp", True)) and protect_others(pinned=bool(settings.get("pinned")))
            # Sealed before it loads (no process from now on), so that no code of its own can
            # stop the seal: its CPU clock is then its whole time (engine._time_given). One that
            # builds an extension or compiles (a compiler process, while loading or at its
            # first call) is not sealed, and is timed by the parent's wall clock.
            if seccomp and bool(settings.get("pinned")) and bool(settings.get("seal")):
                no_processes()
            try:
                candidate = _load_module("testtime_candidate", candidate_src or "", "candidate.py")
                cls = candidate.ModelNew
            except SyntaxError as exc:
                _reply(conn, {"ok": False, "phase": "load", "kind": "syntax_error", "error": _describe(exc)})
                return
            except BaseException as exc:  # noqa: BLE001
                text = _describe(exc)
                kind = "compile_error" if "Error building extension" in text or "ninja" in text.lower() else "load_error"
                if kind == "compile_error":
                    # the compiler's own diagnostics, not the command lines around them
                    full = "".join(traceback.format_exception_only(type(exc), exc))
                    errors = [line.strip() for line in full.splitlines() if "error" in line.lower() and "-isystem" not in line]
                    text = ("\n".join(errors[:12]) or text)[-2000:]
                _reply(conn, {"ok": False, "phase": "load", "kind": kind, "error": text})
                return
        try:
            # Seed before construction so ModelNew gets the same parameters as Model (as KernelBench does).
            torch.manual_seed(int(settings.get("init_seed", 42)))
            model = cls(*init_inputs).to(settings["device"])
        except BaseException as exc:  # noqa: BLE001
            _reply(conn, {"ok": False, "phase": "init", "kind": "init_error", "error": _describe(exc)})
            return
        if seccomp:
            # loaded (compilers it ran are done): from now on it may signal no process but itself
            seccomp = no_signals_out()
        if integrity is not None and (problems := integrity.violations()):
            _reply(conn, {"ok": False, "phase": "load", "kind": "tampering", "error": "; ".join(problems)})
            return
        ready = {
            "ok": True,
            "phase": "ready",
            "sandbox": sandbox,
            "seccomp": seccomp,
            "n_sets": source.n,
            "fingerprints": source.fingerprints,
        }
        _reply(conn, ready)
        context = torch.no_grad() if settings.get("no_grad", True) else torch.enable_grad()
        with context:
            _Harness(conn, settings, model, source, integrity).serve()
    except BaseException:  # noqa: BLE001
        status = 3
        traceback.print_exc()
        sys.stderr.flush()  # os._exit below skips the flush: the parent reads this in output.log
    finally:
        # Skip interpreter teardown (atexit hooks, finalisers): a candidate may have planted some.
        os._exit(status)


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


def _reply(conn: Any, header: dict[str, Any], payload: bytes = b"") -> None:
    wire.send(conn.fileno(), header, payload)


def supervise(
    conn: Any, pid_pipe: int, role: str, problem_src: str, candidate_src: str | None, settings: dict[str, Any], scratch: str
) -> None:
    """Entry point of a worker's keeper, forked from the parent; runs only trusted code, never returns.

    The keeper makes itself a child subreaper and forks the worker. Every process the worker's
    candidate code starts, double-forked ``setsid`` daemons included, stays in the keeper's
    subtree: an orphan is reparented to the nearest living subreaper ancestor, this keeper, not to
    init. The parent kills the subtree from outside (``sandbox.kill_tree``) and counts the
    keeper's children (only the worker belongs there); the keeper kills it too, when the worker
    exits, when the parent sends SIGTERM and when the parent dies. It reports the worker's pid
    on ``pid_pipe`` and exits with the worker's exit status (signal n: 128 + n).
    """
    import signal
    import struct

    from testtime.evaluation import sandbox

    status = 70
    worker = 0  # its pid while it runs (not yet reaped: the pid, and so its group id, is still its own)

    def stop(signum: int, frame: Any) -> None:
        if worker:
            sandbox.kill_group(worker)
        sandbox.kill_tree(os.getpid())
        os._exit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, stop)  # before the fork: no window in which SIGTERM orphans the tree
        sandbox.set_child_subreaper()
        worker = os.fork()
        if worker == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.close(pid_pipe)
            serve(conn, role, problem_src, candidate_src, settings, scratch)  # exits
        os.write(pid_pipe, struct.pack("!i", worker))
        # hold nothing: the worker alone owns its socket, so its death is EOF for the parent
        os.closerange(3, 1 << 16)
        while True:
            pid, wait_status = os.waitpid(-1, 0)
            if pid == worker:
                worker = 0
                code = os.waitstatus_to_exitcode(wait_status)
                status = code if code >= 0 else 128 - code
                break
        # the worker is gone: nothing it started may outlive it (its orphans are all below us now)
        sandbox.kill_tree(os.getpid())
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    except BaseException:  # noqa: BLE001 - a keeper never raises into multiprocessing's bootstrap
        traceback.print_exc()
    finally:
        os._exit(status)
