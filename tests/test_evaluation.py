"""The evaluator on real tasks: every candidate runs in a worker process, failures become records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from testtime.evaluation import EvalSettings, Evaluator, evaluate_one
from testtime.evaluation.engine import compare, prescreen
from testtime.prompting import candidate_source
from testtime.tasks import load_bundled

TASKS = {t.name: t for t in load_bundled()}
RELU = TASKS["ReLU"].code
DIAG = TASKS["Matmul_with_diagonal_matrix"].code
XENT = TASKS["CrossEntropyLoss"].code
FAST = EvalSettings(correctness_trials=2, timing_pairs=3, warmup=1, timeout_s=10, candidate_budget_s=30)


def judge(body: str, problem: str = RELU, settings: EvalSettings = FAST):
    return evaluate_one(problem, candidate_source(body, problem), settings)


@pytest.fixture(scope="module")
def relu_evaluator():
    with Evaluator(RELU, FAST) as ev:
        yield ev


@pytest.mark.parametrize("body", ["return torch.relu(x)", "return x.clamp(min=0)", "return torch.nn.functional.relu(x)", "return torch.where(x > 0, x, torch.zeros_like(x))"])
def test_equivalent_rewrites_are_correct(relu_evaluator, body):
    result = relu_evaluator.evaluate(candidate_source(body, RELU))
    assert result.correct, result.error_message
    assert result.error_kind is None
    assert result.speedup > 0 and result.runtime_us > 0 and result.ref_runtime_us > 0
    assert len(result.runtime_trials_us) == FAST.timing_pairs


def test_faster_rewrite_is_measured_faster():
    result = judge("return A.unsqueeze(1) * B", DIAG)
    assert result.correct, result.error_message
    assert result.speedup > 3.0  # diag(A) @ B is an O(N^3) matmul; the broadcast is O(N^2)


def test_integer_targets_keep_their_dtype():
    result = judge("return torch.nn.functional.cross_entropy(predictions, targets)", XENT)
    assert result.correct, result.error_message


@pytest.mark.parametrize(
    "body, kind",
    [
        ("return x * 2", "numerical_mismatch"),
        ("return x.sum(dim=0)", "shape_mismatch"),
        ("return x.double().clamp(min=0)", "dtype_mismatch"),
        ("return (x +", "syntax_error"),
        ("", "abstain"),
        ("return None", "abstain"),
        ("return [torch.relu(x)]", "output_type_error"),
        ("raise ValueError('boom')", "runtime_error"),
        ("return torch.relu(x) * float('nan')", "nan_inf"),
        ("return torch.empty(50_000_000_000)", "oom"),
    ],
)
def test_wrong_candidates_get_an_error_kind(relu_evaluator, body, kind):
    result = relu_evaluator.evaluate(candidate_source(body, RELU))
    assert not result.correct
    assert result.speedup == 0.0
    assert result.error_kind == kind, result.error_message


def test_candidate_code_never_runs_in_this_process(relu_evaluator, tmp_path):
    marker = tmp_path / "ran"
    body = f"open({str(marker)!r}, 'w').write(str(__import__('os').getpid()))\nreturn torch.relu(x)"
    result = relu_evaluator.evaluate(candidate_source(body, RELU))
    assert result.correct
    assert int(marker.read_text()) != os.getpid()


@pytest.mark.parametrize(
    "body, kind",
    [
        ("while True:\n    pass", "timeout"),
        ("import os\nos._exit(0)", "crash"),
        ("import ctypes\nctypes.string_at(0)", "crash"),
        ("import os\nwhile True:\n    os.fork()", None),
    ],
)
def test_hostile_candidates_end_as_records_within_the_timeout(body, kind):
    settings = EvalSettings(correctness_trials=1, timing_pairs=2, warmup=0, timeout_s=4, candidate_budget_s=8)
    started = time.monotonic()
    result = judge(body, settings=settings)
    elapsed = time.monotonic() - started
    assert not result.correct
    assert result.error_kind is not None
    if kind is not None:
        assert result.error_kind == kind, result.error_message
    assert elapsed < settings.candidate_budget_s + 10


def test_a_broken_problem_is_a_reference_error():
    result = evaluate_one("import torch\nraise RuntimeError('bad task')\n", "class ModelNew: pass\n", FAST)
    assert result.error_kind == "reference_error"
    assert "bad task" in result.error_message


def test_prescreen_and_compare_are_strict():
    assert prescreen("")[0] == "extraction_failed"
    assert prescreen("def f(:")[0] == "syntax_error"
    assert prescreen("x = 1")[0] == "load_error"
    ref = np.ones((2, 2), dtype=np.float32)
    assert compare(ref, {"kind": "tensor"}, ref.copy(), 1e-4, 1e-4) == (None, 0.0)
    assert compare(ref, {"kind": "tensor"}, ref + 1e-3, 1e-4, 1e-4)[0] == "numerical_mismatch"
    assert compare(ref, {"kind": "other", "type": "list"}, None, 1e-4, 1e-4)[0] == "output_type_error"


def _cli(problem: Path, candidate: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "testtime.cli", "evaluate", "--problem", str(problem), "--candidate", str(candidate),
         "--device", "cpu", "--json", "--timeout", "5", "--budget", "15", "--trials", "2", "--timing-pairs", "3"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(
    "candidate, correct, kind",
    [
        ("return torch.relu(x)", True, None),
        ("```python\nclass ModelNew(nn.Module):\n    def forward(self, x):\n        return x.clamp(min=0)\n```", True, None),
        ("return -x", False, "numerical_mismatch"),
        ("return torch.relu(x", False, "syntax_error"),
        ("while True:\n    pass", False, "timeout"),
    ],
)
def test_cli_prints_one_json_verdict(tmp_path, candidate, correct, kind):
    problem = tmp_path / "problem.py"
    problem.write_text(RELU)
    cand = tmp_path / "candidate.py"
    cand.write_text(candidate)
    verdict = _cli(problem, cand)
    assert verdict["correct"] is correct
    assert verdict["error_kind"] == kind
    assert (verdict["speedup"] > 0) is correct
    assert {"runtime_us", "ref_runtime_us"} <= set(verdict)
