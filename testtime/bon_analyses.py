"""Analyses of the Best-of-N records beyond Tables 2 and 3 (reference-protocol §6.2, §12, §17).

Table 1 (the five strategies per task and seed), Table 8 (oracle speedups per task), Table 11
(surprisal quartiles), the length-controlled correlation (§12.1), the log-prob variance per task
with the surprisal-versus-confidence head-to-head (§12.3, §12.4), full-L1 oracle task success
(§12.5), Table 7 (compute accounting, §17) and the deployable surprisal selection of the
paper's open question 2 (testtime.deployable). Small pure functions over DataFrames; the
registry :data:`ANALYSES` maps each output's name to its builder, which the ``bon_analysis``
workflow script calls. Nothing here reads or writes files.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from testtime.analysis import FAST_THRESHOLD, fast_1, require_columns
from testtime.deployable import deployable_facts, deployable_per_task, deployable_summary
from testtime.sampling.harmony import span_column
from testtime.selection import REGISTRY, selection_table

# --------------------------------------------------------------------------------------
# Table 1 and Table 8 (§6.2, §16)
# --------------------------------------------------------------------------------------

TABLE1_COLUMNS = ("seed", "problem_id", "strategy", "cost", "sample_index", "fast_1", "speedup", "n_correct", "n_samples")


def table1(selection: pd.DataFrame) -> pd.DataFrame:
    """Table 1: every strategy's pick per task and seed with its Table 1 "Cost" column.

    ``selection`` is :func:`testtime.selection.selection_table`'s output; rows keep its order
    (seed, task, registry order)."""
    require_columns(selection, ("seed", "problem_id", "strategy", "sample_index", "speedup", "fast_1"), "selection")
    out = selection.copy()
    out["cost"] = [REGISTRY[s].cost if s in REGISTRY else "" for s in out["strategy"]]
    return out.loc[:, list(TABLE1_COLUMNS)].reset_index(drop=True)


def task_summary(records: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, task): ``n_samples``, ``correct_rate``, ``sample_fast_1`` (fraction of samples
    correct and faster than the reference), ``oracle_speedup`` (max speedup over correct samples,
    0 when none is correct) and ``oracle_fast_1`` (the oracle's pick is faster: task success)."""
    require_columns(records, ("seed", "problem_id", "correct", "speedup"))
    frame = records.loc[:, ["seed", "problem_id"]].copy()
    frame["correct"] = records["correct"].to_numpy(dtype=bool)
    frame["fast"] = fast_1(records["correct"].to_numpy(), records["speedup"].to_numpy())
    frame["correct_speedup"] = np.where(frame["correct"], records["speedup"].to_numpy(dtype=float), 0.0)
    g = frame.groupby(["seed", "problem_id"], sort=True)
    out = pd.DataFrame(
        {
            "n_samples": g.size(),
            "correct_rate": g["correct"].mean(),
            "sample_fast_1": g["fast"].mean(),
            "oracle_speedup": g["correct_speedup"].max(),
        }
    ).reset_index()
    out["oracle_fast_1"] = (out["oracle_speedup"] > FAST_THRESHOLD).astype(float)
    return out


def table8(records: pd.DataFrame) -> pd.DataFrame:
    """Table 8: the Best-of-N oracle-selected speedup per task and seed, with the task's correct
    rate and sample fast_1 (also Figure 7's Best-of-N baseline), and a ``mean`` row per seed
    (``problem_id`` -1: the mean over the seed's tasks; the paper's seed-42 mean is 220.9x)."""
    tasks = task_summary(records)
    means = tasks.groupby("seed", sort=True)[["correct_rate", "sample_fast_1", "oracle_speedup", "oracle_fast_1"]].mean()
    means = means.reset_index().assign(problem_id=-1, n_samples=tasks.groupby("seed", sort=True)["n_samples"].sum().to_numpy())
    return pd.concat([tasks, means[tasks.columns]], ignore_index=True)


# --------------------------------------------------------------------------------------
# Correct samples with their score and length (§12.1, §12.2)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Columns:
    """Which record columns an analysis reads: the confidence ``score`` (higher = more confident)
    and the ``length`` (tokens) of the same scored span."""

    score: str
    length: str


def columns(score: str = "lp_mean", span: str = "completion") -> Columns:
    """The score and token-count columns of ``span`` (reference-protocol §5.3)."""
    return Columns(span_column(score, span), span_column("n_tokens", span))


def correct_samples(records: pd.DataFrame, cols: Columns) -> pd.DataFrame:
    """The correct samples pooled over tasks and seeds, with a finite score (§12.1's n = 550)."""
    require_columns(records, ("seed", "problem_id", "correct", "speedup", cols.score, cols.length))
    ok = records["correct"].to_numpy(dtype=bool) & np.isfinite(records[cols.score].to_numpy(dtype=float))
    return records.loc[ok].reset_index(drop=True)


# --------------------------------------------------------------------------------------
# §12.1 length-controlled correlation
# --------------------------------------------------------------------------------------


def _residuals(y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Residuals of the least-squares line of ``y`` on ``z`` (with intercept)."""
    design = np.column_stack([np.ones_like(z), z])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return y - design @ coef


def partial_spearman(x: Sequence[float], y: Sequence[float], z: Sequence[float]) -> tuple[float, float]:
    """Spearman correlation of ``x`` and ``y`` controlling for ``z`` (§12.1): the Pearson
    correlation of the residuals of rank(x) on rank(z) and of rank(y) on rank(z); the two-sided
    p-value is from t = r·sqrt((n−3)/(1−r²)) on n − 3 degrees of freedom. NaN for n < 4 or a
    constant residual."""
    rx, ry, rz = (stats.rankdata(np.asarray(v, dtype=float)) for v in (x, y, z))
    n = rx.size
    if n < 4:
        return float("nan"), float("nan")
    ex, ey = _residuals(rx, rz), _residuals(ry, rz)
    if np.allclose(ex, 0) or np.allclose(ey, 0):
        return float("nan"), float("nan")
    r = float(np.corrcoef(ex, ey)[0, 1])
    df = n - 3
    if abs(r) >= 1.0:
        return r, 0.0
    t = r * math.sqrt(df / (1.0 - r * r))
    return r, float(2.0 * stats.t.sf(abs(t), df))


def first_order_partial(r_xy: float, r_xz: float, r_yz: float) -> float:
    """The standard first-order partial correlation (r_xy − r_xz·r_yz)/sqrt((1−r_xz²)(1−r_yz²)),
    used to show that the published triplet of §12.1 is not mutually consistent (D7)."""
    return (r_xy - r_xz * r_yz) / math.sqrt((1.0 - r_xz**2) * (1.0 - r_yz**2))


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    if x.size < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan"), float("nan")
    res = stats.spearmanr(x, y)
    return float(res.statistic), float(res.pvalue)


def length_control(records: pd.DataFrame, cols: Columns) -> dict[str, Any]:
    """§12.1 on the correct samples: raw Spearman ρ(score, speedup); the partial Spearman
    controlling length (rank residuals, t on n − 3 df); the alternative that residualises the raw
    score on the raw length and takes Spearman against speedup; ρ(length, speedup) and
    ρ(score, length). Published: −0.047 (p 0.27, n 550), 0.003 (p 0.95), −0.039."""
    c = correct_samples(records, cols)
    score = c[cols.score].to_numpy(dtype=float)
    speed = c["speedup"].to_numpy(dtype=float)
    length = c[cols.length].to_numpy(dtype=float)
    rho, p = _spearman(score, speed)
    partial, p_partial = partial_spearman(score, speed, length)
    alt, p_alt = _spearman(_residuals(score, length), speed) if c.shape[0] >= 3 else (float("nan"), float("nan"))
    rho_len, p_len = _spearman(length, speed)
    rho_score_len, _ = _spearman(score, length)
    return {
        "n": int(c.shape[0]),
        "score_column": cols.score,
        "length_column": cols.length,
        "rho_score_speedup": rho,
        "p_score_speedup": p,
        "partial_rho": partial,
        "partial_p": p_partial,
        "partial_df": int(c.shape[0]) - 3,
        "residualised_rho": alt,
        "residualised_p": p_alt,
        "rho_length_speedup": rho_len,
        "p_length_speedup": p_len,
        "rho_score_length": rho_score_len,
    }


# --------------------------------------------------------------------------------------
# §12.2 surprisal quartiles (Table 11)
# --------------------------------------------------------------------------------------


def surprisal_quartiles(records: pd.DataFrame, cols: Columns, n_bins: int = 4) -> pd.DataFrame:
    """Table 11: the correct samples pooled over tasks and seeds in equal-count bins of surprisal
    (−score; Q1 = the highest-surprisal quarter), ranked with ties broken by position so that the
    bins have equal counts. Per bin: ``n``, ``fast_1`` (fraction faster than the reference; all
    are correct), ``mean_speedup``, ``mean_tokens`` (of the scored span), the surprisal range, the
    task that contributes most (``top_task``, ``top_task_share``) and the composition as
    ``task:share`` pairs."""
    c = correct_samples(records, cols)
    if c.shape[0] < n_bins:
        raise ValueError(f"surprisal_quartiles: {c.shape[0]} correct samples, fewer than {n_bins} bins")
    surprisal = -c[cols.score].to_numpy(dtype=float)
    # Rank descending surprisal (stable: earlier rows first among ties), then cut into equal bins.
    order = np.argsort(-surprisal, kind="stable")
    rank = np.empty(order.size, dtype=int)
    rank[order] = np.arange(order.size)
    c = c.assign(quartile=pd.qcut(rank, n_bins, labels=False) + 1, surprisal=surprisal)
    rows = []
    for q, g in c.groupby("quartile", sort=True):
        share = g["problem_id"].value_counts(normalize=True).sort_index().sort_values(ascending=False, kind="stable")
        rows.append(
            {
                "quartile": f"Q{q}",
                "n": int(g.shape[0]),
                "fast_1": float((g["speedup"].to_numpy(dtype=float) > FAST_THRESHOLD).mean()),
                "mean_speedup": float(g["speedup"].astype(float).mean()),
                "mean_tokens": float(g[cols.length].astype(float).mean()),
                "surprisal_min": float(g["surprisal"].min()),
                "surprisal_max": float(g["surprisal"].max()),
                "top_task": int(share.index[0]),
                "top_task_share": float(share.iloc[0]),
                "composition": " ".join(f"{int(t)}:{s:.3f}" for t, s in share.items()),
            }
        )
    return pd.DataFrame(rows)


def half_means(quartiles: pd.DataFrame) -> dict[str, float]:
    """§12.2's derived numbers: the simple means of the quartiles' fast_1 in the high-surprisal
    half (Q1, Q2) and the low-surprisal half (Q3, Q4). Published: 64.2% and 58.1%."""
    values = quartiles.set_index("quartile")["fast_1"]
    return {"q1_q2_fast_1": float(values[["Q1", "Q2"]].mean()), "q3_q4_fast_1": float(values[["Q3", "Q4"]].mean())}


# --------------------------------------------------------------------------------------
# §12.3-§12.5 log-prob variance, head-to-head, full L1 (BoN-L1)
# --------------------------------------------------------------------------------------


def logprob_variance(records: pd.DataFrame, cols: Columns, high: float = 1.0, low: float = 0.15, ddof: int = 0) -> pd.DataFrame:
    """§12.3 and §12.4 per (seed, task): ``lp_std`` = std of the score over ALL samples
    (``ddof`` 0 = population, the recorded choice), ``group`` (``high`` if std > ``high``, else
    ``low``), ``very_low`` (std < ``low``), the task's correct rate and sample fast_1, the
    surprisal- and confidence-selected speedups, ``valid`` (the task has a correct sample) and
    ``surprisal_wins`` (strictly greater selected speedup; NaN when not valid)."""
    require_columns(records, ("seed", "problem_id", "sample_index", "correct", "speedup", cols.score))
    sel = selection_table(records, score=cols.score)
    pick = sel.pivot_table(index=["seed", "problem_id"], columns="strategy", values="speedup", aggfunc="first")
    tasks = task_summary(records).set_index(["seed", "problem_id"])
    std = records.groupby(["seed", "problem_id"], sort=True)[cols.score].agg(
        lambda v: float(np.nanstd(v.to_numpy(float), ddof=ddof))
    )
    out = pd.DataFrame(
        {
            "lp_std": std,
            "group": np.where(std > high, "high", "low"),
            "very_low": std < low,
            "correct_rate": tasks["correct_rate"],
            "sample_fast_1": tasks["sample_fast_1"],
            "oracle_speedup": tasks["oracle_speedup"],
            "surprisal_speedup": pick["surprisal-guided"],
            "confidence_speedup": pick["confidence-guided"],
        }
    )
    out["valid"] = tasks["correct_rate"] > 0
    wins = (out["surprisal_speedup"] > out["confidence_speedup"]).astype(float)
    out["surprisal_wins"] = wins.where(out["valid"])
    return out.reset_index()


def head_to_head(variance: pd.DataFrame) -> dict[str, Any]:
    """§12.3/§12.4 counts from :func:`logprob_variance`: tasks per group, very-low-variance tasks,
    and surprisal's wins among the valid tasks of each group. Published: 9 high, 7 below 0.15,
    wins 6/8 (high) and 3/11 (low)."""
    valid = variance[variance["valid"]]
    out: dict[str, Any] = {"n_tasks": int(variance.shape[0]), "n_valid": int(valid.shape[0])}
    for group in ("high", "low"):
        g = valid[valid["group"] == group]
        out[f"n_{group}"] = int((variance["group"] == group).sum())
        out[f"{group}_valid"] = int(g.shape[0])
        out[f"{group}_surprisal_wins"] = int(g["surprisal_wins"].sum())
    out["n_very_low"] = int(variance["very_low"].sum())
    return out


def full_l1(records: pd.DataFrame) -> dict[str, Any]:
    """§12.5: oracle task success over every task (a task succeeds when its fastest correct sample
    beats the reference), and the failures with their correct rate and best speedup. Published:
    18/20; Task 82 100% correct at 1.00x, Task 95 0% correct."""
    tasks = task_summary(records)
    failures = tasks[tasks["oracle_fast_1"] < 0.5]
    return {
        "n_tasks": int(tasks.shape[0]),
        "n_success": int(tasks["oracle_fast_1"].sum()),
        "task_success": float(tasks["oracle_fast_1"].mean()) if tasks.shape[0] else float("nan"),
        "failures": [
            {
                "seed": int(r.seed),
                "problem_id": int(r.problem_id),
                "correct_rate": float(r.correct_rate),
                "max_speedup": float(r.oracle_speedup),
            }
            for r in failures.itertuples()
        ],
        "per_task": tasks.to_dict(orient="records"),
    }


# --------------------------------------------------------------------------------------
# Table 7: compute accounting (§17)
# --------------------------------------------------------------------------------------

#: Columns of a Snakemake ``benchmark:`` file this table reads (seconds of wall and CPU time).
BENCHMARK_COLUMNS = ("s", "cpu_time")


@dataclass(frozen=True)
class Usage:
    """What one method spent: sampled completions, prompt and completion tokens of its samples,
    wall seconds, CPU seconds and GPU seconds (wall × GPUs of the jobs)."""

    rollouts: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    cpu_s: float
    gpu_s: float


def benchmark_seconds(benchmark: pd.DataFrame, gpus: int) -> tuple[float, float, float]:
    """(wall, CPU, GPU) seconds of one job's ``benchmark:`` table (the mean over its repeats);
    GPU seconds = wall × the GPUs the job held."""
    require_columns(benchmark, BENCHMARK_COLUMNS, "benchmark")
    wall = float(benchmark["s"].astype(float).mean())
    cpu = float(pd.to_numeric(benchmark["cpu_time"], errors="coerce").fillna(0.0).mean())
    return wall, cpu, wall * gpus


def sample_usage(samples: pd.DataFrame, jobs: Sequence[tuple[float, float, float]]) -> Usage:
    """Usage of sampled records (§17: student tokens = prompt tokens of every completion +
    completion tokens including the stop token) and of the jobs that produced them."""
    require_columns(samples, ("prompt_tokens", "n_tokens"), "samples")
    return Usage(
        rollouts=int(samples.shape[0]),
        prompt_tokens=int(samples["prompt_tokens"].astype(int).sum()),
        completion_tokens=int(samples["n_tokens"].astype(int).sum()),
        wall_s=float(sum(j[0] for j in jobs)),
        cpu_s=float(sum(j[1] for j in jobs)),
        gpu_s=float(sum(j[2] for j in jobs)),
    )


def first_per_task(samples: pd.DataFrame) -> pd.DataFrame:
    """One sample per (seed, task), the lowest index: RLVR Base (K = 1) of Table 7."""
    return samples.sort_values(["seed", "problem_id", "sample_index"], kind="mergesort").groupby(["seed", "problem_id"]).head(1)


def compute_row(method: str, usage: Usage, n_seeds: int, teacher_tokens: float = 0.0) -> dict[str, Any]:
    """A Table 7 row: the per-seed means (Table 7 reports means across seeds) of rollouts,
    student tokens (prompt + completion), teacher tokens (``teacher_tokens``, the total over the
    seeds; 0: no teacher), wall minutes, CPU-hours and GPU-hours."""
    n = max(n_seeds, 1)
    student = (usage.prompt_tokens + usage.completion_tokens) / n
    teacher = teacher_tokens / n
    return {
        "method": method,
        "rollouts": usage.rollouts / n,
        "prompt_tokens": usage.prompt_tokens / n,
        "completion_tokens": usage.completion_tokens / n,
        "student_tokens": student,
        "teacher_tokens": teacher,
        "total_tokens": student + teacher,
        "wall_min": usage.wall_s / n / 60.0 if usage.wall_s else float("nan"),
        "cpu_hours": usage.cpu_s / n / 3600.0 if usage.wall_s else float("nan"),
        "gpu_hours": usage.gpu_s / n / 3600.0 if usage.wall_s else float("nan"),
        "n_seeds": n_seeds,
    }


#: How Table 7 counts SDPO's teacher tokens (reference-protocol §17, D15): ``reference``, the
#: reference code's convention (the teacher prompt and completion of every sampled rollout at every
#: step, the final step's too, though no teacher pass reads them), or ``actual``, the tokens the
#: teacher passes scored.
TEACHER_TOKEN_CONVENTIONS: tuple[str, ...] = ("reference", "actual")


def sdpo_teacher_tokens(runs: Sequence[Sequence[Mapping[str, Any]]], convention: str) -> tuple[int, bool]:
    """Teacher tokens of SDPO runs for Table 7: ``runs`` holds, per run (a seed), its steps in
    order as ``{"metrics": metrics.json, "completion_tokens": the step's rollouts' completion
    tokens, "rollouts": their count}``. ``actual`` sums the teacher passes' prompt and completion
    tokens (``update.teacher_*`` of steps 1..S). ``reference`` adds, for the final step's rollouts,
    their completion tokens and the run's mean teacher prompt per scored rollout (no teacher
    context of theirs was ever rendered, so that part is an estimate). Returns the count and
    whether it holds an estimate."""
    if convention not in TEACHER_TOKEN_CONVENTIONS:
        raise ValueError(f"analyses.sdpo_teacher_tokens: {convention!r} is not one of {TEACHER_TOKEN_CONVENTIONS}")
    total, estimated = 0, False
    for steps in runs:
        prompt = completion = 0
        for step in steps[1:]:
            update = step["metrics"].get("update") or {}
            prompt += int(update.get("teacher_prompt_tokens", 0))
            completion += int(update.get("teacher_completion_tokens", 0))
        scored = sum(int(step["rollouts"]) for step in steps[:-1])
        total += prompt + completion
        if convention == "reference" and steps:
            last = steps[-1]
            per_rollout = prompt / scored if scored else 0.0
            total += int(last["completion_tokens"]) + round(per_rollout * int(last["rollouts"]))
            estimated = estimated or int(last["rollouts"]) > 0
    return total, estimated


TABLE7_COLUMNS = (
    "method",
    "rollouts",
    "prompt_tokens",
    "completion_tokens",
    "student_tokens",
    "teacher_tokens",
    "total_tokens",
    "wall_min",
    "cpu_hours",
    "gpu_hours",
    "n_seeds",
)


def table7(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Table 7 from :func:`compute_row` rows, with ``tokens_vs_best_of_n`` (total tokens relative
    to the Best-of-N row: the paper's SDPO 652K / 313K = 2.08x)."""
    frame = pd.DataFrame(list(rows), columns=list(TABLE7_COLUMNS))
    bon = frame.loc[frame["method"].str.startswith("Best-of-N"), "total_tokens"]
    frame["tokens_vs_best_of_n"] = frame["total_tokens"] / float(bon.iloc[0]) if len(bon) and bon.iloc[0] else float("nan")
    return frame


# --------------------------------------------------------------------------------------
# Registry: output name -> builder over the joined Best-of-N records
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analysis:
    """A Best-of-N analysis: ``build(records, settings)`` returns a table (CSV) or a dict (JSON)
    and the summary facts recorded in its provenance."""

    name: str
    build: Callable[[pd.DataFrame, Mapping[str, Any]], tuple[pd.DataFrame | dict[str, Any], dict[str, Any]]]


def _cols(settings: Mapping[str, Any]) -> Columns:
    return columns(settings["score"], settings["span"])


def _table1(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    return table1(selection_table(records, score=_cols(settings).score)), {"score_column": _cols(settings).score}


def _table8(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    return table8(records), {}


def _table11(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    quartiles = surprisal_quartiles(records, _cols(settings), settings["quartiles"])
    facts = half_means(quartiles) if settings["quartiles"] == 4 else {}
    return quartiles, {**facts, "score_column": _cols(settings).score, "n": int(quartiles["n"].sum())}


def _length_control(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    primary = length_control(records, _cols(settings))
    other = "lp_sum" if settings["score"] == "lp_mean" else "lp_mean"
    return {**primary, "other_score": length_control(records, columns(other, settings["span"]))}, {}


def _logprob_variance(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    table = logprob_variance(records, _cols(settings), settings["high_variance"], settings["low_variance"], settings["std_ddof"])
    return table, head_to_head(table)


def _full_l1(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return full_l1(records), {}


def _deployable_selection(records: pd.DataFrame, settings: Mapping[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    summary = deployable_summary(deployable_per_task(records, _cols(settings).score))
    return summary, {"score_column": _cols(settings).score, "orders": deployable_facts(summary)}


#: output name -> Analysis (Table 7 needs benchmark files too and has its own script).
ANALYSES: dict[str, Analysis] = {
    a.name: a
    for a in (
        Analysis("table1", _table1),
        Analysis("table8", _table8),
        Analysis("table11", _table11),
        Analysis("length_control", _length_control),
        Analysis("logprob_variance", _logprob_variance),
        Analysis("full_l1", _full_l1),
        Analysis("deployable_selection", _deployable_selection),
    )
}


def run_analysis(
    name: str, records: pd.DataFrame, settings: Mapping[str, Any]
) -> tuple[pd.DataFrame | dict[str, Any], dict[str, Any]]:
    """Build analysis ``name`` of :data:`ANALYSES` from the joined records."""
    if name not in ANALYSES:
        raise ValueError(f"analysis {name!r}: not one of {sorted(ANALYSES)}")
    return ANALYSES[name].build(records, settings)
