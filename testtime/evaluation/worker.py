"""Worker processes: one per task for the reference, one per candidate.

Both are forked from the evaluation parent, which has imported torch but never executed task
or candidate code and never run a torch op (libgomp's thread pool does not survive fork).
A worker answers commands from the parent over a byte pipe (see ``wire``):

- ``{"cmd": "run", "trial": i}``  -> forward on input set i, reply with the output tensor;
- ``{"cmd": "time", "trial": i}`` -> one timed forward on input set i, reply with nanoseconds;
- ``{"cmd": "exit"}``.

Input sets are generated from the problem's ``get_inputs()`` under fixed seeds *before* any
candidate code is loaded, and the candidate receives clones, so it can neither change how
inputs are made nor keep references to the pristine copies it is compared on.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
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


def _limit_resources(memory_mb: int, device: str) -> None:
    # New session: the parent kills the whole process group, so anything the candidate forks dies too.
    os.setsid()
    if device == "cpu" and memory_mb > 0:
        # Address-space cap on CPU only: CUDA reserves huge virtual ranges (evaluator.md §5.1).
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * resource.getpagesize()
        limit = current + memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _make_inputs(problem: types.ModuleType, seeds: list[int], device: str) -> list[list[Any]]:
    import torch

    sets = []
    for seed in seeds:
        torch.manual_seed(seed)
        inputs = problem.get_inputs()
        sets.append([x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs])
    return sets


def _clone(inputs: list[Any]) -> list[Any]:
    import torch

    return [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def serve(
    conn: Any,
    role: str,
    problem_src: str,
    candidate_src: str | None,
    seeds: list[int],
    settings: dict[str, Any],
    scratch: str,
) -> None:
    """Entry point of a forked worker; never returns."""
    status = 0
    try:
        import faulthandler

        faulthandler.disable()  # a crashing candidate is an expected outcome, not a report for stderr
        _limit_resources(int(settings.get("memory_mb", 0)), settings["device"])
        os.chdir(scratch)
        import torch

        torch.set_num_threads(int(settings.get("threads", 1)))
        device = settings["device"]
        try:
            problem = _load_module("testtime_problem", problem_src, "problem.py")
            input_sets = _make_inputs(problem, seeds, device)
            init_inputs = problem.get_init_inputs()
        except BaseException as exc:  # noqa: BLE001 - a broken problem is reported, not raised
            _reply(conn, {"ok": False, "phase": "reference", "error": _describe(exc)})
            return
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
                _reply(conn, {"ok": False, "phase": "load", "kind": "load_error", "error": _describe(exc)})
                return
        try:
            # Seed before construction so ModelNew gets the same parameters as Model (as KernelBench does).
            torch.manual_seed(int(settings.get("init_seed", 42)))
            model = cls(*init_inputs).to(device)
        except BaseException as exc:  # noqa: BLE001
            _reply(conn, {"ok": False, "phase": "init", "kind": "init_error", "error": _describe(exc)})
            return
        _reply(conn, {"ok": True, "phase": "ready"})
        with torch.no_grad():
            while True:
                cmd, _ = wire.unpack(conn.recv_bytes())
                if cmd.get("cmd") == "exit":
                    return
                trial = int(cmd["trial"])
                inputs = _clone(input_sets[trial])
                try:
                    if cmd["cmd"] == "time":
                        _sync(device)
                        start = time.perf_counter_ns()
                        model(*inputs)
                        _sync(device)
                        _reply(conn, {"ok": True, "ns": time.perf_counter_ns() - start})
                    else:
                        out = model(*inputs)
                        _sync(device)
                        meta, payload = wire.encode_output(out)
                        _reply(conn, {"ok": True, "output": meta}, payload)
                except MemoryError as exc:
                    _reply(conn, {"ok": False, "phase": "forward", "kind": "oom", "error": _describe(exc)})
                except BaseException as exc:  # noqa: BLE001
                    kind = "oom" if "can't allocate memory" in str(exc) else "runtime_error"
                    _reply(conn, {"ok": False, "phase": "forward", "kind": kind, "error": _describe(exc)})
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
    for target in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
