"""Tests for testtime.analysis (selection strategies, statistics, scaling curve, BoA)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from testtime import analysis as A
from testtime import selection as S

TABLE2_COUNTS = (17, 25, 28, 38, 63)  # per-task fast counts out of 64 (one seed), §7
TABLE6_AGG = (37.5, 40.0, 42.5, 36.3, 36.3, 41.3)


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of size-k subsets of n items (c passing) that contain a passing item."""
    items = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(items[i] for i in s) for s in subsets) / len(subsets)


def make_group(rows, seed=42, problem_id=4):
    """rows: list of (correct, speedup, lp_mean); sample_index = position."""
    return pd.DataFrame(
        {
            "seed": seed,
            "problem_id": problem_id,
            "sample_index": list(range(len(rows))),
            "correct": [r[0] for r in rows],
            "speedup": [r[1] if r[0] else 0.0 for r in rows],
            "lp_mean": [r[2] for r in rows],
        }
    )


def by_strategy(sel: pd.DataFrame) -> dict:
    return {r.strategy: r for r in sel.itertuples(index=False)}


def records_from_counts(counts_by_seed: dict, n: int) -> pd.DataFrame:
    """One row per sample; the first c samples of each task are fast, the rest are correct
    but slow (speedup 0.5) or incorrect, alternating."""
    frames = []
    for seed, counts in counts_by_seed.items():
        for pid, c in enumerate(counts):
            idx = np.arange(n)
            fast = idx < c
            correct = fast | (idx % 2 == 0)
            speedup = np.where(fast, 2.0, np.where(correct, 0.5, 0.0))
            frames.append(
                pd.DataFrame(
                    {
                        "seed": seed,
                        "problem_id": pid,
                        "sample_index": idx,
                        "correct": correct,
                        "speedup": speedup,
                        "lp_mean": -0.1 * idx,
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def pair_selection(pairs) -> pd.DataFrame:
    """pairs: list of (s_speedup, c_speedup) for surprisal- and confidence-guided."""
    rows = []
    for i, (s, c) in enumerate(pairs):
        seed, pid = 42 + i // 5, i % 5
        for strat, spd in (("surprisal-guided", s), ("confidence-guided", c)):
            rows.append(
                {
                    "seed": seed,
                    "problem_id": pid,
                    "strategy": strat,
                    "sample_index": 0,
                    "speedup": spd,
                    "fast_1": float(spd > 1.0),
                    "n_correct": 1,
                    "n_samples": 1,
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# pass@k, Cohen's h, equivalent K, fast_1
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 8])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert A.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_closed_forms_and_large_n():
    assert A.pass_at_k(64, 17, 1) == pytest.approx(17 / 64)
    assert A.pass_at_k(64, 0, 64) == 0.0
    assert A.pass_at_k(64, 1, 64) == 1.0
    # Product form stays finite where C(n, k) overflows a float.
    v = A.pass_at_k(2000, 3, 1000)
    assert v == pytest.approx(1 - (1000 * 999 * 998) / (2000 * 1999 * 1998))


def test_pass_at_k_table2_example():
    expected = {1: 0.534, 2: 0.725, 4: 0.895, 8: 0.982, 16: 0.999, 32: 1.0, 64: 1.0}
    for k, target in expected.items():
        mean = np.mean([A.pass_at_k(64, c, k) for c in TABLE2_COUNTS])
        assert mean == pytest.approx(target, abs=1e-3), k


@pytest.mark.parametrize(
    "n,c,k",
    [(5, -1, 1), (5, 6, 1), (5, 2, 0), (5, 2, 6), (0, 0, 1), (5.0, 2, 1), (5, 2, True)],
)
def test_pass_at_k_validation(n, c, k):
    with pytest.raises(ValueError):
        A.pass_at_k(n, c, k)


def test_cohens_h():
    assert A.cohens_h(0.8, 0.5) == pytest.approx(0.6435, abs=1e-3)
    assert A.cohens_h(0.5, 0.8) == pytest.approx(-A.cohens_h(0.8, 0.5))
    assert A.cohens_h(0.3, 0.3) == 0.0
    assert A.cohens_h(1.0, 0.0) == pytest.approx(math.pi)
    with pytest.raises(ValueError):
        A.cohens_h(1.2, 0.5)


def test_equivalent_k():
    assert A.equivalent_k(0.533, 0.306) == pytest.approx(0.48, abs=0.01)
    # Round trip on the curve it inverts.
    k = A.equivalent_k(0.2, 0.7)
    assert 1 - (1 - 0.2) ** k == pytest.approx(0.7)
    assert A.equivalent_k(0.4, 0.4) == pytest.approx(1.0)
    assert A.equivalent_k(0.4, 0.0) == 0.0
    assert A.equivalent_k(0.0, 0.3) == math.inf
    assert A.equivalent_k(0.4, 1.0) == math.inf
    for bad in [(1.0, 0.5), (-0.1, 0.5), (0.5, 1.1), (float("nan"), 0.5)]:
        with pytest.raises(ValueError):
            A.equivalent_k(*bad)


def test_interpolated_equivalent_k():
    ks = [1, 2, 4, 8]
    vals = [0.5, 0.7, 0.9, 1.0]
    assert A.interpolated_equivalent_k(ks, vals, 0.3) == pytest.approx(A.equivalent_k(0.5, 0.3))
    assert A.interpolated_equivalent_k(ks, vals, 0.7) == pytest.approx(2.0)
    assert A.interpolated_equivalent_k(ks, vals, 0.8) == pytest.approx(2**1.5)
    assert A.interpolated_equivalent_k([1, 2], [0.5, 0.7], 0.9) == math.inf


def test_fast_1_strict():
    assert A.fast_1(True, 1.0001) is True
    assert A.fast_1(True, 1.0) is False
    assert A.fast_1(False, 5.0) is False
    out = A.fast_1([True, True, False, True], [2.0, 1.0, 3.0, float("nan")])
    np.testing.assert_array_equal(out, [True, False, False, False])
    s = A.fast_1(pd.Series([True, True]), pd.Series([0.9, 1.1]))
    np.testing.assert_array_equal(s, [False, True])


# --------------------------------------------------------------------------------------
# selection strategies
# --------------------------------------------------------------------------------------


def test_select_basic_strategies():
    g = make_group(
        [
            (True, 3.0, -0.5),  # 0
            (False, 0.0, -9.0),  # 1 incorrect, lowest score: must be ignored
            (True, 0.8, -2.0),  # 2 lowest-scoring correct -> surprisal
            (True, 10.0, -0.1),  # 3 fastest; highest score -> oracle and confidence
            (True, 1.5, -1.0),  # 4
            (True, 1.2, -1.5),  # 5
        ]
    )
    sel = S.select(g)
    assert list(sel["strategy"]) == list(S.strategy_names())
    assert list(sel.columns) == [
        "strategy",
        "sample_index",
        "speedup",
        "fast_1",
        "fast_1_sig",
        "n_correct",
        "n_samples",
    ]
    assert sel["fast_1_sig"].isna().all()  # the records carry no speedup intervals
    r = by_strategy(sel)
    assert (r["best-correct"].sample_index, r["best-correct"].speedup) == (3, 10.0)
    assert r["best-correct"].fast_1 == 1.0
    assert (r["confidence-guided"].sample_index, r["confidence-guided"].fast_1) == (3, 1.0)
    assert (r["surprisal-guided"].sample_index, r["surprisal-guided"].fast_1) == (2, 0.0)
    # top-3 lowest scores among correct: 2 (-2.0), 5 (-1.5), 4 (-1.0) -> fastest is 4
    assert (r["surprisal-guided-top3"].sample_index, r["surprisal-guided-top3"].speedup) == (4, 1.5)
    rc = r["random-correct"]
    assert rc.sample_index == -1
    assert rc.fast_1 == pytest.approx(4 / 5)
    assert rc.speedup == pytest.approx((3.0 + 0.8 + 10.0 + 1.5 + 1.2) / 5)
    assert set(sel["n_correct"]) == {5} and set(sel["n_samples"]) == {6}


def test_select_uses_other_score_column():
    g = make_group([(True, 2.0, -1.0), (True, 0.5, -0.2)])
    g["lp_sum"] = [-1.0, -50.0]  # reverses the ranking
    r = by_strategy(S.select(g, score="lp_sum"))
    assert r["confidence-guided"].sample_index == 0
    assert r["surprisal-guided"].sample_index == 1
    r = by_strategy(S.select(g))
    assert r["confidence-guided"].sample_index == 1


def test_select_ties_break_by_lowest_sample_index():
    # Shuffled row order and non-contiguous indices: ties must still go to the lowest index.
    g = pd.DataFrame(
        {
            "seed": 42,
            "problem_id": 5,
            "sample_index": [9, 3, 7, 5],
            "correct": [True, True, True, True],
            "speedup": [4.0, 4.0, 0.5, 4.0],
            "lp_mean": [-1.0, -1.0, -0.2, -1.0],
        }
    )
    r = by_strategy(S.select(g))
    assert r["best-correct"].sample_index == 3
    assert r["surprisal-guided"].sample_index == 3  # samples 3, 5, 9 tie at lowest score
    assert r["confidence-guided"].sample_index == 7
    # top-3 by score: 3, 5, 9 (the tie on score goes by index); all 4.0x -> lowest index 3
    assert r["surprisal-guided-top3"].sample_index == 3


def test_select_top3_tie_on_score_boundary():
    # Four correct samples tie at the lowest score; top-3 keeps indices 0,1,2, not 3.
    g = make_group([(True, 1.1, -3.0), (True, 1.2, -3.0), (True, 0.9, -3.0), (True, 50.0, -3.0)])
    r = by_strategy(S.select(g))
    assert r["surprisal-guided-top3"].sample_index == 1
    assert r["best-correct"].sample_index == 3


def test_select_empty_correct_set():
    g = make_group([(False, 0.0, -1.0), (False, 0.0, -2.0), (False, 0.0, -3.0)])
    sel = S.select(g)
    assert len(sel) == 5
    assert (sel["fast_1"] == 0.0).all()
    assert (sel["speedup"] == 0.0).all()
    assert (sel["sample_index"] == -1).all()
    assert (sel["n_correct"] == 0).all() and (sel["n_samples"] == 3).all()


def test_select_fewer_than_three_correct():
    g = make_group([(True, 0.7, -2.0), (False, 0.0, -5.0), (True, 1.8, -0.3)])
    r = by_strategy(S.select(g))
    # top3 = all of C -> equals the oracle
    assert r["surprisal-guided-top3"].sample_index == 2
    assert r["surprisal-guided-top3"].fast_1 == 1.0
    assert r["surprisal-guided"].sample_index == 0
    assert r["surprisal-guided"].fast_1 == 0.0
    assert r["random-correct"].fast_1 == pytest.approx(0.5)
    assert r["random-correct"].speedup == pytest.approx(1.25)


def test_select_rejects_multiple_tasks_and_nan_scores():
    g = pd.concat([make_group([(True, 2.0, -1.0)]), make_group([(True, 2.0, -1.0)], problem_id=5)])
    with pytest.raises(ValueError):
        S.select(g)
    g = make_group([(True, 2.0, float("nan"))])
    with pytest.raises(ValueError):
        S.select(g)


def test_random_correct_expectation_matches_simulation():
    rng = np.random.default_rng(1)
    rows = [
        (bool(c), float(s), float(lp)) for c, s, lp in zip(rng.random(64) < 0.8, rng.lognormal(0, 1, 64), rng.normal(size=64))
    ]
    g = make_group(rows)
    r = by_strategy(S.select(g))["random-correct"]
    cset = g[g["correct"]]
    draws = cset["speedup"].to_numpy()[rng.integers(0, len(cset), 200_000)]
    assert r.fast_1 == pytest.approx(np.mean(draws > 1.0), abs=0.01)
    assert r.speedup == pytest.approx(np.mean(draws), rel=0.02)


def test_selection_table_and_strategy_summary():
    # Two seeds x two tasks. Confidence-guided is fast on (42, 1) and (43, 1) only...
    groups = {
        (42, 1): [(True, 2.0, -1.0), (True, 0.5, -0.1)],  # conf picks 1 (slow)
        (42, 2): [(True, 3.0, -0.1), (True, 0.9, -2.0)],  # conf picks 0 (fast)
        (43, 1): [(True, 0.5, -0.1), (True, 4.0, -2.0)],  # conf slow
        (43, 2): [(True, 0.8, -0.1), (True, 0.6, -2.0)],  # conf slow
    }
    recs = pd.concat(
        [make_group(rows, seed=s, problem_id=p) for (s, p), rows in groups.items()],
        ignore_index=True,
    )
    sel = S.selection_table(recs)
    assert len(sel) == 4 * len(S.strategy_names())
    assert list(sel.columns[:2]) == ["seed", "problem_id"]
    summ = S.strategy_summary(sel).set_index("strategy")
    assert list(summ.index) == list(S.strategy_names())
    # confidence-guided per-seed fast_1: seed 42 = 0.5, seed 43 = 0.0
    assert summ.loc["confidence-guided", "fast_1"] == pytest.approx(0.25)
    assert summ.loc["confidence-guided", "fast_1_std"] == pytest.approx(np.std([0.5, 0.0], ddof=1))
    assert summ.loc["confidence-guided", "fast_1_std"] == pytest.approx(0.5 / math.sqrt(2))
    assert summ.loc["confidence-guided", "mean_speedup"] == pytest.approx((0.5 + 3.0 + 0.5 + 0.8) / 4)
    # oracle: seed 42 -> 1.0, seed 43 -> 0.5
    assert summ.loc["best-correct", "fast_1"] == pytest.approx(0.75)
    assert summ.loc["best-correct", "fast_1_std"] == pytest.approx(np.std([1.0, 0.5], ddof=1))
    assert summ.loc["best-correct", "mean_speedup"] == pytest.approx((2.0 + 3.0 + 4.0 + 0.8) / 4)
    assert (summ["n_seeds"] == 2).all() and (summ["n_tasks"] == 2).all()
    # the 95% Wilson interval of 1 fast outcome in 4 task-seeds (confidence-guided), by hand:
    # centre (0.25 + z^2/8) / (1 + z^2/4), half z*sqrt(0.25*0.75/4 + z^2/64) / (1 + z^2/4)
    z = 1.959963984540054
    centre, half = (0.25 + z * z / 8) / (1 + z * z / 4), z * math.sqrt(0.1875 / 4 + z * z / 64) / (1 + z * z / 4)
    assert summ.loc["confidence-guided", "fast_1_ci_low"] == pytest.approx(centre - half)
    assert summ.loc["confidence-guided", "fast_1_ci_high"] == pytest.approx(centre + half)
    assert (summ["fast_1_ci_low"] <= summ["fast_1"]).all() and (summ["fast_1"] <= summ["fast_1_ci_high"]).all()
    # the mean speedup's bootstrap interval: around the mean, inside the picks' range
    assert (summ["mean_speedup_ci_low"] <= summ["mean_speedup"]).all()
    assert (summ["mean_speedup"] <= summ["mean_speedup_ci_high"]).all()
    assert summ.loc["best-correct", "mean_speedup_ci_low"] >= 0.8 and summ.loc["best-correct", "mean_speedup_ci_high"] <= 4.0


def test_bootstrap_mean_interval():
    from testtime.analysis import bootstrap_mean_interval

    assert bootstrap_mean_interval(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)
    assert bootstrap_mean_interval(np.array([1.5])) == (1.5, 1.5)
    assert all(math.isnan(v) for v in bootstrap_mean_interval(np.array([])))
    values = np.array([1.0, 1.0, 1.0, 1.0, 3.0, 3.0, 3.0, 3.0])
    low, high = bootstrap_mean_interval(values)
    # the sampling distribution of the mean: sd = 1 / sqrt(8) = 0.354 around 2.0
    assert 2.0 - 2.2 * 0.354 < low < 2.0 - 1.6 * 0.354 and 2.0 + 1.6 * 0.354 < high < 2.0 + 2.2 * 0.354
    assert bootstrap_mean_interval(values) == (low, high)  # a fixed seed: reproducible


def test_wilson_interval_stays_in_range_and_takes_expectations():
    from testtime.analysis import wilson_interval

    assert wilson_interval(0, 8)[0] == 0.0 and 0.3 < wilson_interval(0, 8)[1] < 0.4  # 0.324 for 0/8
    assert wilson_interval(8, 8)[1] == 1.0 and 0.6 < wilson_interval(8, 8)[0] < 0.7
    low, high = wilson_interval(2.5, 8)  # random-correct's fast_1 are expectations
    assert low < 2.5 / 8 < high
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_fast_1_sig_needs_the_selected_speedups_interval_above_one():
    # (correct, speedup, lp_mean) with each speedup's interval low end: sample 0 is a copy of
    # the reference that timed at 1.05 [0.97, ...], sample 1 is really faster
    g = make_group([(True, 1.05, -0.1), (True, 3.0, -2.0), (True, 0.9, -1.0), (False, 0.0, -0.5)])
    g["speedup_ci_low"] = [0.97, 2.6, 0.8, float("nan")]
    r = by_strategy(S.select(g))
    assert (r["confidence-guided"].fast_1, r["confidence-guided"].fast_1_sig) == (1.0, 0.0)
    assert (r["surprisal-guided"].fast_1, r["surprisal-guided"].fast_1_sig) == (1.0, 1.0)
    assert (r["best-correct"].fast_1, r["best-correct"].fast_1_sig) == (1.0, 1.0)
    assert r["random-correct"].fast_1 == pytest.approx(2 / 3)
    assert r["random-correct"].fast_1_sig == pytest.approx(1 / 3)
    other = make_group([(True, 1.2, -0.1), (False, 0.0, -1.0)], seed=43)
    other["speedup_ci_low"] = [0.9, float("nan")]
    summ = S.strategy_summary(S.selection_table(pd.concat([g, other], ignore_index=True))).set_index("strategy")
    # per seed then over seeds, as fast_1: confidence-guided 1 and 1 (fast_1), 0 and 0 (sig)
    assert summ.loc["confidence-guided", "fast_1"] == 1.0 and summ.loc["confidence-guided", "fast_1_sig"] == 0.0
    assert summ.loc["best-correct", "fast_1_sig"] == pytest.approx(0.5)
    assert summ.loc["random-correct", "fast_1_sig"] == pytest.approx((1 / 3 + 0.0) / 2)


def test_strategy_summary_single_seed_std_is_nan():
    recs = make_group([(True, 2.0, -1.0), (True, 0.5, -0.1)])
    summ = S.strategy_summary(S.selection_table(recs))
    assert summ["fast_1_std"].isna().all()
    assert (summ["n_seeds"] == 1).all()


def test_strategy_summary_table3_random_correct_std():
    # Per-seed random-correct values 0.573 and 0.611 give Table 3's 59.2% +- 2.7%.
    sel = pd.DataFrame(
        {
            "seed": [42, 43],
            "problem_id": [4, 4],
            "strategy": ["random-correct"] * 2,
            "sample_index": [-1, -1],
            "speedup": [30.0, 30.0],
            "fast_1": [0.573, 0.611],
            "n_correct": [10, 10],
            "n_samples": [64, 64],
        }
    )
    row = S.strategy_summary(sel).iloc[0]
    assert row["fast_1"] == pytest.approx(0.592)
    assert row["fast_1_std"] == pytest.approx(0.027, abs=5e-4)


# --------------------------------------------------------------------------------------
# surprisal vs confidence statistics (§6.3)
# --------------------------------------------------------------------------------------


def paper_like_pairs():
    """10 pairs reproducing the paper's §6.3 numbers.

    Log-ratios d = ±(0.1 ... 1.0) with the four negative ones on the smallest magnitudes,
    so W- = 1+2+3+4 = 10. Confidence speedups are chosen so that surprisal is fast on 8/10,
    confidence on 5/10, and the 3 discordant pairs all favour surprisal.
    """
    d = [-0.1, -0.2, -0.3, -0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    conf = [0.5, 0.5, 10.0, 10.0, 0.8, 0.8, 0.8, 10.0, 10.0, 10.0]
    return [(c * math.exp(di), c) for di, c in zip(d, conf)]


def test_surprisal_vs_confidence_reproduces_paper_statistics():
    res = A.surprisal_vs_confidence(pair_selection(paper_like_pairs()))
    assert res["n_pairs"] == 10
    assert res["p_surprisal"] == pytest.approx(0.8)
    assert res["p_confidence"] == pytest.approx(0.5)
    assert res["cohens_h"] == pytest.approx(0.6435, abs=1e-3)
    assert res["wilcoxon_statistic"] == pytest.approx(10.0)
    assert res["wilcoxon_p"] == pytest.approx(0.084, abs=1e-3)
    assert res["wilcoxon_p"] == pytest.approx(86 / 1024)  # exact null distribution, n = 10
    assert res["n_discordant"] == 3 and res["sign_test_k"] == 3
    assert res["sign_test_p"] == pytest.approx(0.125)
    assert (res["wins"], res["losses"], res["ties"]) == (6, 4, 0)
    assert res["median_log_ratio"] == pytest.approx(0.55)
    assert res["exp_median_log_ratio"] == pytest.approx(math.exp(0.55))


def test_surprisal_vs_confidence_zero_speedups_and_ties():
    pairs = [(0.0, 2.0), (3.0, 0.0), (0.0, 0.0), (2.0, 2.0), (5.0, 1.0)]
    res = A.surprisal_vs_confidence(pair_selection(pairs))
    d = np.log(np.array([1e-6, 3.0, 1e-6, 2.0, 5.0]) / np.array([2.0, 1e-6, 1e-6, 2.0, 1.0]))
    expected = stats.wilcoxon(d, alternative="two-sided")
    assert res["wilcoxon_statistic"] == pytest.approx(expected.statistic)
    assert res["wilcoxon_p"] == pytest.approx(expected.pvalue)
    assert (res["wins"], res["losses"], res["ties"]) == (2, 1, 2)
    # binary: s fast = [0,1,0,1,1], c fast = [1,0,0,1,0] -> discordant 3, surprisal wins 2
    assert (res["n_discordant"], res["sign_test_k"]) == (3, 2)
    assert res["sign_test_p"] == pytest.approx(0.5)


def test_surprisal_vs_confidence_degenerate_cases():
    res = A.surprisal_vs_confidence(pair_selection([(2.0, 2.0), (0.5, 0.5)]))
    assert math.isnan(res["wilcoxon_statistic"]) and math.isnan(res["wilcoxon_p"])
    assert res["n_discordant"] == 0 and math.isnan(res["sign_test_p"])
    assert res["ties"] == 2 and res["cohens_h"] == 0.0
    empty = A.surprisal_vs_confidence(pair_selection([]).reindex(columns=["seed", "problem_id", "strategy", "speedup", "fast_1"]))
    assert empty["n_pairs"] == 0 and math.isnan(empty["wilcoxon_p"])


def test_surprisal_vs_confidence_from_selection_table():
    recs = pd.concat(
        [
            make_group([(True, 2.0, -3.0), (True, 0.5, -0.1)], problem_id=1),
            make_group([(True, 0.7, -3.0), (True, 1.5, -0.1)], problem_id=2),
            make_group([(True, 4.0, -3.0), (True, 0.9, -0.1)], problem_id=3),
        ],
        ignore_index=True,
    )
    res = A.surprisal_vs_confidence(S.selection_table(recs))
    assert res["n_pairs"] == 3
    assert res["p_surprisal"] == pytest.approx(2 / 3)
    assert res["p_confidence"] == pytest.approx(1 / 3)
    assert (res["wins"], res["losses"]) == (2, 1)
    assert (res["n_discordant"], res["sign_test_k"]) == (3, 2)


# --------------------------------------------------------------------------------------
# scaling curve (Table 2)
# --------------------------------------------------------------------------------------


def test_scaling_curve_table2_point_estimates():
    recs = records_from_counts({42: TABLE2_COUNTS}, n=64)
    curve = A.scaling_curve(recs)
    assert list(curve.columns) == ["k", "pass_at_k", "std", "ci_low", "ci_high"]
    assert list(curve["k"]) == [1, 2, 4, 8, 16, 32, 64]
    expected = [0.534, 0.725, 0.895, 0.982, 0.999, 1.0, 1.0]
    np.testing.assert_allclose(curve["pass_at_k"], expected, atol=1e-3)
    assert curve["std"].isna().all()  # single seed
    # The bootstrap reproduces Table 2's published 95% CIs for these counts.
    np.testing.assert_allclose(curve["ci_low"], [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(curve["ci_high"][1:], [1.0] * 6)
    # At k = 1, P(all 5 tasks fast) = 17*25*28*38*63 / 64**5 = 2.65%, right at the 97.5th
    # percentile, so the single-seed upper bound is 0.8 or 1.0 depending on the draws.
    assert curve["ci_high"].iloc[0] in (0.8, 1.0)
    assert (curve["ci_low"] <= curve["ci_high"]).all()
    # Bounds are multiples of 1/5 tasks, as in the paper.
    for col in ("ci_low", "ci_high"):
        np.testing.assert_allclose(curve[col] * 5, np.round(curve[col] * 5), atol=1e-9)
    assert curve.loc[curve["k"] == 64, ["ci_low", "ci_high"]].to_numpy().tolist() == [[1.0, 1.0]]


def test_scaling_curve_two_seeds_mean_and_std():
    seed_a, seed_b = (2, 3, 0, 8), (4, 1, 1, 8)
    recs = records_from_counts({42: seed_a, 43: seed_b}, n=8)
    curve = A.scaling_curve(recs, n_boot=500).set_index("k")
    assert list(curve.index) == [1, 2, 4, 8]  # 16.. exceed n = 8
    for k in (1, 2, 4):
        per_seed = [np.mean([A.pass_at_k(8, c, k) for c in s]) for s in (seed_a, seed_b)]
        assert curve.loc[k, "pass_at_k"] == pytest.approx(np.mean(per_seed))
        assert curve.loc[k, "std"] == pytest.approx(np.std(per_seed, ddof=1))


def test_scaling_curve_k_equals_n_ci_is_fraction_of_tasks_with_fast():
    # 3 of 4 tasks have at least one fast sample in both seeds.
    recs = records_from_counts({42: (1, 0, 5, 2), 43: (3, 0, 1, 6)}, n=6)
    curve = A.scaling_curve(recs, ks=(1, 6), n_boot=300).set_index("k")
    assert curve.loc[6, "ci_low"] == pytest.approx(0.75)
    assert curve.loc[6, "ci_high"] == pytest.approx(0.75)
    assert curve.loc[6, "pass_at_k"] == pytest.approx(0.75)
    assert curve.loc[1, "ci_low"] < curve.loc[1, "ci_high"]


def test_scaling_curve_deterministic_and_by_seed():
    recs = records_from_counts({42: TABLE2_COUNTS, 43: (10, 20, 30, 40, 64)}, n=64)
    a = A.scaling_curve(recs, n_boot=1000, rng_seed=3)
    b = A.scaling_curve(recs, n_boot=1000, rng_seed=3)
    pd.testing.assert_frame_equal(a, b)
    per = A.scaling_curve_by_seed(recs, n_boot=1000, rng_seed=3)
    assert set(per["seed"]) == {42, 43} and len(per) == 2 * 7
    means = per.groupby("k")["pass_at_k"].mean().to_numpy()
    np.testing.assert_allclose(a["pass_at_k"].to_numpy(), means)


def test_bootstrap_any_fast_matches_pass_at_k_and_explicit_draws():
    rng = np.random.default_rng(0)
    n = np.array([64, 64, 64])
    c = np.array([17, 0, 40])
    for k in (1, 3, 10):
        reps = A.bootstrap_any_fast(n, c, k, 20000, rng)
        assert reps.shape == (20000,)
        expected = np.mean([A.pass_at_k(64, int(ci), k) for ci in c])
        assert reps.mean() == pytest.approx(expected, abs=0.01)
    # Explicit without-replacement draws agree in distribution for one task.
    k = 4
    fast = np.zeros(20, dtype=bool)
    fast[:3] = True
    explicit = np.mean([fast[rng.permutation(20)[:k]].any() for _ in range(20000)])
    vectorised = A.bootstrap_any_fast([20], [3], k, 20000, rng).mean()
    assert vectorised == pytest.approx(explicit, abs=0.015)
    with pytest.raises(ValueError):
        A.bootstrap_any_fast([5], [2], 6, 10, rng)


# --------------------------------------------------------------------------------------
# BoA and early stopping (§9.2, §9.4)
# --------------------------------------------------------------------------------------


def test_boa_and_early_stop_on_table6():
    assert A.boa_select(TABLE6_AGG) == 2
    assert A.early_stop_select(TABLE6_AGG) == 2
    assert A.early_stop_select(TABLE6_AGG, patience=2) == 2
    assert A.early_stop_select(TABLE6_AGG, patience=5) == 2


def test_lr_fixture_and_isolated_tasks():
    # Table 10 [TEST] fixture (lr 1e-6): peak at step 1.
    assert A.boa_select([49.4, 55.0, 45.6, 41.9]) == 1
    assert A.early_stop_select([49.4, 55.0, 45.6, 41.9]) == 1
    # Table 12, task 12: all 100% -> BoA step 0 (earliest tie).
    assert A.boa_select([100, 100, 100, 100, 100, 100]) == 0
    # Task 14 ([DRAFT-v1] trajectory): later peak at step 4; early stop P=1 stops at step 1.
    task14 = [37.5, 34.4, 37.5, 34.4, 56.3, 40.6]
    assert A.boa_select(task14) == 4
    assert A.early_stop_select(task14) == 0


def test_early_stop_patience_cases():
    assert A.early_stop_select([1.0, 1.0, 2.0]) == 0  # tie counts as non-improving
    assert A.boa_select([1.0, 1.0, 2.0]) == 2
    assert A.early_stop_select([1.0, 1.0, 2.0], patience=2) == 2
    assert A.early_stop_select([1.0, 2.0, 3.0]) == 2  # never stops -> best overall
    assert A.early_stop_select([3.0, 2.0, 4.0], patience=1) == 0
    assert A.early_stop_select([3.0, 2.0, 4.0], patience=2) == 2
    # Non-improving is measured against the best so far: 5 then 7 (< 10) both count.
    assert A.early_stop_select([10.0, 5.0, 7.0, 11.0], patience=2) == 0
    assert A.early_stop_select([10.0, 5.0, 7.0, 11.0], patience=3) == 3
    # Never stopped with a later tie of the maximum: earliest best.
    assert A.early_stop_select([1.0, 5.0, 2.0, 5.0], patience=10) == 1
    assert A.early_stop_select([7.0]) == 0


def test_selection_validation():
    with pytest.raises(ValueError):
        A.boa_select([])
    with pytest.raises(ValueError):
        A.early_stop_select([1.0, float("nan")])
    with pytest.raises(ValueError):
        A.early_stop_select([1.0, 2.0], patience=0)


def test_selection_ranks_by_the_configured_span():
    """selection.span picks the score column: the code span can reverse the completion span's order."""
    records = pd.DataFrame(
        {
            "seed": 1,
            "problem_id": 3,
            "sample_index": [0, 1],
            "correct": [True, True],
            "speedup": [2.0, 0.5],
            "lp_mean": [-0.1, -0.9],  # over the whole completion: sample 1 is the surprising one
            "lp_mean_code": [-0.9, -0.1],  # over the code tokens: sample 0 is
        }
    )
    pick = {
        span: S.select_records(records, score="lp_mean", span=span)[0]
        .set_index("strategy")
        .loc["surprisal-guided", "sample_index"]
        for span in ("completion", "code")
    }
    assert pick == {"completion": 1, "code": 0}
    with pytest.raises(ValueError, match="selection.span.*lp_mean_final"):
        S.select_records(records, score="lp_mean", span="final")
