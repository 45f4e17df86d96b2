"""Execution-grounded evaluation of candidate kernels in isolated worker processes."""

from testtime.evaluation.engine import EvalResult, EvalSettings, Evaluator, evaluate_one

__all__ = ["EvalResult", "EvalSettings", "Evaluator", "evaluate_one"]
