"""One function per workflow stage: DataFrames in, DataFrames out.

``workflow_scripts/*.py`` unpack the ``snakemake`` object and call these; tests call them
directly. Column meanings are documented in docs/records.md.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import pandas as pd

from testtime import analysis
from testtime.prompting import build_messages, candidate_code, candidate_source, extract_python_code
from testtime.tasks import load_suite, make_split, suite_revision

logger = logging.getLogger(__name__)


def prepare_tasks(spec: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """All tasks of a suite with their split, and which eval tasks are sampled."""
    tasks = load_suite(spec)
    split = make_split([t.problem_id for t in tasks], seed=spec["split_seed"], train_fraction=spec["train_fraction"])
    offset, size = spec["subset_offset"], spec["subset_size"]
    subset = split["eval"][offset : None if size is None else offset + size]
    if not subset:
        raise ValueError(
            f"suite {spec['source']!r}: subset_offset={offset}, subset_size={size} selects no eval task "
            f"(there are {len(split['eval'])})"
        )
    df = pd.DataFrame(
        {
            "problem_id": [t.problem_id for t in tasks],
            "name": [t.name for t in tasks],
            "level": [t.level for t in tasks],
            "code": [t.code for t in tasks],
            "split": ["eval" if t.problem_id in split["eval"] else "train" for t in tasks],
            "selected": [t.problem_id in subset for t in tasks],
        }
    )
    info = {**split, "subset": subset, "suite_revision": suite_revision(tasks)}
    return df, info


def sample_tasks(
    backend: Any,
    tasks: pd.DataFrame,
    sampling: dict[str, Any],
    seed: int,
    suite: str,
) -> pd.DataFrame:
    """K samples for every selected task; one row per sample."""
    from testtime.sampling import SamplingParams, row_seed

    params = SamplingParams(temperature=sampling["temperature"], max_new_tokens=sampling["max_new_tokens"])
    rows = []
    for task in tasks[tasks["selected"]].itertuples():
        messages = build_messages(sampling["prompt_variant"], task.problem_id, task.name, task.code)
        prompt = backend.render(messages)
        base = row_seed(seed, suite, task.problem_id, 0)
        started = time.monotonic()
        completions = backend.sample(prompt, sampling["k"], base, params)
        logger.info("task %s: %d samples in %.1f s", task.problem_id, len(completions), time.monotonic() - started)
        prompt_hash = hashlib.sha256(prompt.encode()).hexdigest()[:16]
        for c in completions:
            rows.append(
                {
                    "seed": seed,
                    "problem_id": task.problem_id,
                    "task_name": task.name,
                    "sample_index": c.sample_index,
                    "row_seed": c.row_seed,
                    "prompt_variant": sampling["prompt_variant"],
                    "prompt_hash": prompt_hash,
                    "prompt_tokens": c.prompt_tokens,
                    "completion": c.text,
                    "token_ids": c.token_ids,
                    "token_logprobs": c.token_logprobs,
                    "n_tokens": len(c.token_ids),
                    "finish_reason": c.finish_reason,
                    "lp_sum": c.lp_sum,
                    "lp_mean": c.lp_mean,
                    "surprisal": -c.lp_sum,
                    "surprisal_mean": -c.lp_mean,
                    "raw_action": extract_python_code(c.text),
                }
            )
    return pd.DataFrame(rows)


def evaluate_samples(samples: pd.DataFrame, tasks: pd.DataFrame, evaluation: dict[str, Any]) -> pd.DataFrame:
    """Judge every sample in an isolated worker; one record per sample, never an exception."""
    from testtime.evaluation import EvalSettings, Evaluator

    settings = EvalSettings.from_config(evaluation)
    code = tasks.set_index("problem_id")["code"]
    rows = []
    for problem_id, group in samples.groupby("problem_id", sort=True):
        problem_src = code[problem_id]
        verdicts: dict[str, dict[str, Any]] = {}
        with Evaluator(problem_src, settings) as ev:
            for s in group.itertuples():
                source = candidate_source(s.raw_action, problem_src, mode=evaluation["assembly"]) if s.raw_action.strip() else ""
                digest = hashlib.sha256(source.encode()).hexdigest()[:16]
                reused = evaluation["dedupe"] and digest in verdicts
                if not reused:
                    screened = candidate_code(s.raw_action, mode=evaluation["assembly"])
                    verdicts[digest] = ev.evaluate(source, screened).as_dict()
                verdict = verdicts[digest]
                rows.append(
                    {
                        "seed": s.seed,
                        "problem_id": problem_id,
                        "sample_index": s.sample_index,
                        "candidate_hash": digest,
                        "reused_verdict": reused,
                        **verdict,
                    }
                )
        n_correct = sum(r["correct"] for r in rows if r["problem_id"] == problem_id)
        logger.info("task %s: %d/%d correct, %d unique candidates", problem_id, n_correct, len(group), len(verdicts))
    return pd.DataFrame(rows)


def join_records(samples: list[pd.DataFrame], evaluations: list[pd.DataFrame]) -> pd.DataFrame:
    keys = ["seed", "problem_id", "sample_index"]
    s = pd.concat(samples, ignore_index=True)[keys + ["lp_sum", "lp_mean", "n_tokens", "finish_reason"]]
    e = pd.concat(evaluations, ignore_index=True)[keys + ["correct", "speedup", "error_kind"]]
    joined = s.merge(e, on=keys, how="inner", validate="one_to_one")
    if len(joined) != len(s):
        raise ValueError(f"{len(s) - len(joined)} samples have no evaluation record")
    return joined


def select(records: pd.DataFrame, selection: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Selection per (seed, task, strategy), Table 3, and surprisal-vs-confidence statistics."""
    table = analysis.selection_table(records, score=selection["score"])
    summary = analysis.strategy_summary(table)
    stats = analysis.surprisal_vs_confidence(table)
    rates = {
        "correct_rate": float(records["correct"].mean()),
        "sample_fast_1": float(analysis.fast_1(records["correct"].to_numpy(), records["speedup"].to_numpy()).mean()),
        "n_samples": int(len(records)),
    }
    return table, summary, {**stats, **rates}
