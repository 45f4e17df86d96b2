"""SDPO (reference-protocol §10): the feedback block and teacher context on hand-written cases,
the per-token advantages, Table 9, and the update with per-token advantages on the real model."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from testtime.sdpo import (
    Attempt,
    attempt_of,
    feedback_block,
    feedback_status,
    solutions_so_far,
    table9,
    teacher_context,
    teacher_messages,
    token_advantages,
    truncate_feedback,
)


def test_status_values():
    assert feedback_status(False, False, 0.0, True) == "compilation_error"
    assert feedback_status(True, False, 0.0, True) == "runtime_error"
    assert feedback_status(True, False, 0.0, False) == "incorrect_output"
    assert feedback_status(True, True, 1.2, False) == "success"
    assert feedback_status(True, True, 1.0, False) == "correct_but_slow"  # speedup must exceed 1


def test_feedback_block_of_a_success():
    block = feedback_block(Attempt(True, True, 1.23456, 0.0105, 0.0123))
    assert block == (
        "EXECUTION_FEEDBACK\nstatus=success\ncompiled=True\ncorrect=True\nspeedup=1.2346\nruntime_us=0.01\nref_runtime_us=0.01"
    )


def test_feedback_block_of_a_failure_truncates_the_message():
    message = "Traceback:\n\n  first\n second  \nthird\nfourth"
    block = feedback_block(Attempt(True, False, 0.0, None, None, message))
    assert block.splitlines() == [
        "EXECUTION_FEEDBACK",
        "status=runtime_error",
        "compiled=True",
        "correct=False",
        "speedup=0.0000",
        "runtime_us=-1.00",
        "ref_runtime_us=-1.00",
        "error_message=Traceback: | first | second",
    ]


def test_truncation_caps_at_300_characters_and_is_idempotent():
    long = "x" * 400
    once = truncate_feedback(long)
    assert len(once) == 300 and once.endswith("...") and once[:297] == "x" * 297
    assert truncate_feedback(once) == once  # applied twice in the reference: same text
    assert truncate_feedback("a\n\n\nb\nc\nd") == "a | b | c"
    assert truncate_feedback("   \n") == ""
    exact = "y" * 300
    assert truncate_feedback(exact) == exact


def test_attempt_of_an_evaluation_record():
    record = {
        "correct": True,
        "speedup": 2.0,
        "error_kind": None,
        "error_message": None,
        "runtime_us": 1500.0,
        "ref_runtime_us": 3000.0,
    }
    assert attempt_of(record, "ms") == Attempt(True, True, 2.0, 1.5, 3.0, "")  # the reference's ms under _us
    assert attempt_of(record, "us").runtime == 1500.0
    syntax = {"correct": False, "speedup": 0.0, "error_kind": "syntax_error", "error_message": "bad", "runtime_us": None}
    assert attempt_of(syntax) == Attempt(False, False, 0.0, None, None, "bad")
    mismatch = {
        "correct": False,
        "speedup": 0.0,
        "error_kind": "numerical_mismatch",
        "error_message": None,
        "runtime_us": float("nan"),
    }
    got = attempt_of(mismatch)
    assert got.compiled and not got.correct and got.runtime is None
    assert "status=incorrect_output" in feedback_block(got)
    with pytest.raises(ValueError, match="feedback_runtime_unit"):
        attempt_of(record, "s")


def test_teacher_contexts():
    attempt = Attempt(False, False, 0.0, None, None, "SyntaxError: x")
    feedback = teacher_context("  Write ModelNew.\n", "feedback", attempt)
    assert feedback == (
        "Write ModelNew.\n\n"
        "The following is feedback from your unsuccessful earlier attempt:\n"
        "EXECUTION_FEEDBACK\nstatus=compilation_error\ncompiled=False\ncorrect=False\n"
        "speedup=0.0000\nruntime_us=-1.00\nref_runtime_us=-1.00\nerror_message=SyntaxError: x\n\n"
        "Correctly solve the original question.\n"
    )
    assert teacher_context("Write ModelNew.", "prompt_only") == "Write ModelNew.\n\nCorrectly solve the original question.\n"
    with_solution = teacher_context("P", "prompt_only", solution="return x")
    assert with_solution == "P\n\nCorrect solution:\nreturn x\n\nCorrectly solve the original question.\n"
    with pytest.raises(ValueError, match="needs the evaluated attempt"):
        teacher_context("P", "feedback")
    with pytest.raises(ValueError, match="sdpo.variants"):
        teacher_context("P", "solution_only")


def test_teacher_messages_replace_the_last_user_turn_only():
    student = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "example"},
        {"role": "assistant", "content": "answer"},
        {"role": "user", "content": "task"},
    ]
    teacher = teacher_messages(student, "CTX")
    assert [m["content"] for m in teacher] == ["S", "example", "answer", "CTX"]
    assert student[-1]["content"] == "task"  # not modified


def test_solutions_so_far_follow_evaluation_order():
    assert solutions_so_far([False, True, False, True], ["a", "b", "c", "d"]) == [None, "b", "b", "b"]
    assert solutions_so_far([False, False], ["a", "b"]) == [None, None]


def test_token_advantages():
    got = token_advantages([-1.0, None, -0.5, float("nan")], [-2.0, -1.0, -0.25, -3.0], beta=2.0)
    assert got.tolist() == [2.0, 0.0, -0.5, 0.0]
    with pytest.raises(ValueError, match="2 teacher and 1 student"):
        token_advantages([0.0, 0.0], [0.0], 1.0)


def step_metrics(variant: str, seed: int, step: int, fast: float) -> dict:
    update = {"advantage_abs_mean": 0.5, "teacher_prompt_tokens": 100} if step else {"skipped": True}
    return {
        "variant": variant,
        "step": step,
        "agg_fast_1": fast,
        "correct_rate": 0.5,
        "n_rollouts": 8,
        "tasks": [1, 4],
        "update": update,
        "provenance": {"seed": seed},
    }


def test_table9_rows_and_means():
    metrics = [
        step_metrics("prompt_only", 42, 0, 0.25),
        step_metrics("prompt_only", 42, 1, 0.5),
        step_metrics("feedback", 43, 1, 0.125),
        step_metrics("feedback", 43, 0, 0.25),
        step_metrics("feedback", 42, 0, 0.25),
        step_metrics("feedback", 42, 1, 0.375),
    ]
    table = table9(metrics)
    assert table[["variant", "seed"]].values.tolist() == [
        ["feedback", "42"],
        ["feedback", "43"],
        ["prompt_only", "42"],
        ["feedback", "mean"],
        ["prompt_only", "mean"],
    ]
    fb = table.set_index(["variant", "seed"])
    assert fb.loc[("feedback", "42"), "fast_1"] == 0.375 and fb.loc[("feedback", "42"), "fast_1_step0"] == 0.25
    assert fb.loc[("feedback", "mean"), "fast_1"] == pytest.approx(0.25)
    assert fb.loc[("feedback", "mean"), "fast_1_std"] == pytest.approx(np.std([0.375, 0.125], ddof=1))
    assert math.isnan(fb.loc[("prompt_only", "mean"), "fast_1_std"])  # one seed
    assert fb.loc[("feedback", "42"), "paper_fast_1"] == pytest.approx(57 / 160)
    assert fb.loc[("feedback", "mean"), "paper_fast_1"] == pytest.approx((57 + 30) / 320)


def test_paper_table9_means_match_the_published_ones():
    """The counts of §16 give the published means and stds (26.3% ± 8.6%, 30.4% ± 7.6%)."""
    metrics = [step_metrics(v, s, st, 0.0) for v in ("feedback", "prompt_only") for s in (42, 43, 44) for st in (0, 1)]
    paper = table9(metrics).set_index(["variant", "seed"])["paper_fast_1"]
    assert paper[("feedback", "mean")] == pytest.approx(0.263, abs=5.01e-4)  # 126/480 = 26.25%, printed 26.3%
    assert paper[("prompt_only", "mean")] == pytest.approx(0.304, abs=5.01e-4)
    from testtime.sdpo import PAPER_TABLE9

    assert round(float(np.std([PAPER_TABLE9[("feedback", s)] for s in (42, 43, 44)], ddof=1)), 3) == 0.086


def test_per_token_advantages_merge_and_broadcast():
    import torch

    from testtime.pg.policy import advantage_tensor, pg_loss
    from testtime.scoring import merge_duplicates

    comps, _, advs, counts = merge_duplicates(
        [[1, 2], [3], [1, 2]], [[0.0, 0.0], [0.0], [0.0, 0.0]], [[1.0, 2.0], [5.0], [0.5, -1.0]]
    )
    assert comps == [(3,), (1, 2)] and advs == [[5.0], [1.5, 1.0]] and counts == [1, 2]
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.25]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    scalar = pg_loss(lp, lp, advantage_tensor([2.0, 3.0], lp), mask)
    tokens = pg_loss(lp, lp, advantage_tensor([[2.0, 2.0], [3.0]], lp), mask)
    assert float(scalar) == float(tokens) == -7.0  # ratio 1: -(2 + 2 + 3)


# ---------------------------------------------------------------- the real model


@pytest.fixture(scope="module")
def bundled_tasks() -> pd.DataFrame:
    from testtime.tasks.prepare import prepare_tasks

    spec = {"source": "bundled", "split_seed": 42, "train_fraction": 0.8, "subset_offset": 0, "subset_size": 1}
    tasks, _ = prepare_tasks(spec)
    return tasks


def rollouts_of(backend, tasks: pd.DataFrame, k: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """K real samples of the selected task from the embedded model, with made-up verdicts."""
    from testtime.sampling.loop import sample_tasks

    rollouts = sample_tasks(
        backend, tasks, {"k": k, "temperature": 0.25, "max_new_tokens": 8, "prompt_variant": "compact"}, 42, "t"
    )
    evaluations = rollouts[["problem_id", "sample_index"]].assign(
        correct=[True, False, False][:k],
        speedup=[1.5, 0.0, 0.0][:k],
        error_kind=[None, "syntax_error", "numerical_mismatch"][:k],
        error_message=[None, "SyntaxError: x", "mismatch"][:k],
        runtime_us=[10.0, None, None][:k],
        ref_runtime_us=[15.0, None, None][:k],
    )
    return rollouts, evaluations


SDPO_RUN = {"beta": 1.0, "include_success_solution": False, "feedback_runtime_unit": "ms", "autocast": "none"}


def test_teacher_log_probs_are_the_current_weights_teacher_forced(make_lora_policy, bundled_tasks):
    """sdpo_batch's advantages are β·(teacher-forced log-probs after the teacher prompt − the
    sampler's), the teacher prompt is the rendered §10.2 context, and the feedback and prompt-only
    teachers differ on the same tokens."""
    from testtime.prompting import build_messages
    from testtime.scoring import completion_logprobs
    from testtime.sdpo import sdpo_batch

    policy = make_lora_policy()
    rollouts, evaluations = rollouts_of(policy.backend, bundled_tasks)
    previous = {"rollouts": rollouts, "evaluations": evaluations}
    task = bundled_tasks[bundled_tasks["selected"]].iloc[0]
    messages = build_messages("compact", int(task.problem_id), task["name"], task["code"])
    run = {**SDPO_RUN, "variant": "feedback", "student_logprobs": "sampler", "beta": 0.5}
    batch, stats = sdpo_batch(policy, bundled_tasks, previous, run, "compact")
    assert len(batch) == 1 and len(batch[0]["advantages"]) == 3
    assert stats["feedback_status"] == {"compilation_error": 1, "runtime_error": 1, "success": 1}
    assert stats["teacher_logprob_calls"] == 3  # three different feedback blocks
    row = 1
    attempt = Attempt(False, False, 0.0, None, None, "SyntaxError: x")
    prompt = policy.backend.render(teacher_messages(messages, teacher_context(messages[-1]["content"], "feedback", attempt)))
    ids = policy.backend.tokenizer(prompt, add_special_tokens=False).input_ids
    comp = list(map(int, rollouts.iloc[row]["token_ids"]))
    teacher, _ = completion_logprobs(policy.model, ids, [comp], policy.pad_id)
    expected = 0.5 * (teacher[0].detach().numpy() - np.asarray(rollouts.iloc[row]["token_logprobs"]))
    assert np.asarray(batch[0]["advantages"][row]) == pytest.approx(expected, abs=1e-5)
    prompt_only, stats_po = sdpo_batch(policy, bundled_tasks, previous, {**run, "variant": "prompt_only"}, "compact")
    assert stats_po["teacher_logprob_calls"] == 1  # one context for every rollout of the task
    assert not np.allclose(prompt_only[0]["advantages"][row], batch[0]["advantages"][row])
    # the same engine for both terms: A_t = teacher - trainer log-probs, the sampler's left out
    trainer, _ = sdpo_batch(policy, bundled_tasks, previous, {**run, "student_logprobs": "trainer"}, "compact")
    student, _ = completion_logprobs(policy.model, batch[0]["prompt_ids"], [comp], policy.pad_id)
    assert np.asarray(trainer[0]["advantages"][row]) == pytest.approx(
        0.5 * (teacher[0].detach().numpy() - student[0].detach().numpy()), abs=1e-5
    )


def test_update_with_constant_per_token_advantages_equals_the_scalar_update(make_lora_policy, bundled_tasks, tmp_path):
    """The loss is linear in A: per-token advantages all equal to A_i move the LoRA exactly as the
    scalar A_i does (the shared update code takes either)."""
    import torch

    policy = make_lora_policy()
    rollouts, _ = rollouts_of(policy.backend, bundled_tasks)
    policy.save(tmp_path / "a0", tmp_path / "o0.pt")
    prompt = policy.backend.render([{"role": "user", "content": "x"}])
    scalar = [1.0, -0.5, 0.25]
    group = {
        "prompt_ids": policy.backend.tokenizer(prompt, add_special_tokens=False).input_ids,
        "completions": [list(map(int, t)) for t in rollouts["token_ids"]],
        "sampler_logprobs": [list(map(float, t)) for t in rollouts["token_logprobs"]],
    }
    policy.update([{**group, "advantages": scalar}])
    first = {n: p.detach().clone() for n, p in policy.peft.named_parameters() if p.requires_grad}
    other = make_lora_policy(adapter_dir=tmp_path / "a0", optimizer_path=tmp_path / "o0.pt")
    per_token = [[a] * len(c) for a, c in zip(scalar, group["completions"])]
    other.update([{**group, "advantages": per_token}])
    second = {n: p.detach() for n, p in other.peft.named_parameters() if p.requires_grad}
    assert first.keys() == second.keys()
    assert all(torch.allclose(first[n], second[n], atol=1e-7) for n in first)
    assert any(not torch.equal(first[n], torch.zeros_like(first[n])) for n in first if "lora_B" in n)
