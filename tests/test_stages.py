"""The evaluation stage: deduplication and parallel lanes, with the real evaluator."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from testtime.config import validate
from testtime.evaluation.batch import evaluate_samples
from testtime.tasks import load_bundled


@pytest.fixture(scope="module")
def tasks() -> pd.DataFrame:
    chosen = [t for t in load_bundled() if t.name in ("ReLU", "Sigmoid")]
    return pd.DataFrame([{"problem_id": t.problem_id, "name": t.name, "code": t.code} for t in chosen])


def _samples(tasks: pd.DataFrame) -> pd.DataFrame:
    relu, sigmoid = (int(tasks.loc[tasks.name == n, "problem_id"].iloc[0]) for n in ("ReLU", "Sigmoid"))
    actions = [
        (relu, "return torch.relu(x)"),
        (relu, "return x * 2"),
        (relu, "return torch.relu(x)"),  # a duplicate: judged once
        (relu, ""),
        (sigmoid, "return torch.sigmoid(x)"),
        (sigmoid, "return torch.tanh(x)"),
    ]
    return pd.DataFrame(
        [{"seed": 42, "problem_id": pid, "sample_index": i, "raw_action": a} for i, (pid, a) in enumerate(actions)]
    )


def _evaluation(**overrides) -> dict:
    with open(Path(__file__).resolve().parents[1] / "config" / "config.yaml") as f:
        config = yaml.safe_load(f)
    config["evaluation"].update(correctness_trials=2, timing_pairs=3, warmup=1, **overrides)
    return validate(config)["evaluation"]


def _verdicts(records) -> str:
    """What each sample got, for the assertion message of a failing test."""
    return "; ".join(f"{r.error_kind}: {str(r.error_message)[:300]}" for r in records.itertuples())


@pytest.mark.parametrize("lanes", [1, 2])
def test_verdicts_do_not_depend_on_lanes_and_duplicates_reuse_one_verdict(tasks, lanes):
    records = evaluate_samples(_samples(tasks), tasks, _evaluation(), lanes=lanes).set_index("sample_index")
    assert records["correct"].tolist() == [True, False, True, False, True, False], _verdicts(records)
    assert records.loc[1, "error_kind"] == "numerical_mismatch"
    assert records.loc[3, "error_kind"] == "extraction_failed"
    assert records["reused_verdict"].tolist() == [False, False, True, False, False, False]
    assert records.loc[0, "candidate_hash"] == records.loc[2, "candidate_hash"]


def test_without_dedupe_every_sample_is_judged(tasks):
    records = evaluate_samples(_samples(tasks), tasks, _evaluation(dedupe=False), lanes=2)
    assert not records["reused_verdict"].any()
    assert records["correct"].tolist() == [True, False, True, False, True, False], _verdicts(records)


def test_a_completion_without_a_final_answer_is_an_error_record_never_run(tasks):
    """gpt-oss truncated before its final channel: parse_error_kind becomes the record's error_kind."""
    samples = _samples(tasks)
    samples["parse_error_kind"] = None
    samples.loc[samples.index[0], "parse_error_kind"] = "no_final_channel"
    samples.loc[samples.index[0], "raw_action"] = ""
    records = evaluate_samples(samples, tasks, _evaluation(dedupe=True), lanes=1)
    first = records.iloc[0]
    assert first["error_kind"] == "no_final_channel" and not first["correct"] and first["speedup"] == 0.0
    assert pd.isna(first["candidate_hash"]) and first["trials_passed"] == 0
    assert records.iloc[1:]["error_kind"].ne("no_final_channel").all()


def test_text_too_deeply_nested_to_parse_or_screen_is_a_record_and_the_job_goes_on(tasks):
    # the red team's fourth round: 200,000 nested minus signs made ast.parse raise MemoryError
    # while the answer was assembled, a sum of 600 terms made the screen's visitor recurse past
    # Python's limit; either ended the whole job without one record
    long_sum = " + ".join(["x"] * 600)
    module = f"class ModelNew(nn.Module):\n    def forward(self, x):\n        return {long_sum}\n"
    for summed in (f"return {long_sum}", module):  # the paper's assembly unparses a module's forward
        samples = _samples(tasks)
        samples.loc[samples.index[1], "raw_action"] = "return " + "-" * 200_000 + "x"
        samples.loc[samples.index[5], "raw_action"] = summed
        records = evaluate_samples(samples, tasks, _evaluation(dedupe=True), lanes=1)
        assert records["correct"].tolist() == [True, False, True, False, True, False], _verdicts(records)
        for row in (1, 5):
            assert records.iloc[row]["error_kind"] == "syntax_error", _verdicts(records)
            assert "nested too deeply" in records.iloc[row]["error_message"], _verdicts(records)
