"""The evaluator on CUDA (inputs generated on the device, outputs judged through CUDA IPC).

Skipped without CUDA; run on the lent GPU machine (see docs/gpu-validation.md). Uses the NVML
check so that this process never initialises CUDA before the evaluator forks its workers.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from testtime.evaluation import EvalSettings, Evaluator  # noqa: E402
from testtime.prompting import candidate_source  # noqa: E402
from testtime.tasks import load_bundled  # noqa: E402

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.fixture(scope="module")
def tasks():
    return {t.name: t.code for t in load_bundled()}


@pytest.mark.parametrize(
    "task,body,correct,kind",
    [
        ("ReLU", "return torch.relu(x)", True, None),
        ("ReLU", "return x.clamp(min=0)", True, None),
        ("ReLU", "return x * 2", False, "numerical_mismatch"),
        ("ReLU", "return x", False, "output_aliases_input"),
        ("ReLU", "return torch.relu(x).half()", False, "dtype_mismatch"),
        ("ReLU", "return torch.relu(x).cpu()", False, "output_type_error"),
        ("ReLU", "return torch.relu(x)[:1]", False, "shape_mismatch"),
        ("Sigmoid", "return torch.sigmoid(x)", True, None),
        ("CrossEntropyLoss", "return torch.nn.functional.cross_entropy(predictions, targets)", True, None),
    ],
)
def test_cuda_verdicts(tasks, task, body, correct, kind):
    settings = EvalSettings(device="cuda", correctness_trials=2, timing_pairs=3, warmup=1)
    with Evaluator(tasks[task], settings) as ev:
        result = ev.evaluate(candidate_source(body, tasks[task]), body)
    assert result.correct is correct, (result.error_kind, result.error_message)
    assert result.error_kind == kind
    if correct:
        assert result.timing_method == "gpu_timeline" and len(result.runtime_trials_us) == 3
        assert result.sandbox in ("landlock", "rlimits")


@pytest.mark.parametrize(
    "allocation,timeout_s,at_once_s",
    [
        # heap memory: RLIMIT_DATA, set once CUDA is up, fails the allocation itself
        ("torch.empty(15_000_000_000)", 20, 10),
        # pinned host memory is a shared mapping RLIMIT_DATA does not see: the parent's watch of
        # the worker's VmRSS ends the call (before it, 60 GB ran into the 20 s request timeout)
        ("torch.empty(60_000_000_000, dtype=torch.uint8, pin_memory=True)", 60, 15),
    ],
    ids=["heap", "pinned"],
)
def test_a_huge_host_allocation_is_oom_at_once(tasks, allocation, timeout_s, at_once_s):
    body = f"y = {allocation}\nreturn torch.relu(x)"
    settings = EvalSettings(device="cuda", correctness_trials=2, timing_pairs=3, warmup=1, timeout_s=timeout_s)
    with Evaluator(tasks["ReLU"], settings) as ev:
        result = ev.evaluate(candidate_source(body, tasks["ReLU"]), "return torch.relu(x)")  # screen bypassed
    assert not result.correct and result.error_kind == "oom", (result.error_kind, result.error_message)
    assert result.wall_s < at_once_s, f"{result.wall_s:.1f} s: not at once"


def _in_a_fresh_interpreter(code: str) -> None:
    """Run ``code`` in a new Python: what initialises CUDA must not run in this process, whose
    evaluators fork their workers (a forked child cannot use CUDA its parent initialised)."""
    import subprocess
    import sys
    import textwrap

    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def test_compare_tensors_matches_the_numpy_comparison():
    _in_a_fresh_interpreter(
        """
        import numpy as np
        import torch

        from testtime.evaluation.engine import compare
        from testtime.evaluation.worker import compare_tensors

        ref = torch.randn(1000, device="cuda")
        cases = [ref.clone(), ref + 1e-3, ref.clone().index_fill_(0, torch.tensor([5], device="cuda"), float("nan"))]
        for out in cases:
            kind, _ = compare_tensors(ref, out, 1e-4, 1e-4, chunk=64)
            expected, _ = compare(
                ref.cpu().numpy(), {"dtype": "torch.float32"}, {"dtype": "torch.float32"}, out.cpu().numpy(), 1e-4, 1e-4
            )
            assert kind == expected, (kind, expected)
        assert np.isfinite(compare_tensors(ref, ref + 1e-3, 1e-4, 1e-4)[1])
        """
    )


def test_an_evaluating_process_with_cuda_initialised_is_refused_with_a_reason():
    # otherwise every worker it forks dies at its first CUDA call (exit status 3, no output)
    _in_a_fresh_interpreter(
        """
        import torch

        from testtime.evaluation import EvalSettings, Evaluator

        torch.zeros(1, device="cuda")
        try:
            Evaluator("", EvalSettings(device="cuda"))
        except RuntimeError as exc:
            assert "already initialised CUDA" in str(exc), exc
        else:
            raise AssertionError("no error")
        """
    )


# --- the trusted GPU clock (Evaluator._time_clocked): attacks that reach the harness in the
# candidate's own process, each rejected or shown to gain nothing -----------------------------------

# Finds the harness object through the garbage collector (the static screen is bypassed below by
# passing a harmless screened body) and makes its device-wide synchronize a no-op, so it replies
# before the candidate's work is done.
_PATCH_SYNC = """
import gc as _gc
for _o in _gc.get_objects():
    if type(_o).__name__ == "_Harness":
        _o._sync = lambda: None
"""
_SIDE = "s = torch.cuda.Stream()\ns.wait_stream(torch.cuda.current_stream())\nwith torch.cuda.stream(s):\n"
_GPU_SETTINGS = {"correctness_trials": 2, "timing_pairs": 3, "warmup": 1}


# The GPU-timeline clock's done event, reached the same way: recorded never again (the clock's wait
# then passes at once), or recorded early, before the forward, with the harness's own record
# patched away.
_PATCH_DONE_NEVER = """
import gc as _gc
for _o in _gc.get_objects():
    if type(_o).__name__ == "_Harness" and _o.done_event is not None:
        _o.done_event.record = lambda *a, **k: None
"""
_PATCH_DONE_EARLY = """
import gc as _gc
for _o in _gc.get_objects():
    if type(_o).__name__ == "_Harness" and _o.done_event is not None:
        _e = _o.done_event
        if not hasattr(_e, "_real_record"):
            _e._real_record = _e.record
            _e.record = lambda *a, **k: None
        _e._real_record()
"""


def _patched(problem: str, body: str, patch: str = _PATCH_SYNC) -> str:
    """A candidate module whose forward runs ``patch`` (the harness exists by then) and then
    ``body``."""
    lines = "\n".join("        " + line for line in body.splitlines())
    return (
        problem
        + "\n\nclass ModelNew(Model):\n    def forward(self, *args):\n"
        + "        exec(_PATCH, {})\n"
        + "        x = args[0]\n"
        + lines
        + "\n\n_PATCH = "
        + repr(patch)
        + "\n"
    )


def _judge(problem: str, source: str) -> object:
    with Evaluator(problem, EvalSettings(device="cuda", **_GPU_SETTINGS)) as ev:
        result = ev.evaluate(source, "return torch.relu(x)")  # screen bypassed
    # a verdict on the candidate, not on a reference that never started: otherwise every
    # "gains nothing" assertion below would pass vacuously
    assert result.error_kind != "reference_error", result.error_message
    return result


def test_work_left_on_a_side_stream_is_timed_or_rejected(tasks):
    # The output computed on a side stream that forward never joins: the harness's device-wide
    # synchronize sees the device busy after the current stream is done (async_escape).
    body = _SIDE + "    y = torch.relu(x)\n    for _ in range(50):\n        z = torch.relu(x)\nreturn y"
    result = _judge(tasks["ReLU"], candidate_source(body, tasks["ReLU"]))
    assert not (result.correct and result.speedup > 1.2), (result.error_kind, result.speedup)


def test_a_harness_that_replies_early_gains_nothing(tasks):
    # The harness patched to skip its synchronize and the output left on a side stream: the
    # window ends only when the clock process holds a copy, so the work is timed or the copy is wrong.
    body = _SIDE + "    for _ in range(20):\n        y = torch.relu(x)\nreturn y"
    result = _judge(tasks["ReLU"], _patched(tasks["ReLU"], body))
    assert not (result.correct and result.speedup > 1.5), (result.error_kind, result.speedup, result.error_message)


def test_work_left_on_the_device_gains_nothing(tasks):
    # Correct output on the current stream, then long work on a side stream that outlives the
    # reply (synchronize patched away): it runs into the windows that follow, the reference's
    # and its own.
    body = (
        "y = torch.relu(x)\n"
        + _SIDE
        + "    w = torch.randn(4096, 4096, device=x.device)\n    for _ in range(30):\n        w = w @ w\nreturn y"
    )
    result = _judge(tasks["ReLU"], _patched(tasks["ReLU"], body))
    # measured on an H200: correct at 0.001x (the leftover work time-slices into the candidate's
    # own windows, which end only at the clock process's copy)
    assert not (result.correct and result.speedup > 1.1), (result.error_kind, result.speedup, result.error_message)


@pytest.mark.parametrize("patch", [_PATCH_DONE_NEVER, _PATCH_DONE_EARLY], ids=["never", "early"])
def test_a_forged_done_event_gains_nothing(tasks, patch):
    # The clock process ends the window when the worker's done event passes: an event never
    # recorded again passes at once and the clock copies the outputs before the forward wrote
    # them; one recorded before the forward has the copy race the forward (wrong, or the forward
    # timed).
    body = "y = x\nfor _ in range(20):\n    y = torch.relu(y)\nreturn y"
    result = _judge(tasks["ReLU"], _patched(tasks["ReLU"], body, patch))
    assert not (result.correct and result.speedup > 1.1), (result.error_kind, result.speedup, result.error_message)


def test_a_forward_that_does_not_wait_for_its_inputs_is_wrong(tasks):
    # Work on a stream that skips the wait on the clock's ready event starts before the inputs are
    # drawn (during the gate): it reads the previous window's inputs.
    body = "s = torch.cuda.Stream()\nwith torch.cuda.stream(s):\n    y = torch.relu(x)\ntorch.cuda.current_stream().wait_stream(s)\nreturn y"
    result = _judge(tasks["ReLU"], candidate_source(body, tasks["ReLU"]))
    assert not (result.correct and result.speedup > 1.1), (result.error_kind, result.speedup, result.error_message)


def test_the_host_clock_is_still_available(tasks):
    settings = EvalSettings(device="cuda", gpu_clock="host", **_GPU_SETTINGS)
    with Evaluator(tasks["ReLU"], settings) as ev:
        result = ev.evaluate(candidate_source("return torch.relu(x)", tasks["ReLU"]), "return torch.relu(x)")
    assert result.correct and result.timing_method == "parent_clock", (result.error_kind, result.error_message)


def test_identical_code_times_at_one(tasks):
    body = "return torch.matmul(A, B)"
    with Evaluator(tasks["Matmul_square"], EvalSettings(device="cuda")) as ev:
        results = [ev.evaluate(candidate_source(body, tasks["Matmul_square"]), body) for _ in range(3)]
    for r in results:
        assert r.correct and r.timing_method == "gpu_timeline", (r.error_kind, r.error_message)
        # kernels of a few us, 64 per window: on the host clock 0.64-1.07 (sessions 6-7), on the
        # GPU timeline 0.992-1.021 (session 9, H200)
        assert 0.95 < r.speedup < 1.05, r.speedup


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_training_split_over_two_gpus_matches_one(tmp_path):
    # The LoRA updates and the probe on a model split over both GPUs (testtime.pg.placement)
    # against the same on one GPU; the larger run is scripts/gpu_validation.py --sections sharded.
    from testtime.models import random_model
    from testtime.pg.shardcheck import compare

    random_model("gpt_oss", None, tmp_path / "model", seed=0, hidden_size=128, num_hidden_layers=4)
    result = compare(tmp_path / "model", k=4, max_new_tokens=16)
    assert len(result["split"]["placement"]["devices"]) == 2
    assert result["split"]["targets"]["expert_tensors"] > 0
    assert max(result["max_diff"].values()) < 1e-4, result["max_diff"]
