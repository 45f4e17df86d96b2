"""Statistics and selection analyses for the Best-of-N and test-time-training experiments.

All functions here are small and pure: they take numbers, arrays or pandas DataFrames and
return new ones. Nothing reads or writes files. The conventions follow the reproduction
specification (``reference-protocol.md`` §4.4, §6.2, §6.3, §7, §9.2–9.4, §13):

* ``fast_1`` of a sample means *correct AND speedup > 1.0* (strict inequality).
* "std" across seeds is always the sample standard deviation (``ddof=1``); it is NaN when
  there is a single seed.
* Per-sample input records are a DataFrame with one row per sample and at least the columns
  ``seed``, ``problem_id``, ``sample_index``, ``correct`` (bool), ``speedup`` (float, 0.0 when
  incorrect) and a log-probability score column (``lp_mean`` by default; higher = more
  confident, surprisal = minus the score).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "pass_at_k",
    "cohens_h",
    "equivalent_k",
    "interpolated_equivalent_k",
    "fast_1",
    "surprisal_vs_confidence",
    "bootstrap_any_fast",
    "scaling_curve",
    "scaling_curve_by_seed",
    "boa_select",
    "early_stop_select",
]

#: Threshold for "fast": a sample must be strictly faster than the reference.
FAST_THRESHOLD: float = 1.0

#: Value that replaces a zero speedup before taking log-ratios (§6.3, as in the reference code).
ZERO_SPEEDUP_REPLACEMENT: float = 1e-6


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def require_columns(df: pd.DataFrame, columns: Iterable[str], what: str = "records") -> None:
    """Raise a ValueError naming every column of ``columns`` that ``df`` lacks."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} is missing required column(s): {missing}")


def sample_std(values: Sequence[float] | np.ndarray) -> float:
    """Sample standard deviation (ddof=1); NaN for fewer than two values (no warning)."""
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return float("nan")
    return float(np.std(arr, ddof=1))


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95% by default); (nan, nan) for n = 0.

    Figure 4's fast_1 is a proportion of task-seed outcomes; with 8-24 of them the normal
    interval would leave [0, 1] and collapse at 0 or 1, Wilson's does neither. ``successes`` may
    be fractional: random-correct's outcomes are expectations."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def bootstrap_mean_interval(values: np.ndarray, level: float = 0.95, n_boot: int = 4000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement,
    ``n_boot`` times, a fixed seed so a table is reproducible); (nan, nan) for none, (v, v) for one.

    Figure 4's mean selected speedup is a mean over 8-24 task-seed picks with one or two large
    values; a normal interval would be symmetric where the spread is not."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return float("nan"), float("nan")
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(n_boot, arr.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


# --------------------------------------------------------------------------------------
# Scalar statistics
# --------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimator ``1 - C(n-c, k) / C(n, k)`` (Chen et al., 2021).

    ``n`` samples were drawn, ``c`` of them pass, and ``k`` is the budget. The value is the
    probability that a uniformly random size-``k`` subset of the ``n`` samples (drawn without
    replacement) contains at least one passing sample.

    The ratio of binomials is computed in product form,
    ``C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)``, which avoids the huge
    intermediate integers (and float overflow) of evaluating the binomials directly.

    Raises:
        ValueError: unless ``0 <= c <= n`` and ``1 <= k <= n`` (all integers).
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"pass_at_k: {name} must be an integer, got {value!r}")
    n, c, k = int(n), int(c), int(k)
    if n < 1:
        raise ValueError(f"pass_at_k: need n >= 1, got n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        # Every size-k subset must contain a passing sample.
        return 1.0
    factors = 1.0 - k / np.arange(n - c + 1, n + 1, dtype=float)
    return float(1.0 - np.prod(factors))


def cohens_h(p1: float, p2: float) -> float:
    """Cohen's h effect size between two proportions: ``2 asin(sqrt(p1)) - 2 asin(sqrt(p2))``.

    Used in §6.3 for pooled fast_1 of surprisal-guided (``p1``) versus confidence-guided
    (``p2``) selection; ``cohens_h(0.8, 0.5) = 0.6435``. Positive when ``p1 > p2``.

    Raises:
        ValueError: if either proportion is outside [0, 1] or not finite.
    """
    for name, p in (("p1", p1), ("p2", p2)):
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"cohens_h: {name} must be a proportion in [0, 1], got {p!r}")
    return 2.0 * math.asin(math.sqrt(p1)) - 2.0 * math.asin(math.sqrt(p2))


def equivalent_k(p1: float, target: float) -> float:
    """Best-of-N budget K at which the curve ``pass@K = 1 - (1 - p1)^K`` reaches ``target``.

    Solves ``1 - (1 - p1)^K = target`` for real K: ``K = log(1 - target) / log(1 - p1)``.
    This is the §7 "equivalent K" of a test-time-training score: with ``p1 = 0.533`` (Table 2
    pass@1) and ``target = 0.306`` (3-seed TTT fast_1) it gives K = 0.48, the "TTT equiv.
    K = 0.5" annotation of Fig. 3. The independent-draw curve is used because it extends
    naturally below K = 1, where the unbiased estimator is undefined.

    Edge cases:
        * ``target == 0`` → 0.0 (reached with no samples).
        * ``p1 == 0`` → ``inf`` for any ``target > 0`` (the curve never leaves 0).
        * ``target == 1`` with ``0 < p1 < 1`` → ``inf`` (approached only asymptotically).

    Raises:
        ValueError: if ``p1`` or ``target`` is outside [0, 1] or not finite, or if
            ``p1 == 1`` and ``target > 0`` (the curve jumps to 1 at any K > 0, so no
            meaningful K exists).
    """
    for name, p in (("p1", p1), ("target", target)):
        if not (math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"equivalent_k: {name} must be in [0, 1], got {p!r}")
    if target == 0.0:
        return 0.0
    if p1 == 0.0:
        return math.inf
    if p1 == 1.0:
        raise ValueError("equivalent_k: p1 == 1 gives a curve equal to 1 at every K > 0; no equivalent K")
    if target == 1.0:
        return math.inf
    return math.log1p(-target) / math.log1p(-p1)


def interpolated_equivalent_k(ks: Sequence[float], values: Sequence[float], target: float) -> float:
    """Equivalent K of ``target`` on a measured scaling curve (§7 recommendation).

    ``ks`` must be increasing, start at 1, and ``values`` are the curve's pass@k at those
    budgets (non-decreasing). Below the first point (``target < values[0]``) the independent
    draw formula :func:`equivalent_k` with ``p1 = values[0]`` is used; inside the measured
    range K is interpolated linearly in ``log2 K`` between the first pair of adjacent points
    that brackets ``target``. Returns ``inf`` when ``target`` exceeds every measured value.
    """
    k_arr = np.asarray(ks, dtype=float)
    v_arr = np.asarray(values, dtype=float)
    if k_arr.ndim != 1 or k_arr.shape != v_arr.shape or k_arr.size == 0:
        raise ValueError("interpolated_equivalent_k: ks and values must be equal-length 1-D")
    if k_arr[0] != 1.0 or np.any(np.diff(k_arr) <= 0):
        raise ValueError("interpolated_equivalent_k: ks must be increasing and start at 1")
    if np.any(np.diff(v_arr) < 0):
        raise ValueError("interpolated_equivalent_k: values must be non-decreasing")
    if target < v_arr[0]:
        return equivalent_k(float(v_arr[0]), float(target))
    for i in range(k_arr.size):
        if v_arr[i] == target:
            return float(k_arr[i])
        if i + 1 < k_arr.size and v_arr[i] < target < v_arr[i + 1]:
            frac = (target - v_arr[i]) / (v_arr[i + 1] - v_arr[i])
            log_k = np.log2(k_arr[i]) + frac * (np.log2(k_arr[i + 1]) - np.log2(k_arr[i]))
            return float(2.0**log_k)
    return math.inf


def fast_1(correct: Any, speedup: Any) -> Any:
    """``correct AND speedup > 1.0`` (strict), elementwise.

    Accepts scalars (returns a Python ``bool``) or array-likes/Series (returns a boolean
    numpy array). A NaN speedup is never fast.
    """
    result = np.logical_and(np.asarray(correct, dtype=bool), np.asarray(speedup, dtype=float) > FAST_THRESHOLD)
    if result.ndim == 0:
        return bool(result)
    return result


# --------------------------------------------------------------------------------------
# Surprisal versus confidence (§6.3); the strategies themselves live in testtime.selection
# --------------------------------------------------------------------------------------


def surprisal_vs_confidence(selection: pd.DataFrame) -> dict[str, Any]:
    """§6.3 paired statistics of surprisal-guided versus confidence-guided selection.

    Pairs are the (seed, problem_id) groups that have both strategies in ``selection``.
    Returned keys:

    * ``n_pairs``; ``p_surprisal``, ``p_confidence``: pooled fast_1 proportions over pairs.
    * ``cohens_h``: :func:`cohens_h` (surprisal − confidence) on the pooled proportions.
    * ``wilcoxon_statistic``, ``wilcoxon_p``: ``scipy.stats.wilcoxon(d,
      alternative="two-sided")`` with defaults (zero_method "wilcox": zero differences are
      dropped) on ``d = ln(s_surprisal / s_confidence)``, each zero speedup replaced by 1e-6
      first, as in the reference script. The statistic is min(W+, W−) (paper: 10.0,
      p = 0.084). Both are NaN when there are no pairs or every ``d`` is zero, because the
      test is then undefined (scipy would return a meaningless 0 / 1.0).
    * ``median_log_ratio``, ``exp_median_log_ratio``: median of ``d`` and its exponential
      (a geometric "typical" speedup ratio); NaN without pairs.
    * ``wins``, ``losses``, ``ties``: strict comparisons of the raw selected speedups.
    * ``n_discordant``, ``sign_test_k``, ``sign_test_p``: exact one-sided sign test on the
      binary fast_1 outcomes, ``scipy.stats.binomtest(k, n_discordant, 0.5,
      alternative="greater")`` where ``k`` counts discordant pairs won by surprisal
      (paper: 3/3, p = 0.125). ``sign_test_p`` is NaN when there are no discordant pairs
      (the test is undefined, and NaN keeps that distinct from "no evidence", p = 1).
    """
    require_columns(selection, ("seed", "problem_id", "strategy", "speedup", "fast_1"), "selection")
    keys = ["seed", "problem_id"]
    cols = keys + ["speedup", "fast_1"]
    surprisal = selection.loc[selection["strategy"] == "surprisal-guided", cols]
    confidence = selection.loc[selection["strategy"] == "confidence-guided", cols]
    for name, part in (("surprisal-guided", surprisal), ("confidence-guided", confidence)):
        if part.duplicated(keys).any():
            raise ValueError(f"surprisal_vs_confidence: duplicate {name} rows for a task")
    pairs = surprisal.merge(confidence, on=keys, suffixes=("_s", "_c")).sort_values(keys)
    n_pairs = int(len(pairs))

    s_speed = pairs["speedup_s"].to_numpy(dtype=float)
    c_speed = pairs["speedup_c"].to_numpy(dtype=float)
    s_fast = pairs["fast_1_s"].to_numpy(dtype=float)
    c_fast = pairs["fast_1_c"].to_numpy(dtype=float)

    nan = float("nan")
    result: dict[str, Any] = {"n_pairs": n_pairs}
    if n_pairs == 0:
        result.update(
            p_surprisal=nan,
            p_confidence=nan,
            cohens_h=nan,
            wilcoxon_statistic=nan,
            wilcoxon_p=nan,
            median_log_ratio=nan,
            exp_median_log_ratio=nan,
            wins=0,
            losses=0,
            ties=0,
            n_discordant=0,
            sign_test_k=0,
            sign_test_p=nan,
        )
        return result

    p_s = float(s_fast.mean())
    p_c = float(c_fast.mean())
    d = np.log(
        np.where(s_speed == 0.0, ZERO_SPEEDUP_REPLACEMENT, s_speed) / np.where(c_speed == 0.0, ZERO_SPEEDUP_REPLACEMENT, c_speed)
    )
    if np.all(d == 0.0):
        w_stat, w_p = nan, nan
    else:
        w = stats.wilcoxon(d, alternative="two-sided")
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    median = float(np.median(d))

    s_bin = s_fast > 0.5
    c_bin = c_fast > 0.5
    discordant = s_bin != c_bin
    n_disc = int(discordant.sum())
    k_s = int((s_bin & ~c_bin).sum())
    sign_p = float(stats.binomtest(k_s, n_disc, 0.5, alternative="greater").pvalue) if n_disc else nan

    result.update(
        p_surprisal=p_s,
        p_confidence=p_c,
        cohens_h=cohens_h(p_s, p_c),
        wilcoxon_statistic=w_stat,
        wilcoxon_p=w_p,
        median_log_ratio=median,
        exp_median_log_ratio=float(math.exp(median)),
        wins=int((s_speed > c_speed).sum()),
        losses=int((s_speed < c_speed).sum()),
        ties=int((s_speed == c_speed).sum()),
        n_discordant=n_disc,
        sign_test_k=k_s,
        sign_test_p=sign_p,
    )
    return result


# --------------------------------------------------------------------------------------
# Best-of-N scaling curve (Table 2)
# --------------------------------------------------------------------------------------


def _task_fast_counts(records: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, problem_id): ``n`` samples and ``c`` = number of fast_1 samples."""
    require_columns(records, ("seed", "problem_id", "correct", "speedup"))
    frame = records.loc[:, ["seed", "problem_id"]].copy()
    frame["fast"] = fast_1(records["correct"].to_numpy(), records["speedup"].to_numpy())
    counts = frame.groupby(["seed", "problem_id"], sort=True)["fast"].agg(["size", "sum"])
    counts = counts.rename(columns={"size": "n", "sum": "c"}).reset_index()
    counts["n"] = counts["n"].astype(int)
    counts["c"] = counts["c"].astype(int)
    return counts


def bootstrap_any_fast(
    n: Sequence[int] | np.ndarray,
    c: Sequence[int] | np.ndarray,
    k: int,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap replicates of task success at budget ``k`` for one seed's tasks.

    Each replicate draws ``k`` of the ``n[t]`` samples of every task ``t`` without
    replacement, scores the task 1 if any drawn sample is fast_1 (``c[t]`` of them are), and
    averages over tasks. Only the number of fast samples in a draw matters, and that number
    is hypergeometric, so the draws are simulated exactly with
    ``rng.hypergeometric(c, n - c, k)`` — fully vectorised, no per-sample shuffles.

    Returns:
        Array of shape ``(n_boot,)`` with the per-replicate mean over tasks.
    """
    n_arr = np.asarray(n, dtype=np.int64)
    c_arr = np.asarray(c, dtype=np.int64)
    if n_arr.ndim != 1 or n_arr.shape != c_arr.shape or n_arr.size == 0:
        raise ValueError("bootstrap_any_fast: n and c must be equal-length non-empty 1-D")
    if np.any(c_arr < 0) or np.any(c_arr > n_arr) or k < 1 or k > int(n_arr.min()):
        raise ValueError("bootstrap_any_fast: need 0 <= c <= n and 1 <= k <= min(n)")
    draws = rng.hypergeometric(c_arr[:, None], (n_arr - c_arr)[:, None], k, size=(n_arr.size, int(n_boot)))
    return (draws > 0).mean(axis=0)


def _scaling_rows(
    records: pd.DataFrame, ks: Sequence[int], n_boot: int, rng_seed: int
) -> tuple[list[int], dict[int, dict[Any, float]], dict[int, dict[Any, np.ndarray]]]:
    """Shared core of the scaling-curve functions: per k and seed, pass@k and replicates."""
    counts = _task_fast_counts(records)
    if counts.empty:
        raise ValueError("scaling_curve: records is empty")
    n_min = int(counts["n"].min())
    valid_ks = sorted({int(k) for k in ks if 1 <= int(k) <= n_min})
    rng = np.random.default_rng(rng_seed)
    point: dict[int, dict[Any, float]] = {}
    boots: dict[int, dict[Any, np.ndarray]] = {}
    seeds = sorted(counts["seed"].unique())
    for k in valid_ks:
        point[k], boots[k] = {}, {}
        for seed in seeds:
            sub = counts[counts["seed"] == seed]
            n_arr = sub["n"].to_numpy()
            c_arr = sub["c"].to_numpy()
            point[k][seed] = float(np.mean([pass_at_k(int(n_t), int(c_t), k) for n_t, c_t in zip(n_arr, c_arr)]))
            boots[k][seed] = bootstrap_any_fast(n_arr, c_arr, k, n_boot, rng)
    return valid_ks, point, boots


def scaling_curve(
    records: pd.DataFrame,
    ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    n_boot: int = 10000,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Table 2: Best-of-N pass@k (k = budget) with std across seeds and a bootstrap 95% CI.

    For every seed and task, ``c_t`` = number of fast_1 samples out of ``n_t``. For each
    ``k`` in ``ks`` with ``k <= min n_t`` (larger budgets are skipped):

    * ``pass_at_k``: per seed, the mean over tasks of the unbiased :func:`pass_at_k`
      estimator; then the mean over seeds.
    * ``std``: sample std (ddof=1) of the per-seed values; NaN with one seed.
    * ``ci_low``, ``ci_high``: 2.5th / 97.5th percentiles (numpy default linear
      interpolation) of a percentile bootstrap (:func:`bootstrap_any_fast`): ``n_boot``
      replicates per seed, pooled across seeds. This is the inferred method of §7: it
      explains why the published bounds are multiples of 1/(number of tasks).

    Seeds and ks are processed in sorted order from one ``numpy.random.default_rng(rng_seed)``,
    so results are deterministic.
    """
    valid_ks, point, boots = _scaling_rows(records, ks, n_boot, rng_seed)
    rows = []
    for k in valid_ks:
        per_seed = np.array(list(point[k].values()), dtype=float)
        pooled = np.concatenate(list(boots[k].values()))
        rows.append(
            {
                "k": k,
                "pass_at_k": float(per_seed.mean()),
                "std": sample_std(per_seed),
                "ci_low": float(np.percentile(pooled, 2.5)),
                "ci_high": float(np.percentile(pooled, 97.5)),
            }
        )
    return pd.DataFrame(rows, columns=["k", "pass_at_k", "std", "ci_low", "ci_high"])


def scaling_curve_by_seed(
    records: pd.DataFrame,
    ks: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
    n_boot: int = 10000,
    rng_seed: int = 0,
) -> pd.DataFrame:
    """Per-seed companion of :func:`scaling_curve` (§7 asks to store per-seed CIs too).

    Columns ``seed, k, pass_at_k, ci_low, ci_high``; the replicates are the same ones
    :func:`scaling_curve` pools (same ``rng_seed`` → same draws).
    """
    valid_ks, point, boots = _scaling_rows(records, ks, n_boot, rng_seed)
    rows = []
    for k in valid_ks:
        for seed, value in point[k].items():
            rep = boots[k][seed]
            rows.append(
                {
                    "seed": seed,
                    "k": k,
                    "pass_at_k": value,
                    "ci_low": float(np.percentile(rep, 2.5)),
                    "ci_high": float(np.percentile(rep, 97.5)),
                }
            )
    frame = pd.DataFrame(rows, columns=["seed", "k", "pass_at_k", "ci_low", "ci_high"])
    return frame.sort_values(["seed", "k"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------------------
# Test-time training checkpoint selection (§9.2, §9.4)
# --------------------------------------------------------------------------------------


def _validate_scores(scores: Sequence[float], fn: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{fn}: scores must be a non-empty 1-D sequence")
    if np.isnan(arr).any():
        raise ValueError(f"{fn}: scores contain NaN")
    return arr


def boa_select(scores: Sequence[float]) -> int:
    """Best-of-Adaptation: the step with the highest score, the earliest one on ties.

    Matches the reference code's Python ``max`` over steps (first maximum wins). ``scores[s]``
    is the aggregate fast_1 of checkpoint θ_s (step 0 = the unadapted model).
    """
    return int(np.argmax(_validate_scores(scores, "boa_select")))


def early_stop_select(scores: Sequence[float], patience: int = 1) -> int:
    """Early-stopping checkpoint selection with patience ``patience`` (§9.4).

    Steps are visited in order while tracking the best score so far. A step is
    "non-improving" unless it is strictly greater than the best so far (a tie counts as
    non-improving, i.e. as a regression). After ``patience`` consecutive non-improving steps
    the run stops and the best step so far is selected (earliest on ties). If it never
    stops, the best step overall is selected (again earliest on ties).

    Comparing against the best so far (Keras-style patience) rather than the previous step
    is a choice for ``patience > 1``; for ``patience = 1`` both readings coincide with the
    paper's "stop at the first s with score[s] <= score[s-1] and select s-1", because up to
    that point the scores strictly increase.
    """
    if isinstance(patience, (bool, np.bool_)) or not isinstance(patience, (int, np.integer)):
        raise ValueError(f"early_stop_select: patience must be an integer, got {patience!r}")
    if patience < 1:
        raise ValueError(f"early_stop_select: patience must be >= 1, got {patience}")
    arr = _validate_scores(scores, "early_stop_select")
    best_step = 0
    stale = 0
    for step in range(1, arr.size):
        if arr[step] > arr[best_step]:
            best_step = step
            stale = 0
        else:
            stale += 1
            if stale >= patience:
                break
    return best_step
