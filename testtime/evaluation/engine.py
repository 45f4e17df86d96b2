"""The trusted side of evaluation: spawn workers, compare outputs, time, write verdicts.

One :class:`Evaluator` serves one task. It forks a reference worker once (it never sees
candidate code) and computes the reference outputs of every trial's input set; then, for each
candidate, it forks a fresh candidate worker, checks its outputs against the reference, and
times reference and candidate alternately (ABAB...) so machine drift cancels in the per-pair
ratios. Every failure mode of a candidate ends as a record with an ``error_kind``.
"""

from __future__ import annotations

import ast
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from testtime.evaluation import wire
from testtime.evaluation.worker import kill_group, serve

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalSettings:
    device: str = "cpu"
    correctness_trials: int = 3
    timing_pairs: int = 7
    warmup: int = 2
    atol: float = 1e-4
    rtol: float = 1e-4
    timeout_s: float = 20.0  # per request to a worker (load, one forward, one timed call)
    candidate_budget_s: float = 60.0  # wall-clock cap on one candidate, all phases together
    memory_mb: int = 4096
    threads: int = 1
    seed: int = 0  # base of the trial input seeds
    init_seed: int = 42

    @classmethod
    def from_config(cls, section: dict[str, Any], device: str | None = None) -> "EvalSettings":
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in section.items() if k in known}
        if device is not None:
            values["device"] = device
        return cls(**values)

    def worker_settings(self) -> dict[str, Any]:
        return {"device": self.device, "memory_mb": self.memory_mb, "threads": self.threads, "init_seed": self.init_seed}


@dataclass
class EvalResult:
    correct: bool = False
    speedup: float = 0.0
    error_kind: str | None = None
    error_message: str | None = None
    runtime_us: float | None = None
    ref_runtime_us: float | None = None
    max_abs_diff: float | None = None
    trials_passed: int = 0
    runtime_trials_us: list[float] = field(default_factory=list)
    ref_runtime_trials_us: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class WorkerFailed(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class _Worker:
    """A forked worker process and the parent's end of its pipe."""

    _ctx = mp.get_context("fork")

    def __init__(self, role: str, problem_src: str, candidate_src: str | None, settings: EvalSettings, scratch: str):
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        seeds = [settings.seed + i for i in range(settings.correctness_trials)]
        self.process = self._ctx.Process(
            target=serve,
            args=(child_end, role, problem_src, candidate_src, seeds, settings.worker_settings(), scratch),
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self.conn = parent_end
        self.timeout = settings.timeout_s

    def receive(self, timeout: float | None = None) -> tuple[dict[str, Any], bytes]:
        timeout = self.timeout if timeout is None else timeout
        try:
            ready = self.conn.poll(timeout)
        except (EOFError, OSError):
            ready = True
        if not ready:
            raise WorkerFailed("timeout", f"no answer within {timeout:.1f} s")
        try:
            message = self.conn.recv_bytes(wire.MAX_MESSAGE_BYTES)
            return wire.unpack(message)
        except (EOFError, OSError):
            self.process.join(1.0)
            code = self.process.exitcode
            raise WorkerFailed("crash", f"worker exited (exit code {code}) without answering") from None
        except ValueError as exc:
            raise WorkerFailed("protocol_error", f"malformed reply: {exc}") from None

    def request(self, header: dict[str, Any], timeout: float | None = None) -> tuple[dict[str, Any], bytes]:
        try:
            self.conn.send_bytes(wire.pack(header))
        except (BrokenPipeError, OSError):
            raise WorkerFailed("crash", "worker exited before the request") from None
        return self.receive(timeout)

    def close(self) -> None:
        try:
            self.conn.send_bytes(wire.pack({"cmd": "exit"}))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(0.5)
        if self.process.pid is not None:
            kill_group(self.process.pid)
        self.process.join(2.0)
        self.conn.close()


def _check_reply(header: dict[str, Any]) -> None:
    if header.get("ok") is not True:
        raise WorkerFailed(str(header.get("kind", "runtime_error")), str(header.get("error", "")))


def compare(ref: np.ndarray | None, meta: dict[str, Any], out: np.ndarray | None, atol: float, rtol: float) -> tuple[str | None, float | None]:
    """(error_kind, max_abs_diff) of one candidate output against the reference output."""
    if out is None:
        return ("abstain" if meta.get("type") == "NoneType" else "output_type_error"), None
    if ref is None:
        return "reference_error", None
    if out.shape != ref.shape:
        return "shape_mismatch", None
    if out.dtype != ref.dtype:
        return "dtype_mismatch", None
    if ref.dtype.kind in "biu":
        equal = bool(np.array_equal(ref, out))
        return (None if equal else "numerical_mismatch"), float(np.abs(ref.astype(np.int64) - out.astype(np.int64)).max(initial=0))
    ref64, out64 = ref.astype(np.float64), out.astype(np.float64)
    finite = np.isfinite(ref64)
    if not np.all(np.isfinite(out64[finite])) or not np.array_equal(ref64[~finite], out64[~finite], equal_nan=True):
        return "nan_inf", None
    diff = np.abs(ref64[finite] - out64[finite])
    max_diff = float(diff.max(initial=0.0))
    ok = bool(np.all(diff <= atol + rtol * np.abs(ref64[finite])))
    return (None if ok else "numerical_mismatch"), max_diff


def prescreen(candidate_src: str) -> tuple[str | None, str | None]:
    """Cheap checks in the parent, without executing anything."""
    if not candidate_src.strip():
        return "extraction_failed", "empty candidate"
    try:
        tree = ast.parse(candidate_src)
    except SyntaxError as exc:
        return "syntax_error", f"{exc.msg} (line {exc.lineno})"
    if not any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in ast.walk(tree)):
        return "load_error", "the candidate defines no class ModelNew"
    return None, None


class Evaluator:
    """Evaluates candidates of one task; use as a context manager."""

    def __init__(self, problem_src: str, settings: EvalSettings) -> None:
        self.problem_src = problem_src
        self.settings = settings
        self.scratch = tempfile.mkdtemp(prefix="testtime-eval-")
        self.reference: _Worker | None = None
        self.reference_outputs: list[np.ndarray | None] = []
        self.reference_error: str | None = None

    def __enter__(self) -> "Evaluator":
        self._start_reference()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.reference is not None:
            self.reference.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _start_reference(self) -> None:
        ref_dir = os.path.join(self.scratch, "reference")
        os.makedirs(ref_dir)
        self.reference = _Worker("reference", self.problem_src, None, self.settings, ref_dir)
        try:
            header, _ = self.reference.receive()
            _check_reply(header)
            for trial in range(self.settings.correctness_trials):
                header, payload = self.reference.request({"cmd": "run", "trial": trial})
                _check_reply(header)
                self.reference_outputs.append(wire.decode_output(header["output"], payload))
            for _ in range(self.settings.warmup):
                _check_reply(self.reference.request({"cmd": "time", "trial": 0})[0])
        except WorkerFailed as exc:
            self.reference_error = f"{exc.kind}: {exc.message}"
            logger.error("reference failed: %s", self.reference_error)

    def evaluate(self, candidate_src: str) -> EvalResult:
        started = time.monotonic()
        result = self._evaluate(candidate_src)
        result.wall_s = time.monotonic() - started
        return result

    def _evaluate(self, candidate_src: str) -> EvalResult:
        result = EvalResult()
        if self.reference_error is not None:
            result.error_kind, result.error_message = "reference_error", self.reference_error
            return result
        kind, message = prescreen(candidate_src)
        if kind is not None:
            result.error_kind, result.error_message = kind, message
            return result
        cand_dir = tempfile.mkdtemp(prefix="candidate-", dir=self.scratch)
        worker = _Worker("candidate", self.problem_src, candidate_src, self.settings, cand_dir)
        deadline = time.monotonic() + self.settings.candidate_budget_s

        def remaining() -> float:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerFailed("timeout", f"candidate exceeded its {self.settings.candidate_budget_s:.0f} s budget")
            return min(left, self.settings.timeout_s)

        try:
            header, _ = worker.receive(remaining())
            _check_reply(header)
            for trial, ref in enumerate(self.reference_outputs):
                header, payload = worker.request({"cmd": "run", "trial": trial}, remaining())
                _check_reply(header)
                try:
                    out = wire.decode_output(header["output"], payload)
                except (KeyError, ValueError) as exc:
                    raise WorkerFailed("protocol_error", f"malformed output: {exc}") from None
                kind, diff = compare(ref, header["output"], out, self.settings.atol, self.settings.rtol)
                if diff is not None:
                    result.max_abs_diff = max(diff, result.max_abs_diff or 0.0)
                if kind is not None:
                    result.error_kind = kind
                    result.error_message = f"trial {trial}: {kind}" + (f" (max abs diff {diff:.3g})" if diff is not None else "")
                    return result
                result.trials_passed += 1
            self._time(worker, result, remaining)
            result.correct = True
        except WorkerFailed as exc:
            result.error_kind, result.error_message = exc.kind, exc.message[-2000:]
        finally:
            worker.close()
            shutil.rmtree(cand_dir, ignore_errors=True)
        return result

    def _time(self, worker: _Worker, result: EvalResult, remaining: Any) -> None:
        assert self.reference is not None
        for _ in range(self.settings.warmup):
            _check_reply(worker.request({"cmd": "time", "trial": 0}, remaining())[0])
        ref_ns, cand_ns = [], []
        for _ in range(self.settings.timing_pairs):
            header, _ = self.reference.request({"cmd": "time", "trial": 0})
            _check_reply(header)
            ref_ns.append(float(header["ns"]))
            header, _ = worker.request({"cmd": "time", "trial": 0}, remaining())
            _check_reply(header)
            ns = header.get("ns")
            if not isinstance(ns, (int, float)) or ns <= 0:
                raise WorkerFailed("protocol_error", "bad timing reply")
            cand_ns.append(float(ns))
        ratios = [r / c for r, c in zip(ref_ns, cand_ns)]
        result.speedup = float(statistics.median(ratios))
        result.runtime_us = statistics.median(cand_ns) / 1e3
        result.ref_runtime_us = statistics.median(ref_ns) / 1e3
        result.runtime_trials_us = [c / 1e3 for c in cand_ns]
        result.ref_runtime_trials_us = [r / 1e3 for r in ref_ns]


def evaluate_one(problem_src: str, candidate_src: str, settings: EvalSettings) -> EvalResult:
    with Evaluator(problem_src, settings) as ev:
        return ev.evaluate(candidate_src)
