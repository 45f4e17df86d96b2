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


def evaluate_samples(samples: pd.DataFrame, tasks: pd.DataFrame, evaluation: dict[str, Any], lanes: int = 1) -> pd.DataFrame:
    """Judge every sample in an isolated worker; one record per sample, never an exception.

    On a CPU, ``lanes`` evaluation lanes (the job's threads) judge candidates in parallel, each
    pinned to its own core with its own reference worker; on a GPU one candidate runs at a time.
    """
    from testtime.evaluation import EvalSettings

    settings = EvalSettings.from_config(evaluation)
    code = tasks.set_index("problem_id")["code"]
    units: list[tuple[int, str, list[tuple[str, str, str]]]] = []  # (task, problem, [(digest, source, screened)])
    digests: dict[tuple[int, int], str] = {}
    first_sample: dict[tuple[int, str], int] = {}  # the sample whose verdict others reuse
    for problem_id, group in samples.groupby("problem_id", sort=True):
        problem_src = code[problem_id]
        unique: dict[str, tuple[str, str, str]] = {}
        for n, s in enumerate(group.itertuples()):
            source = candidate_source(s.raw_action, problem_src, mode=evaluation["assembly"]) if s.raw_action.strip() else ""
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            if not evaluation["dedupe"]:
                digest = f"{digest}:{n}"  # every sample judged on its own
            digests[(problem_id, s.sample_index)] = digest
            first_sample.setdefault((problem_id, digest), s.sample_index)
            unique.setdefault(digest, (digest, source, candidate_code(s.raw_action, mode=evaluation["assembly"])))
        n_lanes = max(1, min(lanes, len(unique))) if settings.device == "cpu" else 1
        candidates = list(unique.values())
        units += [(problem_id, problem_src, candidates[i::n_lanes]) for i in range(n_lanes)]
    verdicts = _run_units(units, settings, lanes if settings.device == "cpu" else 1)
    rows = []
    for s in samples.sort_values(["problem_id", "sample_index"]).itertuples():
        digest = digests[(s.problem_id, s.sample_index)]
        rows.append(
            {
                "seed": s.seed,
                "problem_id": s.problem_id,
                "sample_index": s.sample_index,
                "candidate_hash": digest.split(":")[0],
                "reused_verdict": first_sample[(s.problem_id, digest)] != s.sample_index,
                **verdicts[(s.problem_id, digest)],
            }
        )
    records = pd.DataFrame(rows)
    for problem_id, group in (records.groupby("problem_id") if len(records) else []):
        logger.info("task %s: %d/%d correct, %d unique candidates", problem_id, int(group["correct"].sum()), len(group), int((~group["reused_verdict"]).sum()))
    return records


def _evaluate_unit(problem_src: str, candidates: list[tuple[str, str, str]], settings: Any) -> dict[str, dict[str, Any]]:
    from testtime.evaluation import Evaluator

    with Evaluator(problem_src, settings) as ev:
        return {digest: ev.evaluate(source, screened).as_dict() for digest, source, screened in candidates}


_LANE_CORE: int | None = None


def _lane_init(counter: Any, cores: list[int]) -> None:
    """Give each lane process its own core, so lanes never time on the same one."""
    global _LANE_CORE
    with counter.get_lock():
        _LANE_CORE = cores[counter.value % len(cores)]
        counter.value += 1


def _lane_unit(problem_src: str, candidates: list[tuple[str, str, str]], settings: Any) -> dict[str, dict[str, Any]]:
    import dataclasses

    return _evaluate_unit(problem_src, candidates, dataclasses.replace(settings, cpu_core=_LANE_CORE))


def _run_units(units: list[tuple[int, str, list[tuple[str, str, str]]]], settings: Any, lanes: int) -> dict[tuple[int, str], dict[str, Any]]:
    """Evaluate (task, candidates) units: in this process, or in ``lanes`` forked lane processes.

    Lane processes are forked before any candidate code runs anywhere, and each forks its own
    reference and candidate workers, exactly as this process does with one lane.
    """
    verdicts: dict[tuple[int, str], dict[str, Any]] = {}
    if lanes <= 1 or len(units) <= 1:
        for problem_id, problem_src, candidates in units:
            for digest, verdict in _evaluate_unit(problem_src, candidates, settings).items():
                verdicts[(problem_id, digest)] = verdict
        return verdicts
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("fork")
    cores = sorted(os.sched_getaffinity(0))
    with ProcessPoolExecutor(max_workers=lanes, mp_context=ctx, initializer=_lane_init, initargs=(ctx.Value("i", 0), cores)) as pool:
        futures = [(problem_id, pool.submit(_lane_unit, problem_src, candidates, settings)) for problem_id, problem_src, candidates in units]
        for problem_id, future in futures:
            for digest, verdict in future.result().items():
                verdicts[(problem_id, digest)] = verdict
    return verdicts


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
