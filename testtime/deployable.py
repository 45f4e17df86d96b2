"""Deployable surprisal-guided selection (the paper's open question 2, §6.6).

The paper's strategies (testtime.selection) pick among a task's samples already known to be
correct, so every sample has been through the evaluator first. A deployable pipeline ranks the K
candidates by the model's own score *before* any correctness check, evaluates them in that order
and returns the first one the evaluator accepts, giving up after ``m`` evaluations:

* ``surprisal`` order: the highest-surprisal (lowest-confidence) candidate first. This is the
  end of the ranking the paper's §5.2 finding points to (the highest-surprisal *correct*
  sample is the fastest). At m = K it returns exactly the paper's ``surprisal-guided`` pick.
* ``confidence`` order: the other end of the same ranking, the most confident first; at m = K
  the paper's ``confidence-guided`` pick. Both ends are always reported, so no switch chooses
  between them.
* ``random`` order: a uniformly random permutation, as an exact expectation (no sampling); at
  m = K the paper's ``random-correct`` expectation.

Per task and m: ``fast_1`` (the returned sample is faster than the reference; 0 when none of the
m evaluated candidates is correct: the pipeline returns nothing), ``found`` (a correct candidate
was returned), ``speedup`` (of the returned sample, 0 when none), ``calls`` (evaluator calls
spent: the position of the first correct candidate, or m when none of the first m is correct).
Ties of the score break by the lowest ``sample_index`` (testtime.selection's rule). Candidates
whose score is NaN (no scored span: no code to evaluate) are never evaluated and do not count
among the K; a correct sample always has a finite score (testtime.selection.select checks it).

Pure functions over arrays and DataFrames; nothing reads or writes files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from testtime.analysis import FAST_THRESHOLD, require_columns, sample_std

#: Evaluation orders, in the table's and the figure's order.
ORDERS: tuple[str, ...] = ("surprisal", "confidence", "random")
PER_TASK_COLUMNS: tuple[str, ...] = ("seed", "problem_id", "order", "m", "fast_1", "found", "speedup", "calls", "n_candidates")
SUMMARY_COLUMNS: tuple[str, ...] = (
    "order",
    "m",
    "fast_1",
    "fast_1_std",
    "found_rate",
    "mean_speedup",
    "mean_calls",
    "n_seeds",
    "n_tasks",
)


@dataclass(frozen=True)
class Outcome:
    """What evaluating up to m candidates returns (expectations for the random order)."""

    fast_1: float
    found: float
    speedup: float
    calls: float


def ranking(score: np.ndarray, order: str) -> np.ndarray:
    """Positions of the candidates in evaluation order (``score``: confidence, higher = more
    confident, in ``sample_index`` order): ``surprisal`` = ascending score, ``confidence`` =
    descending score; stable, so ties keep the lowest index first."""
    score = np.asarray(score, dtype=float)
    if order == "surprisal":
        return np.argsort(score, kind="stable")
    if order == "confidence":
        return np.argsort(-score, kind="stable")
    raise ValueError(f"ranking: order {order!r} is not 'surprisal' or 'confidence' (random has no ranking)")


def first_correct(correct: np.ndarray, speedup: np.ndarray, m: int) -> Outcome:
    """Evaluate candidates in the given order, at most ``m``, and stop at the first correct one."""
    if m < 1:
        raise ValueError(f"first_correct: m must be >= 1, got {m}")
    correct = np.asarray(correct, dtype=bool)[:m]
    hits = np.flatnonzero(correct)
    if hits.size == 0:
        return Outcome(0.0, 0.0, 0.0, float(correct.size))
    s = float(np.asarray(speedup, dtype=float)[hits[0]])
    return Outcome(float(s > FAST_THRESHOLD), 1.0, s, float(hits[0] + 1))


def none_correct_in_first(n: int, c: int, j: int) -> float:
    """Probability that the first ``j`` of ``n`` candidates in a uniformly random order hold none
    of the ``c`` correct ones: C(n-c, j) / C(n, j), as a product."""
    if j > n - c:
        return 0.0
    p = 1.0
    for i in range(j):
        p *= (n - c - i) / (n - i)
    return p


def random_order(correct: np.ndarray, speedup: np.ndarray, m: int) -> Outcome:
    """The exact expectation of :func:`first_correct` over uniformly random orders.

    The first correct candidate of a random permutation is a uniformly random member of the
    correct set C, independently of its position; so with n candidates, c correct and
    P(found) = 1 - C(n-c, m) / C(n, m): E[fast_1] = P(found) x (fraction of C faster than the
    reference), E[speedup] = P(found) x mean speedup over C, and E[calls] = Σ_{j<m} P(the first
    j are all incorrect).
    """
    if m < 1:
        raise ValueError(f"random_order: m must be >= 1, got {m}")
    correct = np.asarray(correct, dtype=bool)
    speedup = np.asarray(speedup, dtype=float)
    n, c = int(correct.size), int(correct.sum())
    m = min(m, n)
    calls = sum(none_correct_in_first(n, c, j) for j in range(m))
    if c == 0:
        return Outcome(0.0, 0.0, 0.0, float(calls))
    found = 1.0 - none_correct_in_first(n, c, m)
    cs = speedup[correct]
    return Outcome(found * float(np.mean(cs > FAST_THRESHOLD)), found, found * float(cs.mean()), float(calls))


def task_curves(task_records: pd.DataFrame, score: str, max_m: int | None = None) -> pd.DataFrame:
    """Every order's outcome at m = 1..``max_m`` (default: the task's candidate count; beyond it
    the outcome stays that of m = n) for ONE task's samples (one seed and problem id)."""
    require_columns(task_records, ("sample_index", "correct", "speedup", score), "task_records")
    ordered = task_records.sort_values("sample_index", kind="mergesort")
    finite = np.isfinite(ordered[score].to_numpy(dtype=float))
    if (ordered["correct"].to_numpy(dtype=bool) & ~finite).any():
        raise ValueError(f"task_curves: a correct sample has a NaN {score!r} score")
    cand = ordered.loc[finite]
    correct = cand["correct"].to_numpy(dtype=bool)
    speedup = np.where(correct, cand["speedup"].to_numpy(dtype=float), 0.0)
    score_values = cand[score].to_numpy(dtype=float)
    n = int(correct.size)
    top = n if max_m is None else int(max_m)
    rows = []
    for order in ORDERS:
        rank = None if order == "random" else ranking(score_values, order)
        for m in range(1, top + 1):
            if n == 0:
                o = Outcome(0.0, 0.0, 0.0, 0.0)
            elif rank is None:
                o = random_order(correct, speedup, min(m, n))
            else:
                o = first_correct(correct[rank], speedup[rank], min(m, n))
            rows.append((order, m, o.fast_1, o.found, o.speedup, o.calls, n))
    return pd.DataFrame(rows, columns=PER_TASK_COLUMNS[2:])


def deployable_per_task(records: pd.DataFrame, score: str) -> pd.DataFrame:
    """:func:`task_curves` of every (seed, problem_id), all up to the largest candidate count of
    any task, with leading ``seed`` and ``problem_id`` columns."""
    require_columns(records, ("seed", "problem_id", "sample_index", "correct", "speedup", score))
    groups = list(records.groupby(["seed", "problem_id"], sort=True))
    if not groups:
        return pd.DataFrame(columns=PER_TASK_COLUMNS)
    top = max(int(np.isfinite(g[score].to_numpy(dtype=float)).sum()) for _, g in groups)
    parts = []
    for (seed, pid), g in groups:
        curve = task_curves(g, score, max(top, 1))
        curve.insert(0, "problem_id", pid)
        curve.insert(0, "seed", seed)
        parts.append(curve)
    return pd.concat(parts, ignore_index=True)


def deployable_summary(per_task: pd.DataFrame) -> pd.DataFrame:
    """Per order and m, as Table 3: ``fast_1`` = mean over seeds of the seed's mean over tasks,
    ``fast_1_std`` its sample std over seeds (NaN with one seed); ``found_rate``,
    ``mean_speedup`` and ``mean_calls`` = means over all task-seed pairs."""
    require_columns(per_task, PER_TASK_COLUMNS, "per_task")
    rows = []
    for order in [o for o in ORDERS if o in set(per_task["order"])]:
        sub = per_task[per_task["order"] == order]
        for m, g in sub.groupby("m", sort=True):
            per_seed = g.groupby("seed", sort=True)["fast_1"].mean().to_numpy(dtype=float)
            rows.append(
                {
                    "order": order,
                    "m": int(m),
                    "fast_1": float(per_seed.mean()),
                    "fast_1_std": sample_std(per_seed),
                    "found_rate": float(g["found"].mean()),
                    "mean_speedup": float(g["speedup"].mean()),
                    "mean_calls": float(g["calls"].mean()),
                    "n_seeds": int(g["seed"].nunique()),
                    "n_tasks": int(g["problem_id"].nunique()),
                }
            )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def deployable_facts(summary: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Provenance facts per order: fast_1 and calls at m = 1 and at the largest m (where each
    order equals its post-hoc strategy of Table 3), and the smallest m reaching that fast_1."""
    facts: dict[str, dict[str, float]] = {}
    for order, g in summary.groupby("order", sort=False):
        g = g.sort_values("m")
        last = g.iloc[-1]
        reach = g.loc[g["fast_1"] >= last["fast_1"] - 1e-12, "m"]
        facts[str(order)] = {
            "fast_1_m1": float(g["fast_1"].iloc[0]),
            "calls_m1": float(g["mean_calls"].iloc[0]),
            "fast_1_all": float(last["fast_1"]),
            "calls_all": float(last["mean_calls"]),
            "m_all": int(last["m"]),
            "m_reaching_fast_1_all": int(reach.iloc[0]),
        }
    return facts
