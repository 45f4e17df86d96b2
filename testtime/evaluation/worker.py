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

import os
import sys
import threading
import time
import traceback
import types
from typing import Any

from testtime.evaluation import wire


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
    libc.mallopt(m_trim_threshold, 1 << 62)


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
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/children") as f:
                count += len(f.read().split())
        except OSError:
            continue
    return count


class Integrity:
    """What the harness recorded before candidate code ran, and the check against it."""

    def __init__(self) -> None:
        self.state = _state()
        self.ids = _function_ids()
        self.children = _children()

    def violations(self) -> list[str]:
        state = _state()
        found = [f"{k}: {v!r} -> {state[k]!r}" for k, v in self.state.items() if state[k] != v]
        current = _function_ids()
        found += [f"{k} replaced" for k, v in self.ids.items() if current.get(k, v) != v]
        if _children() > self.children:
            found.append("child process left running")
        return found[:10]


def make_input_sets(problem: types.ModuleType, settings: dict[str, Any]) -> list[list[Any]]:
    """Normal sets from ``get_inputs()`` under each seed, then the wide sets."""
    import torch

    device = settings["device"]
    sets = []
    for seed in settings["seeds"]:
        torch.manual_seed(seed)
        with torch.device(device):  # factory calls in get_inputs allocate on the device directly
            inputs = list(problem.get_inputs())
        sets.append([x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs])
    for i, seed in enumerate(settings.get("wide_seeds", [])):
        gen = torch.Generator(device=device).manual_seed(seed)
        scale = float(settings.get("wide_scale", 3.0))
        wide = []
        for x in sets[i % len(sets)]:
            if isinstance(x, torch.Tensor) and x.is_floating_point():
                wide.append(torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype) * scale)
            else:
                wide.append(x)
        sets.append(wide)
    if settings.get("cast_inputs"):
        # KernelBench casts every input tensor to the precision dtype, integer targets included (bug #151).
        sets = [[x.to(torch.float32) if isinstance(x, torch.Tensor) else x for x in s] for s in sets]
    return sets


def _clone(inputs: list[Any]) -> list[Any]:
    import torch

    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


class _Harness:
    """The command loop of one worker, holding only harness-owned references."""

    def __init__(self, conn: Any, settings: dict[str, Any], model: Any, input_sets: list[list[Any]], integrity: Integrity | None):
        import torch

        self.conn = conn
        self.settings = settings
        self.model = model
        self.input_sets = input_sets
        self.integrity = integrity
        self.device = settings["device"]
        self.cuda = self.device.startswith("cuda")
        self.last: dict[int, Any] = {}
        self.staged: dict[int, list[Any]] = {}
        self.pending: tuple[Any, list[Any], int] | None = None
        self.pool = max(1, min(int(settings.get("pool_size", 1)), len(settings["seeds"])))
        self.inner_repeats = max(1, int(settings.get("inner_repeats", 1)))
        # bound now, before candidate code could replace them (the integrity check also watches them)
        self._equal = torch.equal
        self._perf = time.perf_counter_ns
        self._sync = torch.cuda.synchronize if self.cuda else (lambda: None)
        self.flush = torch.empty(256 * 1024 * 1024, dtype=torch.int8, device=self.device) if self.cuda else None

    def call(self, index: int, timed: bool) -> tuple[Any, dict[str, Any]]:
        import torch

        inputs = self.staged.pop(index, None) or _clone(self.input_sets[index])
        info: dict[str, Any] = {}
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
            # CPU: the fastest of a few back-to-back calls. Slowdowns on a shared CPU are one-sided
            # (page faults, preemption) and hit the two workers independently, so a single call
            # per sample makes per-pair ratios bimodal (measured 0.2x-5x for identical code).
            times = []
            for repeat in range(self.inner_repeats):
                if repeat:
                    inputs = _clone(self.input_sets[index])
                t0 = self._perf()
                out = self.model(*inputs)
                times.append(self._perf() - t0)
            info["ns"] = min(times)
            info["total_ns"] = sum(times)  # what the parent's round-trip clock must roughly agree with
        else:
            out = self.model(*inputs)
            self._sync()
        self.pending = (out, inputs, index)
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
        import torch

        out, inputs, index = self.pending
        self.pending = None
        problems = self.integrity.violations()
        if problems:
            raise _Verdict("tampering", "; ".join(problems))
        for given, kept in zip(inputs, self.input_sets[index]):
            if isinstance(given, torch.Tensor) and not (given.shape == kept.shape and self._equal(given, kept)):
                raise _Verdict("input_mutation", "an input tensor was modified in place")
        if isinstance(out, torch.Tensor) and out.numel() > 0:
            lo = out.untyped_storage().data_ptr()
            hi = lo + out.untyped_storage().nbytes()
            for given in inputs:
                if isinstance(given, torch.Tensor) and given.numel() > 0:
                    g_lo = given.untyped_storage().data_ptr()
                    if g_lo < hi and lo < g_lo + given.untyped_storage().nbytes():
                        raise _Verdict("output_aliases_input", "the output shares memory with an input")

    def serve(self) -> None:
        while True:
            cmd, _ = wire.unpack(self.conn.recv_bytes())
            op = cmd.get("cmd")
            if op == "exit":
                return
            index = int(cmd["set"])
            nonce = cmd.get("nonce")
            try:
                if op == "last":
                    meta, payload = wire.encode_output(self.last.get(index))
                    _reply(self.conn, {"ok": True, "nonce": nonce, "output": meta}, payload)
                    continue
                out, info = self.call(index, timed=op == "time")
                if op == "time":
                    self.last[index] = out
                    _reply(self.conn, {"ok": True, "nonce": nonce, **info})
                    self._check_pending()
                    for i in range(self.pool):  # the next timed calls' inputs, cloned off the clock
                        if i not in self.staged:
                            self.staged[i] = _clone(self.input_sets[i])
                    _reply(self.conn, {"ok": True, "nonce": nonce, "settled": True})
                else:
                    self._check_pending()
                    meta, payload = wire.encode_output(out)
                    _reply(self.conn, {"ok": True, "nonce": nonce, "output": meta}, payload)
            except _Verdict as verdict:
                _reply(self.conn, {"ok": False, "nonce": nonce, "kind": verdict.kind, "error": verdict.message})
                return  # the process state can no longer be trusted
            except MemoryError as exc:
                self.pending = None
                _reply(self.conn, {"ok": False, "nonce": nonce, "kind": "oom", "error": _describe(exc)})
            except BaseException as exc:  # noqa: BLE001 - SystemExit from a candidate is a failure too
                self.pending = None
                text = _describe(exc)
                kind = "oom" if "out of memory" in text or "can't allocate memory" in text else "runtime_error"
                _reply(self.conn, {"ok": False, "nonce": nonce, "kind": kind, "error": text})


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

        sandbox = confine(scratch, int(settings.get("memory_mb", 0)), settings["device"], settings.get("landlock", True))
        _reuse_freed_memory()
        log = os.open("output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(log, 1)  # what a candidate prints is kept apart from the workflow's own logs
        os.dup2(log, 2)
        os.close(log)
        if settings.get("cpu_core") is not None:
            # reference and candidate share one core, so a busier or slower core never favours one side
            os.sched_setaffinity(0, {int(settings["cpu_core"])})
        import torch

        fix_global_state(settings)
        try:
            problem = _load_module("testtime_problem", problem_src, "problem.py")
            input_sets = make_input_sets(problem, settings)
            init_inputs = problem.get_init_inputs()
        except BaseException as exc:  # noqa: BLE001 - a broken problem is reported, not raised
            _reply(conn, {"ok": False, "phase": "reference", "kind": "reference_error", "error": _describe(exc)})
            return
        hardened = settings.get("hardened", True)
        integrity = Integrity() if hardened and role == "candidate" else None
        if role == "reference":
            cls = problem.Model
        else:
            try:
                candidate = _load_module("testtime_candidate", candidate_src or "", "candidate.py")
                cls = candidate.ModelNew
            except SyntaxError as exc:
                _reply(conn, {"ok": False, "phase": "load", "kind": "syntax_error", "error": _describe(exc)})
                return
            except BaseException as exc:  # noqa: BLE001
                text = _describe(exc)
                kind = "compile_error" if "Error building extension" in text or "ninja" in text.lower() else "load_error"
                _reply(conn, {"ok": False, "phase": "load", "kind": kind, "error": text})
                return
        try:
            # Seed before construction so ModelNew gets the same parameters as Model (as KernelBench does).
            torch.manual_seed(int(settings.get("init_seed", 42)))
            model = cls(*init_inputs).to(settings["device"])
        except BaseException as exc:  # noqa: BLE001
            _reply(conn, {"ok": False, "phase": "init", "kind": "init_error", "error": _describe(exc)})
            return
        if integrity is not None and (problems := integrity.violations()):
            _reply(conn, {"ok": False, "phase": "load", "kind": "tampering", "error": "; ".join(problems)})
            return
        _reply(conn, {"ok": True, "phase": "ready", "sandbox": sandbox, "n_sets": len(input_sets)})
        context = torch.no_grad() if settings.get("no_grad", True) else torch.enable_grad()
        with context:
            _Harness(conn, settings, model, input_sets, integrity).serve()
    except BaseException:  # noqa: BLE001
        status = 3
        traceback.print_exc()
    finally:
        # Skip interpreter teardown (atexit hooks, finalisers): a candidate may have planted some.
        os._exit(status)


def _describe(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[-2000:]


def _reply(conn: Any, header: dict[str, Any], payload: bytes = b"") -> None:
    conn.send_bytes(wire.pack(header, payload))


def kill_group(pid: int) -> None:
    import signal

    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
