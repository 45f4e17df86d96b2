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
        assert result.timing_method == "cuda_event" and len(result.runtime_trials_us) == 3
        assert result.sandbox in ("landlock", "rlimits")


def test_a_huge_host_allocation_is_oom_at_once(tasks):
    # The host-memory cap of a GPU worker (RLIMIT_DATA once CUDA is up) fails the call at once.
    # (Pinned host memory, torch.empty(..., pin_memory=True), is mapped by the driver and not
    # capped: measured on an H200, a 60 GB pinned allocation ran into the 20 s request timeout.)
    body = "y = torch.empty(15_000_000_000)\nreturn torch.relu(x)"
    settings = EvalSettings(device="cuda", correctness_trials=2, timing_pairs=3, warmup=1, timeout_s=20)
    with Evaluator(tasks["ReLU"], settings) as ev:
        result = ev.evaluate(candidate_source(body, tasks["ReLU"]), "return torch.relu(x)")  # screen bypassed
    assert not result.correct and result.error_kind == "oom", (result.error_kind, result.error_message)
    assert result.wall_s < 10, f"{result.wall_s:.1f} s: not at once"


def test_compare_tensors_matches_the_numpy_comparison():
    import numpy as np

    from testtime.evaluation.engine import compare
    from testtime.evaluation.worker import compare_tensors

    ref = torch.randn(1000, device="cuda")
    cases = [ref.clone(), ref + 1e-3, ref.clone().index_fill_(0, torch.tensor([5], device="cuda"), float("nan"))]
    for out in cases:
        kind, _ = compare_tensors(ref, out, 1e-4, 1e-4, chunk=64)
        expected, _ = compare(
            ref.cpu().numpy(), {"dtype": "torch.float32"}, {"dtype": "torch.float32"}, out.cpu().numpy(), 1e-4, 1e-4
        )
        assert kind == expected
    assert np.isfinite(compare_tensors(ref, ref + 1e-3, 1e-4, 1e-4)[1])


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
