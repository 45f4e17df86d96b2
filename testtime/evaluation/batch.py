"""Batch evaluation: every sample of a set judged in isolated workers, one record per sample.

Identical candidate sources of a task are judged once (``evaluation.dedupe``). On a CPU the
candidates are spread over evaluation lanes (forked processes, each pinned to its own core with
its own reference worker); on a GPU one candidate runs at a time. Column meanings are in
docs/records.md (evaluation records).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd

from testtime.evaluation.engine import ERROR_MESSAGE_CHARS, EvalResult, EvalSettings, Evaluator
from testtime.prompting import candidate_code, candidate_source

logger = logging.getLogger(__name__)

#: Digest prefix of samples judged without running: their completion had no answer to evaluate.
PARSE_ERROR = "parse-error:"
# the key of an answer whose assembly raised (its error follows): a syntax_error record, never run
UNASSEMBLED = "unassembled:"


def evaluate_samples(samples: pd.DataFrame, tasks: pd.DataFrame, evaluation: dict[str, Any], lanes: int = 1) -> pd.DataFrame:
    """Judge every sample in an isolated worker; one record per sample, never an exception.

    On a CPU, ``lanes`` evaluation lanes (the job's threads) judge candidates in parallel, each
    pinned to its own core with its own reference worker; on a GPU one candidate runs at a time.
    A sample whose completion could not be parsed (``parse_error_kind``, e.g. a gpt-oss answer
    truncated before its final channel) is an error record of that kind, never run: the paper
    counts it as incorrect.
    """
    settings = EvalSettings.from_config(evaluation)
    code = tasks.set_index("problem_id")["code"]
    units: list[tuple[int, str, list[tuple[str, str, str]]]] = []  # (task, problem, [(digest, source, screened)])
    digests: dict[tuple[int, int], str] = {}
    first_sample: dict[tuple[int, str], int] = {}  # the sample whose verdict others reuse
    for problem_id, group in samples.groupby("problem_id", sort=True):
        problem_src = code[problem_id]
        unique: dict[str, tuple[str, str, str]] = {}
        for n, s in enumerate(group.itertuples()):
            parse_error = getattr(s, "parse_error_kind", None)
            if isinstance(parse_error, str):
                digests[(problem_id, s.sample_index)] = f"{PARSE_ERROR}{parse_error}"
                first_sample.setdefault((problem_id, f"{PARSE_ERROR}{parse_error}"), s.sample_index)
                continue
            try:
                source = candidate_source(s.raw_action, problem_src, mode=evaluation["assembly"]) if s.raw_action.strip() else ""
                screened = candidate_code(s.raw_action, mode=evaluation["assembly"])
            except Exception as exc:  # one model answer's assembly must never end the job
                logger.exception("task %s sample %s could not be assembled", problem_id, s.sample_index)
                digest = f"{UNASSEMBLED}{type(exc).__name__}: {exc}"[:ERROR_MESSAGE_CHARS]
                digests[(problem_id, s.sample_index)] = digest
                first_sample.setdefault((problem_id, digest), s.sample_index)
                continue
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            if not evaluation["dedupe"]:
                digest = f"{digest}:{n}"  # every sample judged on its own
            digests[(problem_id, s.sample_index)] = digest
            first_sample.setdefault((problem_id, digest), s.sample_index)
            unique.setdefault(digest, (digest, source, screened))
        n_lanes = max(1, min(lanes, len(unique))) if settings.device == "cpu" else 1
        candidates = list(unique.values())
        units += [(problem_id, problem_src, candidates[i::n_lanes]) for i in range(n_lanes)]
    verdicts = _run_units(units, settings, lanes if settings.device == "cpu" else 1)
    for key, digest in digests.items():
        if digest.startswith(PARSE_ERROR):
            kind = digest[len(PARSE_ERROR) :]
            message = "the completion has no final answer to evaluate (parsed as Harmony channels)"
            verdicts[(key[0], digest)] = EvalResult(error_kind=kind, error_message=message, protocol=settings.protocol).as_dict()
        elif digest.startswith(UNASSEMBLED):
            message = f"the answer could not be assembled into a module: {digest[len(UNASSEMBLED) :]}"
            verdicts[(key[0], digest)] = EvalResult(
                error_kind="syntax_error", error_message=message, protocol=settings.protocol
            ).as_dict()
    rows = []
    for s in samples.sort_values(["problem_id", "sample_index"]).itertuples():
        digest = digests[(s.problem_id, s.sample_index)]
        rows.append(
            {
                "seed": s.seed,
                "problem_id": s.problem_id,
                "sample_index": s.sample_index,
                "candidate_hash": None if digest.startswith((PARSE_ERROR, UNASSEMBLED)) else digest.split(":")[0],
                "reused_verdict": first_sample[(s.problem_id, digest)] != s.sample_index,
                **verdicts[(s.problem_id, digest)],
            }
        )
    records = pd.DataFrame(rows)
    for problem_id, group in records.groupby("problem_id") if len(records) else []:
        logger.info(
            "task %s: %d/%d correct, %d unique candidates",
            problem_id,
            int(group["correct"].sum()),
            len(group),
            int((~group["reused_verdict"]).sum()),
        )
    return records


def _evaluate_unit(problem_src: str, candidates: list[tuple[str, str, str]], settings: Any) -> dict[str, dict[str, Any]]:
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
    return _evaluate_unit(problem_src, candidates, dataclasses.replace(settings, cpu_core=_LANE_CORE))


def _run_units(
    units: list[tuple[int, str, list[tuple[str, str, str]]]], settings: Any, lanes: int
) -> dict[tuple[int, str], dict[str, Any]]:
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
    ctx = mp.get_context("fork")
    cores = sorted(os.sched_getaffinity(0))
    with ProcessPoolExecutor(
        max_workers=lanes, mp_context=ctx, initializer=_lane_init, initargs=(ctx.Value("i", 0), cores)
    ) as pool:
        futures = [
            (problem_id, pool.submit(_lane_unit, problem_src, candidates, settings))
            for problem_id, problem_src, candidates in units
        ]
        for problem_id, future in futures:
            for digest, verdict in future.result().items():
                verdicts[(problem_id, digest)] = verdict
    return verdicts
