"""The paper's open questions (§6.6, issue 12 item 4) as experiments: the deployable surprisal
selection (pure functions, by hand), the entropy bonus and KL penalty of the policy-gradient
update, the fast_1 reward, their tables, and the workflow's plan."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from testtime import deployable as dp
from testtime.selection import select

# ---------------------------------------------------------------- deployable selection (open question 2)

# One task, four samples (index: score, correct, speedup). Surprisal order (lowest score first):
# 2, 3, 1, 0; confidence order: 0, 1, 3, 2. Correct: 0 (slow, 0.9x) and 3 (fast, 1.5x).
TASK = pd.DataFrame(
    {
        "seed": 42,
        "problem_id": 7,
        "sample_index": [0, 1, 2, 3],
        "lp_mean": [-0.1, -0.5, -0.9, -0.7],
        "correct": [True, False, False, True],
        "speedup": [0.9, 0.0, 0.0, 1.5],
    }
)


def curve(order: str) -> pd.DataFrame:
    return dp.task_curves(TASK, "lp_mean").query("order == @order").set_index("m")


def test_surprisal_order_by_hand():
    c = curve("surprisal")
    # m = 1: sample 2 is incorrect, nothing is returned, one call spent
    assert c.loc[1, ["fast_1", "found", "speedup", "calls"]].tolist() == [0.0, 0.0, 0.0, 1.0]
    # m >= 2: sample 3 (fast) is the first correct one, after two calls
    for m in (2, 3, 4):
        assert c.loc[m, ["fast_1", "found", "speedup", "calls"]].tolist() == [1.0, 1.0, 1.5, 2.0]


def test_confidence_order_by_hand():
    c = curve("confidence")
    for m in (1, 2, 3, 4):  # sample 0 is correct but slower than the reference
        assert c.loc[m, ["fast_1", "found", "speedup", "calls"]].tolist() == [0.0, 1.0, 0.9, 1.0]


def test_random_order_is_the_exact_expectation_by_hand():
    c = curve("random")
    # n = 4, c = 2; half of the correct set is fast, its mean speedup 1.2
    expected = {1: (0.5, 1.0), 2: (5 / 6, 1.5), 3: (1.0, 5 / 3), 4: (1.0, 5 / 3)}
    for m, (found, calls) in expected.items():
        assert c.loc[m, "found"] == pytest.approx(found)
        assert c.loc[m, "fast_1"] == pytest.approx(found * 0.5)
        assert c.loc[m, "speedup"] == pytest.approx(found * 1.2)
        assert c.loc[m, "calls"] == pytest.approx(calls)


def test_random_order_equals_the_mean_over_all_permutations():
    correct = np.array([False, True, False, False, True, False])
    speedup = np.array([0.0, 1.3, 0.0, 0.0, 0.8, 0.0])
    perms = list(itertools.permutations(range(6)))
    for m in range(1, 7):
        outs = [dp.first_correct(correct[list(p)], speedup[list(p)], m) for p in perms]
        exact = dp.random_order(correct, speedup, m)
        for field in ("fast_1", "found", "speedup", "calls"):
            assert getattr(exact, field) == pytest.approx(np.mean([getattr(o, field) for o in outs]))


def test_no_correct_sample_spends_m_calls_and_fails():
    task = TASK.assign(correct=False, speedup=0.0)
    c = dp.task_curves(task, "lp_mean").set_index(["order", "m"])
    for order in dp.ORDERS:
        for m in (1, 2, 3, 4):
            assert c.loc[(order, m), ["fast_1", "found", "speedup", "calls"]].tolist() == [0.0, 0.0, 0.0, float(m)]


def test_candidates_without_a_score_are_never_evaluated():
    extra = pd.DataFrame(
        {"seed": 42, "problem_id": 7, "sample_index": [4], "lp_mean": [math.nan], "correct": [False], "speedup": [0.0]}
    )
    c = dp.task_curves(pd.concat([TASK, extra]), "lp_mean")
    assert (c["n_candidates"] == 4).all() and c["m"].max() == 4
    pd.testing.assert_frame_equal(c, dp.task_curves(TASK, "lp_mean"))
    with pytest.raises(ValueError, match="NaN"):
        dp.task_curves(TASK.assign(lp_mean=[math.nan, -0.5, -0.9, -0.7]), "lp_mean")


def test_ties_break_by_the_lowest_index_as_in_selection():
    assert dp.ranking(np.array([-0.5, -0.9, -0.5, -0.9]), "surprisal").tolist() == [1, 3, 0, 2]
    assert dp.ranking(np.array([-0.5, -0.9, -0.5, -0.9]), "confidence").tolist() == [0, 2, 1, 3]


def test_at_m_equal_k_each_order_is_its_post_hoc_strategy():
    """Evaluating every candidate, the first correct one in surprisal (confidence) order is the
    paper's surprisal-guided (confidence-guided) pick, and random order is random-correct."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(2, 9))
        correct = rng.random(k) < 0.4
        task = pd.DataFrame(
            {
                "sample_index": range(k),
                "lp_mean": np.round(rng.normal(-0.5, 0.2, k), 1),  # rounded: ties happen
                "correct": correct,
                "speedup": np.where(correct, rng.uniform(0.5, 2.0, k), 0.0),
            }
        )
        picks = select(task).set_index("strategy")
        last = dp.task_curves(task, "lp_mean").query("m == @k").set_index("order")
        for order, strategy in (("surprisal", "surprisal-guided"), ("confidence", "confidence-guided"), ("random", "random-correct")):
            assert last.loc[order, "fast_1"] == pytest.approx(picks.loc[strategy, "fast_1"])
            assert last.loc[order, "speedup"] == pytest.approx(picks.loc[strategy, "speedup"])


def test_summary_averages_tasks_per_seed_then_seeds():
    other = TASK.assign(seed=43, correct=[False, False, True, False], speedup=[0.0, 0.0, 2.0, 0.0])
    per_task = dp.deployable_per_task(pd.concat([TASK, other]), "lp_mean")
    summary = dp.deployable_summary(per_task).set_index(["order", "m"])
    # surprisal, m = 1: seed 42 fails (sample 2 incorrect), seed 43 succeeds (sample 2 fast)
    row = summary.loc[("surprisal", 1)]
    assert row["fast_1"] == 0.5 and row["fast_1_std"] == pytest.approx(np.std([0, 1], ddof=1))
    assert row["mean_calls"] == 1.0 and row["n_seeds"] == 2 and row["n_tasks"] == 1
    # confidence, m = 4: seed 42 returns sample 0 (slow) after 1 call; seed 43 sample 2 after 4 calls
    row = summary.loc[("confidence", 4)]
    assert row["fast_1"] == 0.5 and row["mean_calls"] == 2.5 and row["mean_speedup"] == pytest.approx((0.9 + 2.0) / 2)
    facts = dp.deployable_facts(dp.deployable_summary(per_task))
    assert facts["surprisal"]["fast_1_m1"] == 0.5 and facts["surprisal"]["m_reaching_fast_1_all"] == 2


def test_registered_as_a_best_of_n_analysis():
    from testtime.bon_analyses import run_analysis

    records = TASK.rename(columns={"lp_mean": "lp_mean_code"})
    table, facts = run_analysis("deployable_selection", records, {"score": "lp_mean", "span": "code"})
    assert list(table.columns) == list(dp.SUMMARY_COLUMNS) and len(table) == 3 * 4
    assert facts["score_column"] == "lp_mean_code" and set(facts["orders"]) == set(dp.ORDERS)


def test_deployable_figure_draws_from_its_table(tmp_path):
    from testtime.figures import render

    other = TASK.assign(seed=43, correct=[False, False, True, False], speedup=[0.0, 0.0, 2.0, 0.0])
    table = dp.deployable_summary(dp.deployable_per_task(pd.concat([TASK, other]), "lp_mean"))
    table.to_csv(tmp_path / "deployable.csv", index=False)
    out = tmp_path / "deployable.pdf"
    render("deployable_selection", {"table": tmp_path / "deployable.csv"}, out, {}, {"config_hash": "x"})
    assert out.read_bytes().startswith(b"%PDF")
