"""Selection among Best-of-N samples (Table 1, Table 3): a registry of strategies.

Every strategy looks only at the set C of a task's *correct* samples (the paper's shared
correctness filter) and picks one of them, or reports an expectation over C. The registry
(:data:`REGISTRY`) is the one place a strategy is defined: its name, how it picks, its label and
colour in figures and its row order in Table 3. ``analysis``, the tables and ``figures`` read it;
adding a strategy is one :func:`register` call here.

Conventions (reference-protocol §6.2): ties (equal speedup or equal score) are broken by the
lowest ``sample_index``, a deterministic rule the reference code does not specify. If C is
empty, every strategy gets ``fast_1 = 0``, ``speedup = 0`` and ``sample_index = -1``.

Beside the paper's ``fast_1`` (speedup above 1) every pick carries ``fast_1_sig``: the selected
sample's speedup interval lies entirely above 1 (the evaluation record's ``speedup_ci_low``). A
copy of the reference code times at 1 give or take the machine's noise, so on a CPU its fast_1
is a coin flip; fast_1_sig is not (not in the paper, which reports no interval; NaN where the
records carry none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from testtime.analysis import (
    FAST_THRESHOLD,
    bootstrap_mean_interval,
    fast_1,
    require_columns,
    sample_std,
    surprisal_vs_confidence,
    wilson_interval,
)
from testtime.sampling.harmony import span_column

SELECTION_COLUMNS: tuple[str, ...] = ("strategy", "sample_index", "speedup", "fast_1", "fast_1_sig", "n_correct", "n_samples")
RECORD_COLUMNS: tuple[str, ...] = ("seed", "problem_id", "sample_index", "correct", "speedup")


@dataclass(frozen=True)
class Correct:
    """A task's correct samples in ``sample_index`` order: indices, speedups, confidence scores
    (higher = more confident; surprisal is minus the score) and whether each speedup's interval
    lies above 1 (1.0 or 0.0; NaN when the records carry no interval)."""

    index: np.ndarray
    speedup: np.ndarray
    score: np.ndarray
    sig: np.ndarray


@dataclass(frozen=True)
class Pick:
    """What a strategy selects: a sample (``sample_index`` >= 0) or an expectation (-1)."""

    sample_index: int
    speedup: float
    fast_1: float
    fast_1_sig: float


def at(c: Correct, position: int) -> Pick:
    """The pick of the correct sample at ``position`` of ``c``."""
    s = float(c.speedup[position])
    return Pick(int(c.index[position]), s, float(s > FAST_THRESHOLD), float(c.sig[position]))


@dataclass(frozen=True)
class Strategy:
    name: str
    pick: Callable[[Correct], Pick]
    label: str  # figure tick label
    color: str  # figure colour
    cost: str  # Table 1's "Cost" column


#: name -> Strategy, in Table 3's row order.
REGISTRY: dict[str, Strategy] = {}


def register(strategy: Strategy) -> Strategy:
    """Add a strategy (after the existing ones in Table 3's order); returns it."""
    if strategy.name in REGISTRY:
        raise ValueError(f"selection strategy {strategy.name!r} is already registered")
    REGISTRY[strategy.name] = strategy
    return strategy


def _best(c: Correct) -> Pick:
    # C is in index order, so argmax/argmin (first occurrence) break ties by the lowest index.
    return at(c, int(np.argmax(c.speedup)))


def _top3(c: Correct) -> Pick:
    # the 3 highest-surprisal correct samples (stable sort keeps index order among equal scores),
    # back in index order so argmax breaks speedup ties by the lowest index; costs 3 timings
    top3 = np.sort(np.argsort(c.score, kind="stable")[:3])
    return at(c, int(top3[int(np.argmax(c.speedup[top3]))]))


def _surprisal(c: Correct) -> Pick:
    return at(c, int(np.argmin(c.score)))


def _random(c: Correct) -> Pick:
    # The exact expectation of a uniformly random member of C rather than one draw (a single
    # draw cannot produce Table 3's 59.2%): no single sample is selected.
    return Pick(-1, float(c.speedup.mean()), float(np.mean(c.speedup > FAST_THRESHOLD)), float(c.sig.mean()))


def _confidence(c: Correct) -> Pick:
    return at(c, int(np.argmax(c.score)))


for _s in (
    Strategy("best-correct", _best, "Oracle", "#4d4d4d", "post-hoc"),
    Strategy("surprisal-guided-top3", _top3, "Surprisal\nTop-3", "#1f5fa8", "3 evals"),
    Strategy("surprisal-guided", _surprisal, "Surprisal", "#4a90d9", "zero"),
    Strategy("random-correct", _random, "Random", "#a6a6a6", "baseline"),
    Strategy("confidence-guided", _confidence, "Confidence", "#d9534f", "zero"),
):
    register(_s)


def strategy_names() -> tuple[str, ...]:
    """Registered strategy names in Table 3's row order."""
    return tuple(REGISTRY)


def select(task_records: pd.DataFrame, score: str = "lp_mean") -> pd.DataFrame:
    """Apply every registered strategy to ONE task's K samples (one (seed, problem_id) group).

    Returns one row per strategy (registry order) with columns ``strategy, sample_index,
    speedup, fast_1`` (float in [0, 1]; 0/1 for single-sample strategies), ``fast_1_sig`` (the
    same with the speedup's interval above 1; from an optional ``speedup_ci_low`` column, NaN
    without it), ``n_correct`` and ``n_samples``.

    Raises:
        ValueError: on missing columns, if the rows span more than one (seed, problem_id),
            or if a correct sample has a NaN score.
    """
    require_columns(task_records, ("sample_index", "correct", "speedup", score), "task_records")
    for key in ("seed", "problem_id"):
        if key in task_records.columns and task_records[key].nunique(dropna=False) > 1:
            raise ValueError(f"select: task_records spans several values of {key!r}; pass one task")
    n_samples = int(len(task_records))
    ordered = task_records.sort_values("sample_index", kind="mergesort")
    cset = ordered.loc[ordered["correct"].to_numpy(dtype=bool)]
    n_correct = int(len(cset))
    if "speedup_ci_low" in cset.columns:
        sig = (cset["speedup_ci_low"].to_numpy(dtype=float) > FAST_THRESHOLD).astype(float)
    else:
        sig = np.full(n_correct, np.nan)
    c = Correct(
        cset["sample_index"].to_numpy(dtype=int),
        cset["speedup"].to_numpy(dtype=float),
        cset[score].to_numpy(dtype=float),
        sig,
    )
    if n_correct and np.isnan(c.score).any():
        raise ValueError(f"select: a correct sample has a NaN {score!r} score")
    rows = []
    for name, strategy in REGISTRY.items():
        p = strategy.pick(c) if n_correct else Pick(-1, 0.0, 0.0, 0.0)
        rows.append((name, p.sample_index, p.speedup, p.fast_1, p.fast_1_sig, n_correct, n_samples))
    return pd.DataFrame(rows, columns=SELECTION_COLUMNS)


def selection_table(records: pd.DataFrame, score: str = "lp_mean") -> pd.DataFrame:
    """Apply :func:`select` to every (seed, problem_id) group of ``records``.

    Returns the concatenated per-task selections with leading ``seed`` and ``problem_id``
    columns, sorted by seed, problem_id and then registry order.
    """
    require_columns(records, RECORD_COLUMNS + (score,))
    parts = []
    for (seed, problem_id), group in records.groupby(["seed", "problem_id"], sort=True):
        sel = select(group, score=score)
        sel.insert(0, "problem_id", problem_id)
        sel.insert(0, "seed", seed)
        parts.append(sel)
    if not parts:
        return pd.DataFrame(columns=("seed", "problem_id") + SELECTION_COLUMNS)
    return pd.concat(parts, ignore_index=True)


def strategy_summary(selection: pd.DataFrame) -> pd.DataFrame:
    """Table 3: per-strategy fast_1 (mean ± std over seeds) and mean selected speedup.

    For each strategy:

    * ``fast_1`` = mean over seeds of the per-seed value, where the per-seed value is the mean
      over that seed's tasks of the task outcome (§6.2).
    * ``fast_1_std`` = sample std (ddof=1) of the per-seed values; NaN with one seed.
    * ``fast_1_ci_low``, ``fast_1_ci_high`` = 95% Wilson interval of the proportion of task-seed
      outcomes that are fast_1 (not the paper's: it reports the std over seeds).
    * ``fast_1_sig`` = ``fast_1`` with the selected speedup's interval above 1 (see the module
      docstring; not the paper's); NaN when ``selection`` has no ``fast_1_sig`` column or the
      records carried no intervals.
    * ``mean_speedup`` = mean selected speedup over all task-seed pairs (the paper's 226.9x
      oracle mean is over the 10 selections of 2 seeds × 5 tasks); ``mean_speedup_ci_low``,
      ``mean_speedup_ci_high`` = its 95% percentile bootstrap interval over those pairs (not
      the paper's).
    * ``n_seeds``, ``n_tasks`` = number of distinct seeds and distinct problem ids.

    Rows follow registry order (strategies absent from ``selection`` are omitted; unknown
    strategy names are appended after them in sorted order).
    """
    require_columns(selection, ("seed", "problem_id", "strategy", "speedup", "fast_1"), "selection")
    present = set(selection["strategy"].unique())
    order = [s for s in REGISTRY if s in present] + sorted(present - set(REGISTRY))
    rows = []
    for strategy in order:
        sub = selection[selection["strategy"] == strategy]
        per_seed = sub.groupby("seed", sort=True)["fast_1"].mean().to_numpy(dtype=float)
        if "fast_1_sig" in sub.columns:
            sig = float(sub.groupby("seed", sort=True)["fast_1_sig"].mean().to_numpy(dtype=float).mean())
        else:
            sig = float("nan")
        low, high = wilson_interval(float(sub["fast_1"].astype(float).sum()), len(sub))
        speed_low, speed_high = bootstrap_mean_interval(sub["speedup"].to_numpy(dtype=float))
        rows.append(
            {
                "strategy": strategy,
                "fast_1": float(per_seed.mean()),
                "fast_1_std": sample_std(per_seed),
                "fast_1_ci_low": low,
                "fast_1_ci_high": high,
                "fast_1_sig": sig,
                "mean_speedup": float(sub["speedup"].astype(float).mean()),
                "mean_speedup_ci_low": speed_low,
                "mean_speedup_ci_high": speed_high,
                "n_seeds": int(sub["seed"].nunique()),
                "n_tasks": int(sub["problem_id"].nunique()),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "strategy",
            "fast_1",
            "fast_1_std",
            "fast_1_ci_low",
            "fast_1_ci_high",
            "fast_1_sig",
            "mean_speedup",
            "mean_speedup_ci_low",
            "mean_speedup_ci_high",
            "n_seeds",
            "n_tasks",
        ],
    )


def join_records(samples: list[pd.DataFrame], evaluations: list[pd.DataFrame]) -> pd.DataFrame:
    """Sample records joined one-to-one with their evaluation records; every sample must have one."""
    keys = ["seed", "problem_id", "sample_index"]
    s = pd.concat(samples, ignore_index=True)
    spans = [c for c in s.columns if c.startswith(("lp_sum_", "lp_mean_", "n_tokens_"))]  # other scored spans
    s = s[keys + ["lp_sum", "lp_mean", "n_tokens", "finish_reason", *spans]]
    e = pd.concat(evaluations, ignore_index=True)
    e = e[keys + ["correct", "speedup", "error_kind"] + (["speedup_ci_low"] if "speedup_ci_low" in e.columns else [])]
    joined = s.merge(e, on=keys, how="inner", validate="one_to_one")
    if len(joined) != len(s):
        raise ValueError(f"{len(s) - len(joined)} samples have no evaluation record")
    return joined


def select_records(
    records: pd.DataFrame, score: str, span: str = "completion"
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Selection per (seed, task, strategy), Table 3, and surprisal-vs-confidence statistics, with
    confidence = ``score`` (``lp_mean`` or ``lp_sum``) on the scored ``span`` (``completion``,
    ``final`` or ``code``, reference-protocol §5.3)."""
    column = span_column(score, span)
    if column not in records.columns:
        raise ValueError(f"selection.span: the sample records have no {column!r} column (sampled before spans were recorded?)")
    table = selection_table(records, score=column)
    summary = strategy_summary(table)
    stats = surprisal_vs_confidence(table)
    rates = {
        "correct_rate": float(records["correct"].mean()),
        "sample_fast_1": float(fast_1(records["correct"].to_numpy(), records["speedup"].to_numpy()).mean()),
        "n_samples": int(len(records)),
        "score_column": column,
    }
    return table, summary, {**stats, **rates}
