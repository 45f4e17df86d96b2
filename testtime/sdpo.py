"""SDPO, self-distilled policy optimisation (reference-protocol §10; the paper's §3.6, App. F), and
Table 9.

A run is TTT's loop (testtime.pg.rollouts) with a different update: step 0 samples K rollouts
per task from θ_0 and evaluates them (the normalised reward is logged only); step s > 0 builds,
for every rollout of step s-1, a *teacher context* (the task's user prompt, optionally execution
feedback on that rollout, and a closing instruction, §10.2), scores the rollout's own tokens
under θ_{s-1} after that context (teacher forcing), and applies one ``importance_sampling``
update with the per-token advantages A_t = β·(log p_teacher(x_t) − log q_student(x_t)).

The pure parts (feedback text, contexts, advantages, Table 9) come first; the torch parts
(teacher log-probs, the batch of the update) after them.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from testtime.pg.rollouts import StepInputs, policy_step
from testtime.prompting import build_messages, prompt_hash

logger = logging.getLogger(__name__)

#: The two variants of §10.1: feedback in the teacher context, or the prompt only (``--no_feedback``).
VARIANTS: tuple[str, ...] = ("feedback", "prompt_only")
#: ``feedback_runtime_unit``: ``ms`` prints the runtime in milliseconds under the ``_us`` labels,
#: as the reference does (KernelBench reports ms; §4.2); ``us`` prints microseconds.
RUNTIME_UNITS: tuple[str, ...] = ("ms", "us")
#: ``student_logprobs``: the student term of A_t is the sampling-time log-prob (``sampler``, the
#: reference) or re-computed by the same forward as the teacher's (``trainer``, §10.2's local note).
STUDENT_LOGPROBS: tuple[str, ...] = ("sampler", "trainer")

FEEDBACK_HEADER = "EXECUTION_FEEDBACK"
#: Verbatim, also for successful attempts (D14).
FEEDBACK_INTRO = "The following is feedback from your unsuccessful earlier attempt:\n"
SOLUTION_INTRO = "Correct solution:\n"
FINAL_INSTRUCTION = "Correctly solve the original question."
MAX_ERROR_LINES = 3
MAX_ERROR_CHARS = 300
ELLIPSIS = "..."

#: Evaluator error kinds (docs/records.md) under which the candidate never compiled: no code, a
#: syntax or import-time error, a failed inline-CUDA build, the static screen; KernelBench's
#: ``compiled=False``. Every other failure happened after the module loaded (``compiled=True``).
NOT_COMPILED: frozenset[str] = frozenset(
    {"extraction_failed", "syntax_error", "load_error", "compile_error", "forbidden_construct", "no_final_channel", "empty_final"}
)


@dataclass(frozen=True)
class Attempt:
    """What the feedback block reports about one evaluated rollout. Runtimes are in the unit the
    block prints (None when not measured); ``error_trace`` is a traceback when one is kept."""

    compiled: bool
    correct: bool
    speedup: float
    runtime: float | None
    ref_runtime: float | None
    error_message: str = ""
    error_trace: str = ""


def attempt_of(record: Mapping[str, Any], runtime_unit: str = "ms") -> Attempt:
    """An evaluation record (docs/records.md, Evaluations) as the feedback block sees it. The
    evaluator keeps no traceback apart from its message, so ``error_trace`` stays empty."""
    if runtime_unit not in RUNTIME_UNITS:
        raise ValueError(f"sdpo.feedback_runtime_unit: {runtime_unit!r} is not one of {RUNTIME_UNITS}")
    scale = 1e-3 if runtime_unit == "ms" else 1.0
    correct = bool(record["correct"])

    def runtime(key: str) -> float | None:
        value = record.get(key)
        if not correct or value is None or (isinstance(value, float) and math.isnan(value)):
            return None  # failed attempts print -1.00, as the reference does
        return float(value) * scale

    kind = record.get("error_kind")
    message = record.get("error_message")
    return Attempt(
        compiled=correct or kind not in NOT_COMPILED,
        correct=correct,
        speedup=float(record.get("speedup") or 0.0),
        runtime=runtime("runtime_us"),
        ref_runtime=runtime("ref_runtime_us"),
        error_message="" if correct or not isinstance(message, str) else message,
    )


def feedback_status(compiled: bool, correct: bool, speedup: float, has_error_message: bool) -> str:
    """§10.2's status: compilation_error, runtime_error (compiled, incorrect, a message),
    incorrect_output (compiled, incorrect, no message), success (correct, speedup > 1) or
    correct_but_slow."""
    if not compiled:
        return "compilation_error"
    if not correct:
        return "runtime_error" if has_error_message else "incorrect_output"
    return "success" if speedup > 1.0 else "correct_but_slow"


def truncate_feedback(text: str, max_lines: int = MAX_ERROR_LINES, max_chars: int = MAX_ERROR_CHARS) -> str:
    """The first ``max_lines`` non-empty lines (stripped) joined with " | ", cut to ``max_chars``
    characters ending in "..." when longer. Idempotent, so the reference's double application
    gives the same text."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    joined = " | ".join(lines[:max_lines])
    if len(joined) > max_chars:
        joined = joined[: max_chars - len(ELLIPSIS)] + ELLIPSIS
    return joined


def feedback_block(attempt: Attempt) -> str:
    """``EXECUTION_FEEDBACK`` and one ``key=value`` line each: status, compiled, correct (Python
    bools), speedup (4 decimals), runtime_us and ref_runtime_us (2 decimals, -1.00 when not
    measured), then error_message and error_trace when non-empty (each truncated twice, as in
    the reference)."""
    message = truncate_feedback(truncate_feedback(attempt.error_message))
    trace = truncate_feedback(truncate_feedback(attempt.error_trace))
    status = feedback_status(attempt.compiled, attempt.correct, attempt.speedup, bool(message))
    lines = [
        FEEDBACK_HEADER,
        f"status={status}",
        f"compiled={attempt.compiled}",
        f"correct={attempt.correct}",
        f"speedup={attempt.speedup:.4f}",
        f"runtime_us={-1.0 if attempt.runtime is None else attempt.runtime:.2f}",
        f"ref_runtime_us={-1.0 if attempt.ref_runtime is None else attempt.ref_runtime:.2f}",
    ]
    if message:
        lines.append(f"error_message={message}")
    if trace:
        lines.append(f"error_trace={trace}")
    return "\n".join(lines)


def teacher_context(user_prompt: str, variant: str, attempt: Attempt | None = None, solution: str | None = None) -> str:
    """§10.2's teacher context: the task's user prompt (stripped), ``Correct solution:`` and a
    solution when given (``include_success_solution``), the feedback on ``attempt`` (variant
    ``feedback``), and the closing instruction; joined by blank lines, stripped, plus "\\n".
    The student's own code is never included."""
    if variant not in VARIANTS:
        raise ValueError(f"sdpo.variants: {variant!r} is not one of {VARIANTS}")
    sections = [user_prompt.strip()]
    if solution is not None:
        sections.append(SOLUTION_INTRO + solution)
    if variant == "feedback":
        if attempt is None:
            raise ValueError("the feedback variant needs the evaluated attempt")
        sections.append(FEEDBACK_INTRO + feedback_block(attempt))
    sections.append(FINAL_INSTRUCTION)
    return "\n\n".join(sections).strip() + "\n"


def teacher_messages(student_messages: Sequence[Mapping[str, str]], context: str) -> list[dict[str, str]]:
    """The student's chat with its last user message replaced by the teacher context: with the
    paper's prompt [system, teacher context] (§10.2 step 4); a few-shot prompt keeps its example
    turns."""
    messages = [dict(m) for m in student_messages]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    messages[last]["content"] = context
    return messages


def solutions_so_far(correct: Sequence[bool], actions: Sequence[str]) -> list[str | None]:
    """For each rollout of one task, in evaluation order, the first correct rollout's action
    evaluated so far (itself included): None before the first correct one (§10.2,
    ``include_success_solution``)."""
    found: str | None = None
    out: list[str | None] = []
    for ok, action in zip(correct, actions):
        if found is None and ok:
            found = action
        out.append(found)
    return out


def token_advantages(teacher: Sequence[float | None], student: Sequence[float], beta: float) -> np.ndarray:
    """A_t = β·(log p_teacher(x_t) − log q_student(x_t)) per completion token; a missing teacher
    value (None or NaN) gives 0 (§10.2 steps 5-6)."""
    if len(teacher) != len(student):
        raise ValueError(f"token_advantages: {len(teacher)} teacher and {len(student)} student log-probs")
    t = np.array([np.nan if v is None else float(v) for v in teacher], dtype=float)
    out = beta * (t - np.asarray(student, dtype=float))
    return np.where(np.isnan(t), 0.0, out)


# ---------------------------------------------------------------- the update's batch (torch)


def sdpo_batch(
    policy: Any,
    tasks: pd.DataFrame,
    previous: Mapping[str, Any],
    run: Mapping[str, Any],
    prompt_variant: str,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The update's inputs (testtime.pg.rollouts.BatchBuilder) from step s-1's rollouts: per task
    the student prompt, the completions, their sampler log-probs and per-token advantages, the
    teacher scored by ``policy`` (θ_{s-1}, the current student: ``--teacher_mode student``).
    Rollouts with identical teacher prompts share one forward pass. Returns the batch and the
    teacher's statistics."""
    import torch

    from testtime.scoring import completion_logprobs

    backend, keys = policy.backend, ["problem_id", "sample_index"]
    columns = keys + ["correct", "speedup", "error_kind", "error_message", "runtime_us", "ref_runtime_us"]
    joined = (
        previous["rollouts"]
        .merge(previous["evaluations"][columns], on=keys, how="inner", validate="one_to_one")
        .sort_values(keys, kind="mergesort")  # evaluation order: "solutions so far" depend on it
    )
    if len(joined) != len(previous["rollouts"]):
        raise ValueError(f"{len(previous['rollouts']) - len(joined)} rollouts have no evaluation record")

    def ids(text: str) -> list[int]:
        return backend.tokenizer(text, add_special_tokens=False).input_ids

    batch, statuses = [], {}
    stats = {"teacher_prompt_tokens": 0, "teacher_completion_tokens": 0, "teacher_logprob_calls": 0}
    started, all_adv = time.monotonic(), []
    for pid, g in joined.groupby("problem_id", sort=True):
        task = tasks.loc[tasks["problem_id"] == pid].iloc[0]
        messages = build_messages(prompt_variant, int(pid), task["name"], task["code"])
        student_prompt = backend.render(messages)
        if set(g["prompt_hash"]) != {prompt_hash(student_prompt)}:
            raise ValueError(f"task {pid}: the rollouts were sampled from a different prompt than the one rendered now")
        user = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        records = g.to_dict("records")
        solutions = solutions_so_far(g["correct"].astype(bool).tolist(), g["raw_action"].fillna("").tolist())
        completions = [list(map(int, r["token_ids"])) for r in records]
        student = [list(map(float, r["token_logprobs"])) for r in records]
        by_prompt: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            attempt = attempt_of(record, run["feedback_runtime_unit"])
            status = feedback_status(attempt.compiled, attempt.correct, attempt.speedup, bool(attempt.error_message))
            statuses[status] = statuses.get(status, 0) + 1
            solution = solutions[i] if run["include_success_solution"] else None
            context = teacher_context(user, run["variant"], attempt, solution)
            by_prompt.setdefault(backend.render(teacher_messages(messages, context)), []).append(i)
        teacher: list[list[float]] = [[] for _ in records]
        with torch.no_grad():
            for prompt, rows in by_prompt.items():
                prompt_ids = ids(prompt)
                lp, _ = completion_logprobs(
                    policy.model, prompt_ids, [completions[i] for i in rows], policy.pad_id, run["autocast"]
                )
                stats["teacher_logprob_calls"] += 1
                for j, i in enumerate(rows):
                    teacher[i] = lp[j, : len(completions[i])].tolist()
                    stats["teacher_prompt_tokens"] += len(prompt_ids)
                    stats["teacher_completion_tokens"] += len(completions[i])
            student_ids = ids(student_prompt)
            if run["student_logprobs"] == "trainer":
                lp, _ = completion_logprobs(policy.model, student_ids, completions, policy.pad_id, run["autocast"])
                student = [lp[i, : len(c)].tolist() for i, c in enumerate(completions)]
        advantages = [token_advantages(t, s, run["beta"]).tolist() for t, s in zip(teacher, student)]
        all_adv.extend(a for row in advantages for a in row)
        batch.append(
            {
                "problem_id": int(pid),
                "prompt_ids": student_ids,
                "completions": completions,
                "sampler_logprobs": [list(map(float, r["token_logprobs"])) for r in records],
                "advantages": advantages,
            }
        )
    adv = np.asarray(all_adv, dtype=float)
    stats.update(
        teacher_logprob_s=time.monotonic() - started,
        feedback_status=dict(sorted(statuses.items())),
        advantage_mean=float(adv.mean()) if adv.size else 0.0,
        advantage_abs_mean=float(np.abs(adv).mean()) if adv.size else 0.0,
        advantage_positive_fraction=float((adv > 0).mean()) if adv.size else 0.0,
    )
    return batch, stats


def run_step(inputs: StepInputs) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A step of an SDPO run: step 0 samples θ_0; step s > 0 updates θ_{s-1} with the per-token
    SDPO advantages of step s-1's rollouts (:func:`sdpo_batch`), then samples θ_s. Row seeds
    come from ``{suite}:sdpo-step{s}``, the same for both variants, so the variants start from
    the same step-0 rollouts and sample step 1 with the same random numbers."""
    run, step = inputs.run, inputs.step
    build = partial(sdpo_batch, run=run, prompt_variant=inputs.sampling["prompt_variant"])
    rollouts, scored, metrics = policy_step(inputs, f"{run['suite']}:sdpo-step{step}", build_batch=build)
    metrics.update(variant=run["variant"], rollouts_cumulative=(step + 1) * int(inputs.tasks["selected"].sum()) * run["k"])
    return rollouts, scored, metrics


# ---------------------------------------------------------------- Table 9

#: Table 9's published fast_1 (reference-protocol §16): (variant, seed) -> step-1 aggregate fast_1.
PAPER_TABLE9: dict[tuple[str, int], float] = {
    ("feedback", 42): 57 / 160,
    ("feedback", 43): 30 / 160,
    ("feedback", 44): 39 / 160,
    ("prompt_only", 42): 62 / 160,
    ("prompt_only", 43): 38 / 160,
    ("prompt_only", 44): 46 / 160,
}


def table9(metrics: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (variant, seed): aggregate fast_1 and correctness of step 0 and of the last
    step (the reported value, step 1 in the paper), the update's teacher statistics and the
    published value; then one ``mean`` row per variant (std with ddof = 1 across seeds, NaN for
    one seed). ``metrics`` are the steps' metrics.json (``variant``, ``seed`` from provenance)."""
    runs: dict[tuple[str, int], dict[int, Mapping[str, Any]]] = {}
    for m in metrics:
        key = (m["variant"], int(m["provenance"]["seed"]))
        runs.setdefault(key, {})[int(m["step"])] = m
    rows = []
    for (variant, seed), steps in sorted(runs.items(), key=lambda kv: (VARIANTS.index(kv[0][0]), kv[0][1])):
        first, last = steps[0], steps[max(steps)]
        update = last.get("update", {})
        rows.append(
            {
                "variant": variant,
                "seed": str(seed),
                "final_step": max(steps),
                "fast_1_step0": first["agg_fast_1"],
                "fast_1": last["agg_fast_1"],
                "correct_rate_step0": first["correct_rate"],
                "correct_rate": last["correct_rate"],
                "n_rollouts": last["n_rollouts"],
                "tasks": " ".join(str(t) for t in last.get("tasks", [])),
                "advantage_abs_mean": update.get("advantage_abs_mean", math.nan),
                "teacher_prompt_tokens": update.get("teacher_prompt_tokens", math.nan),
                "fast_1_std": math.nan,
                "paper_fast_1": PAPER_TABLE9.get((variant, seed), math.nan),
            }
        )
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        values, paper = [r["fast_1"] for r in mine], [r["paper_fast_1"] for r in mine]
        rows.append(
            {
                "variant": variant,
                "seed": "mean",
                "final_step": mine[0]["final_step"],
                "fast_1_step0": statistics.fmean(r["fast_1_step0"] for r in mine),
                "fast_1": statistics.fmean(values),
                "correct_rate_step0": statistics.fmean(r["correct_rate_step0"] for r in mine),
                "correct_rate": statistics.fmean(r["correct_rate"] for r in mine),
                "n_rollouts": sum(r["n_rollouts"] for r in mine),
                "tasks": "",
                "advantage_abs_mean": statistics.fmean(r["advantage_abs_mean"] for r in mine),
                "teacher_prompt_tokens": sum(r["teacher_prompt_tokens"] for r in mine),
                "fast_1_std": statistics.stdev(values) if len(values) > 1 else math.nan,
                "paper_fast_1": statistics.fmean(paper) if not any(math.isnan(p) for p in paper) else math.nan,
            }
        )
    return pd.DataFrame(rows)
