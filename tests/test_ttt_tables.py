"""TTT tables and the NLL probe statistics on the paper's published numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from testtime import probes, tables

# Table 6 (seed 42, Subset 1), per-task % fast_1 by step.
TABLE6 = {
    4: [9.4, 28.1, 46.9, 25.0, 21.9, 25.0],
    5: [3.1, 15.6, 6.3, 3.1, 3.1, 9.4],
    12: [100, 100, 100, 100, 100, 100],
    14: [37.5, 21.9, 18.8, 21.9, 15.6, 40.6],
    15: [37.5, 34.4, 40.6, 31.3, 40.6, 31.3],
}
TABLE6_AGG = [37.5, 40.0, 42.5, 36.3, 36.3, 41.3]


def metrics(run, agg, per_task=None, seed=42, k=32, n_tasks=5):
    out = []
    for s, v in enumerate(agg):
        pt = {str(t): {"fast_1": vals[s] / 100, "correct_rate": 1.0} for t, vals in (per_task or {}).items()}
        out.append(
            {
                "step": s,
                "rollouts_cumulative": (s + 1) * n_tasks * k,
                "agg_fast_1": v / 100,
                "correct_rate": 0.9,
                "mean_speedup": 1.0,
                "mean_reward": 0.5,
                "truncation_rate": 0.0,
                "per_task": pt,
                "update": {"skipped": s == 0},
                "provenance": {"seed": seed},
            }
        )
    return out


def test_table6_selection_reproduces_the_paper():
    agg, per_task = tables.trajectory("main-s42", metrics("main-s42", TABLE6_AGG, TABLE6)[::-1])  # any order
    assert agg["step"].tolist() == list(range(6)) and agg["rollouts"].tolist() == [160, 320, 480, 640, 800, 960]
    sel = tables.selection(agg, per_task).iloc[0]
    assert sel["boa_step"] == 2 and sel["boa_fast_1"] == pytest.approx(0.425)
    assert sel["early_stop_step"] == 2 and sel["final_fast_1"] == pytest.approx(0.413)
    assert sel["oracle_fast_1"] == pytest.approx(0.488, abs=0.001)  # the per-task oracle of §9.2


def test_three_seed_boa_summary_and_equivalent_k():
    runs = {
        "s42": (TABLE6_AGG, 42),
        "s43": ([18.1, 20.0, 16.3, 18.8, 16.9, 20.0], 43),
        "s44": ([21.9, 24.4, 21.3, 25.0, 29.4, 26.9], 44),
    }
    parts = [tables.trajectory(r, metrics(r, a, seed=s)) for r, (a, s) in runs.items()]
    agg = pd.concat([p[0] for p in parts])
    sel = tables.selection(agg, pd.concat([p[1] for p in parts]))
    assert sel["boa_step"].tolist() == [2, 1, 4]
    summary = tables.summary(sel)
    assert summary["boa_fast_1_mean"] == pytest.approx(0.306, abs=0.001)
    assert summary["boa_fast_1_std"] == pytest.approx(0.113, abs=0.001)
    table2 = pd.DataFrame({"k": [1, 2, 4, 8, 16, 32, 64], "pass_at_k": [0.533, 0.724, 0.895, 0.982, 0.999, 1.0, 1.0]})
    assert tables.equivalent_k(table2, summary["boa_fast_1_mean"]) == pytest.approx(0.48, abs=0.01)
    assert tables.equivalent_k(table2, 0.8) == pytest.approx(2 ** (1 + (0.8 - 0.724) / (0.895 - 0.724)))


def test_steps_must_be_contiguous():
    with pytest.raises(ValueError, match="not 0..S"):
        tables.trajectory("r", metrics("r", [1, 2, 3])[1:])


def test_table4_subset2():
    bon = pd.DataFrame({"problem_id": [18] * 4 + [28] * 4, "correct": [True] * 8, "speedup": [2, 2, 0.5, 0.5, 2, 0.5, 0.5, 0.5]})
    agg, per_task = tables.trajectory("s2", metrics("s2", [17.5, 16.3], {18: [50, 0], 28: [0, 25]}, k=4, n_tasks=2))
    table, per = tables.table4(bon, agg, per_task, [0, 1], k_bon=4)
    assert table["method"].tolist() == ["Best-of-N (K=4)", "BoA Step 0", "BoA Step 1"]
    assert table["agg_fast_1"].tolist() == pytest.approx([0.375, 0.175, 0.163])
    assert table["delta"].tolist() == pytest.approx([0.0, -0.2, -0.212])
    assert (
        per.set_index("problem_id").loc[18, "bon_fast_1"] == 0.5 and per.set_index("problem_id").loc[28, "step1_fast_1"] == 0.25
    )
    with pytest.raises(ValueError, match="subset2.steps"):
        tables.table4(bon, agg, per_task, [0, 3], k_bon=4)


def test_table10_patterns_on_the_paper_runs():
    parts = [
        tables.trajectory("lr1e-5", metrics("lr1e-5", TABLE6_AGG)),
        tables.trajectory("lr1e-6", metrics("lr1e-6", [49.4, 55.0, 45.6, 41.9])),
        tables.trajectory("lr3e-7", metrics("lr3e-7", [31.9, 30.0, 31.0])),
    ]
    t = tables.table10(pd.concat([p[0] for p in parts]), {"lr1e-6": 1e-6, "lr3e-7": 3e-7, "lr1e-5": 1e-5})
    assert t["lr"].tolist() == [1e-5, 1e-6, 3e-7]
    assert t["peak_step"].tolist() == [2, 1, 0]
    assert t["boa_fast_1"].tolist() == pytest.approx([0.425, 0.55, 0.319])
    assert t["pattern"].tolist() == ["Peak then regress", "Early peak, regression", "No improvement"]
    assert t["trajectory"][1] == "49.4 55.0 45.6 41.9"


def test_table12_isolated_runs():
    task14 = [37.5, 34.4, 37.5, 34.4, 56.3, 40.6]
    parts = [
        tables.trajectory(f"iso-{t}", metrics(f"iso-{t}", v, {t: v}, n_tasks=1)) for t, v in {14: task14, 12: [100] * 6}.items()
    ]
    t = tables.table12(pd.concat([p[1] for p in parts]), ["iso-12", "iso-14"])
    assert t["problem_id"].tolist() == [12, 14] and t["boa_step"].tolist() == [0, 4]
    assert t.loc[1, "step4"] == pytest.approx(0.563)
    two = tables.trajectory("two", metrics("two", [1, 1], {1: [1, 1], 2: [1, 1]}))[1]
    with pytest.raises(ValueError, match="isolated"):
        tables.table12(two, ["two"])


def test_transfer_table():
    t = tables.transfer_table(
        {
            "s1-to-s2": {
                "source": "s1",
                "source_step": 1,
                "target": "s2",
                "agg_fast_1": 0.075,
                "correct_rate": 0.5,
                "n_rollouts": 160,
            }
        },
        {"s1-to-s2": {"agg_fast_1": 0.175}},
        {"s1-to-s2": {"agg_fast_1": 0.40}},
    )
    assert t.loc[0, "delta"] == pytest.approx(-0.1) and t.loc[0, "source_own_fast_1"] == 0.40


# --------------------------------------------------------------------------------------
# NLL probe statistics
# --------------------------------------------------------------------------------------


def test_spearman_matches_scipy_and_handles_constant_input():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    rho, p, n = probes.spearman(x, y)
    ref = stats.spearmanr(x, y)
    assert (rho, p, n) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue), 50)
    assert math.isnan(probes.spearman(x, np.zeros(50))[0])
    assert math.isnan(probes.spearman([1, 2], [2, 1])[0])


def test_bottom_quartile_readings():
    nll = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    speedup = np.array([0.0, 0.0, 0.5, 1.2, 0.0, 2.0, 3.0, 4.0])
    low = speedup <= np.percentile(speedup, 25)  # the three zeros
    b1 = probes.bottom_quartile_rho(nll, speedup, "indicator")
    assert b1[0] == pytest.approx(stats.spearmanr(nll, low.astype(float)).statistic) and b1[2] == 8
    assert math.isnan(probes.bottom_quartile_rho(nll, speedup, "speedup_subset")[0])  # all zeros in the subset
    b3 = probes.bottom_quartile_rho(nll, speedup, "nll_subset")
    assert b3[2] == 2  # nll <= P25 (2.75): samples 1 and 2
    with pytest.raises(ValueError, match="probe.bottom_quartile"):
        probes.bottom_quartile_rho(nll, speedup, "B1")


def test_probe_statistics_per_step():
    keys = {"problem_id": [1] * 6, "sample_index": list(range(6))}
    ev = pd.DataFrame({**keys, "speedup": [0.0, 0.5, 1.0, 2.0, 3.0, 4.0]})
    nll = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]
    scores = pd.concat([pd.DataFrame({**keys, "step": s, "nll": np.array(nll) + s}) for s in (0, 1)])
    out = probes.probe_statistics(scores, ev, "indicator")
    assert out["step"].tolist() == [0, 1]
    assert out["rho"].tolist() == pytest.approx([-1.0, -1.0]) and out["rho_logprob"].tolist() == pytest.approx([1.0, 1.0])
    assert out["mean_nll"].tolist() == pytest.approx([3.5, 4.5])
    with pytest.raises(ValueError, match="no evaluation record"):
        probes.probe_statistics(scores.assign(sample_index=scores["sample_index"] + 10), ev)
