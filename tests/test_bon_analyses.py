"""The Best-of-N analyses of §12 and §17 (testtime.bon_analyses): the paper's published numbers
where they follow from published inputs, hand cases, and the new targets in a real Snakemake plan."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import FIGURE4_PLAN, dry_counts, job_counts, run_snakemake
from testtime import bon_analyses as ba
from testtime.selection import strategy_names

COLS = ba.columns("lp_mean", "completion")


def records(tasks: dict[int, list[tuple[bool, float, float]]], seed: int = 42, length: int | None = None) -> pd.DataFrame:
    """Joined records from {task: [(correct, speedup, lp_mean), ...]}; n_tokens = index + 5 unless fixed."""
    rows = []
    for pid, samples in tasks.items():
        for i, (ok, speed, lp) in enumerate(samples):
            rows.append(
                {
                    "seed": seed,
                    "problem_id": pid,
                    "sample_index": i,
                    "correct": ok,
                    "speedup": speed if ok else 0.0,
                    "lp_mean": lp,
                    "lp_sum": lp * 10,
                    "n_tokens": length if length is not None else i + 5,
                    "prompt_tokens": 100,
                }
            )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- Table 11 (§12.2)


def test_half_means_reproduce_the_published_q1_q2_and_q3_q4():
    published = pd.DataFrame({"quartile": ["Q1", "Q2", "Q3", "Q4"], "fast_1": [0.474, 0.810, 0.723, 0.439]})
    halves = ba.half_means(published)
    assert round(halves["q1_q2_fast_1"] * 100, 1) == 64.2
    assert round(halves["q3_q4_fast_1"] * 100, 1) == 58.1


def test_quartiles_are_equal_count_bins_with_q1_the_highest_surprisal():
    # 8 correct samples of two tasks: task 5 is the least confident (most surprising)
    recs = pd.concat(
        [
            records({5: [(True, 2.0, -3.0), (True, 0.5, -2.5), (True, 3.0, -2.0), (False, 0, -9.0)]}),
            records({12: [(True, 1.5, -1.0), (True, 1.2, -0.5), (True, 0.9, -0.2), (True, 4.0, -0.1), (True, 1.1, -1.5)]}),
        ],
        ignore_index=True,
    )
    q = ba.surprisal_quartiles(recs, COLS)
    assert list(q["quartile"]) == ["Q1", "Q2", "Q3", "Q4"]
    assert list(q["n"]) == [2, 2, 2, 2]  # the incorrect sample is left out, however surprising
    assert q.loc[0, "top_task"] == 5 and q.loc[0, "top_task_share"] == 1.0  # lp -3.0, -2.5
    assert q.loc[0, "fast_1"] == 0.5 and q.loc[0, "mean_speedup"] == 1.25
    assert q.loc[1, "composition"] == "5:0.500 12:0.500"  # lp -2.0 (task 5), -1.5 (task 12)
    assert q.loc[3, "fast_1"] == 0.5  # lp -0.2 (0.9x), -0.1 (4.0x)
    assert (q["surprisal_min"].to_numpy()[:-1] >= q["surprisal_max"].to_numpy()[1:]).all()


# ---------------------------------------------------------------- §12.1 partial correlation


def test_partial_spearman_on_a_hand_case():
    x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    y = [2.0, 1.0, 4.0, 3.0, 6.0, 5.0]
    z = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]  # x is z itself: nothing is left once z is controlled
    r, p = ba.partial_spearman(x, y, z)
    assert math.isnan(r) and math.isnan(p)
    z = [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]
    # by hand: ranks = values; residuals of x on z and of y on z, then their Pearson r
    rz = np.array(z)
    ex = np.array(x) - np.polyval(np.polyfit(rz, x, 1), rz)
    ey = np.array(y) - np.polyval(np.polyfit(rz, y, 1), rz)
    expected = float(np.corrcoef(ex, ey)[0, 1])
    r, p = ba.partial_spearman(x, y, z)
    assert r == pytest.approx(expected, abs=1e-12)
    t = expected * math.sqrt(3 / (1 - expected**2))  # n - 3 = 3 degrees of freedom
    assert p == pytest.approx(2 * stats.t.sf(abs(t), 3), rel=1e-12)


def test_partial_spearman_equals_the_first_order_formula_on_spearman_correlations():
    rng = np.random.default_rng(1)
    z = rng.normal(size=200)
    x = z + rng.normal(size=200)
    y = -z + 0.5 * x + rng.normal(size=200)
    rho = lambda a, b: stats.spearmanr(a, b).statistic  # noqa: E731
    r, _ = ba.partial_spearman(x, y, z)
    assert r == pytest.approx(ba.first_order_partial(rho(x, y), rho(x, z), rho(y, z)), abs=1e-12)


def test_published_triplet_is_inconsistent_under_the_first_order_formula():
    # D7: from rho = -0.047 and rho(length, speedup) = -0.039, no |rho(logprob, length)| < 1
    # reaches the published partial +0.003: every partial on (-1, 1) is negative
    grid = np.linspace(-0.999, 0.999, 2001)
    partials = [ba.first_order_partial(-0.047, r_xz, -0.039) for r_xz in grid]
    assert max(partials) < 0 < 0.003


def test_length_control_reports_raw_partial_and_residualised():
    rng = np.random.default_rng(0)
    n = 40
    length = rng.integers(5, 30, n)
    lp = -0.05 * length + rng.normal(0, 0.1, n)
    speed = 1 + 0.1 * length + rng.normal(0, 0.2, n)
    recs = pd.DataFrame(
        {
            "seed": 42,
            "problem_id": 1,
            "sample_index": range(n),
            "correct": True,
            "speedup": speed,
            "lp_mean": lp,
            "n_tokens": length,
        }
    )
    out = ba.length_control(recs, COLS)
    assert out["n"] == n and out["partial_df"] == n - 3
    assert out["rho_score_speedup"] == pytest.approx(stats.spearmanr(lp, speed).statistic)
    assert out["rho_length_speedup"] > 0.5 and out["rho_score_speedup"] < -0.3  # both driven by length
    assert abs(out["partial_rho"]) < abs(out["rho_score_speedup"])  # controlling length removes most of it
    assert -1 <= out["residualised_rho"] <= 1


# ---------------------------------------------------------------- Table 8, full L1, head-to-head


def test_table8_mean_reproduces_the_published_seed_42_oracle_mean():
    published = {4: 859.8, 5: 191.7, 12: 23.8, 14: 15.6, 15: 13.6}
    recs = records({pid: [(True, s, -1.0), (True, 1.0, -2.0), (False, 0, -3.0)] for pid, s in published.items()})
    t8 = ba.table8(recs)
    tasks = t8[t8["problem_id"] >= 0].set_index("problem_id")
    assert tasks["oracle_speedup"].to_dict() == published
    mean = t8.loc[t8["problem_id"] == -1, "oracle_speedup"].item()
    assert round(mean, 1) == 220.9
    assert (tasks["correct_rate"] == 2 / 3).all() and (tasks["sample_fast_1"] == 1 / 3).all()


def test_full_l1_reproduces_18_of_20_with_tasks_82_and_95_failing():
    ids = [4, 5, 12, 14, 15, 18, 28, 29, 30, 32, 36, 55, 65, 70, 76, 82, 87, 89, 95, 98]
    tasks = {pid: [(True, 1.5, -1.0), (False, 0, -2.0)] for pid in ids}
    tasks[82] = [(True, 1.0, -1.0), (True, 0.8, -2.0)]  # 100% correct, at most 1.00x
    tasks[95] = [(False, 0, -1.0), (False, 0, -2.0)]  # 0% correct
    out = ba.full_l1(records(tasks))
    assert (out["n_success"], out["n_tasks"], out["task_success"]) == (18, 20, 0.9)
    assert [(f["problem_id"], f["correct_rate"], f["max_speedup"]) for f in out["failures"]] == [(82, 1.0, 1.0), (95, 0.0, 0.0)]


def test_head_to_head_counts_by_variance_group():
    # the published layout: 9 high-variance tasks (one of them, like Task 95, never correct) and
    # 11 low-variance ones; surprisal wins 6/8 and 3/11
    tasks = {}
    for i in range(9):
        win = i < 6
        lp_correct = [-3.0, -0.5]  # spread > 1: high variance
        speeds = [2.0, 1.0] if win else [1.0, 2.0]
        tasks[i] = [(i != 8, speeds[0], lp_correct[0]), (i != 8, speeds[1], lp_correct[1]), (False, 0, 1.0)]
    for i in range(9, 20):
        win = i < 12
        speeds = [2.0, 1.0] if win else [1.0, 1.0]  # a tie is no win
        tasks[i] = [(True, speeds[0], -1.01), (True, speeds[1], -1.0), (False, 0, -1.02)]
    variance = ba.logprob_variance(records(tasks), COLS)
    counts = ba.head_to_head(variance)
    assert counts["n_high"] == 9 and counts["n_low"] == 11 and counts["n_valid"] == 19
    assert (counts["high_surprisal_wins"], counts["high_valid"]) == (6, 8)
    assert (counts["low_surprisal_wins"], counts["low_valid"]) == (3, 11)
    assert counts["n_very_low"] == 11
    # the std is taken over all samples (the never-correct task has one too), population by default
    row = variance.set_index("problem_id").loc[8]
    assert row["lp_std"] == pytest.approx(np.std([-3.0, -0.5, 1.0])) and not row["valid"]
    assert math.isnan(row["surprisal_wins"])


# ---------------------------------------------------------------- Table 1, Table 7


def test_table1_has_every_strategy_per_task_with_its_cost():
    recs = records({4: [(True, 3.0, -2.0), (True, 0.5, -0.1), (False, 0, -5.0)], 5: [(False, 0, -1.0)]})
    from testtime.selection import selection_table

    t1 = ba.table1(selection_table(recs))
    assert list(t1.columns) == list(ba.TABLE1_COLUMNS)
    assert len(t1) == 2 * len(strategy_names())
    task4 = t1[t1["problem_id"] == 4].set_index("strategy")
    assert task4.loc["surprisal-guided", "speedup"] == 3.0 and task4.loc["confidence-guided", "speedup"] == 0.5
    assert task4.loc["surprisal-guided-top3", "cost"] == "3 evals" and task4.loc["best-correct", "cost"] == "post-hoc"
    assert (t1.loc[t1["problem_id"] == 5, "fast_1"] == 0).all()


def test_table7_reproduces_the_published_rows_and_ratios():
    # Table 7: Best-of-N 320 rollouts and 313K tokens a seed over 42 min; RLVR Base 5 rollouts,
    # 4.0K tokens; BoA Step 1 also 320 rollouts and 313K tokens. Two seeds, each spending that.
    bon = ba.Usage(
        rollouts=640, prompt_tokens=2 * 200_000, completion_tokens=2 * 113_000, wall_s=2 * 42 * 60, cpu_s=0, gpu_s=2 * 42 * 60 * 4
    )
    base = ba.Usage(rollouts=10, prompt_tokens=2 * 3_000, completion_tokens=2 * 1_000, wall_s=0, cpu_s=0, gpu_s=0)
    boa = ba.Usage(rollouts=960, prompt_tokens=3 * 200_000, completion_tokens=3 * 113_000, wall_s=3 * 60 * 60, cpu_s=0, gpu_s=0)
    t7 = ba.table7(
        [
            ba.compute_row("RLVR Base (K=1)", base, 2),
            ba.compute_row("Best-of-N (K=64)", bon, 2),
            ba.compute_row("BoA Step 1", boa, 3),
        ]
    ).set_index("method")
    assert list(t7["rollouts"]) == [5, 320, 320]
    assert list(t7["total_tokens"]) == [4_000, 313_000, 313_000]
    assert t7.loc["Best-of-N (K=64)", "wall_min"] == 42 and t7.loc["BoA Step 1", "wall_min"] == 60
    assert t7.loc["Best-of-N (K=64)", "gpu_hours"] == pytest.approx(42 / 60 * 4)
    assert math.isnan(t7.loc["RLVR Base (K=1)", "wall_min"])
    assert t7.loc["RLVR Base (K=1)", "tokens_vs_best_of_n"] == pytest.approx(4.0 / 313)
    assert t7.loc["BoA Step 1", "tokens_vs_best_of_n"] == 1.0


def test_table7_sdpo_row_reproduces_the_published_tokens():
    # Table 7's SDPO (feedback): 320 rollouts, 314K student + 338K teacher = 652K tokens a seed,
    # 2.08x Best-of-N's 313K
    bon = ba.Usage(rollouts=320, prompt_tokens=200_000, completion_tokens=113_000, wall_s=0, cpu_s=0, gpu_s=0)
    sdpo = ba.Usage(rollouts=3 * 320, prompt_tokens=3 * 200_000, completion_tokens=3 * 114_000, wall_s=0, cpu_s=0, gpu_s=0)
    t7 = ba.table7(
        [ba.compute_row("Best-of-N (K=64)", bon, 1), ba.compute_row("SDPO (feedback)", sdpo, 3, teacher_tokens=3 * 338_000)]
    ).set_index("method")
    row = t7.loc["SDPO (feedback)"]
    assert (row["rollouts"], row["student_tokens"], row["teacher_tokens"], row["total_tokens"]) == (
        320,
        314_000,
        338_000,
        652_000,
    )
    assert row["tokens_vs_best_of_n"] == pytest.approx(2.08, abs=0.005)


def test_sdpo_teacher_tokens_actual_and_the_reference_convention():
    # one run, steps 0 and 1: step 1's teacher pass scored step 0's 4 rollouts (400 prompt tokens,
    # their 40 completion tokens); the final step's 4 rollouts (48 completion tokens) had none.
    steps = [
        {"metrics": {"step": 0}, "rollouts": 4, "completion_tokens": 40},
        {
            "metrics": {"step": 1, "update": {"teacher_prompt_tokens": 400, "teacher_completion_tokens": 40}},
            "rollouts": 4,
            "completion_tokens": 48,
        },
    ]
    assert ba.sdpo_teacher_tokens([steps], "actual") == (440, False)
    # D15: the final step's rollouts counted too, at the run's 100 teacher-prompt tokens a rollout
    assert ba.sdpo_teacher_tokens([steps], "reference") == (440 + 48 + 400, True)
    assert ba.sdpo_teacher_tokens([steps, steps], "actual") == (880, False)
    with pytest.raises(ValueError, match="analyses.sdpo_teacher_tokens"):
        ba.sdpo_teacher_tokens([steps], "paper")


def test_table7_usage_counts_tokens_and_benchmark_seconds():
    recs = records({4: [(True, 1.0, -1.0)] * 3, 5: [(True, 1.0, -1.0)] * 3}, length=7)
    bench = pd.DataFrame({"s": [10.0], "h:m:s": ["0:00:10"], "cpu_time": [4.0]})
    job = ba.benchmark_seconds(bench, gpus=2)
    assert job == (10.0, 4.0, 20.0)
    usage = ba.sample_usage(recs, [job, job])
    assert (usage.rollouts, usage.prompt_tokens, usage.completion_tokens) == (6, 600, 42)
    assert (usage.wall_s, usage.cpu_s, usage.gpu_s) == (20.0, 8.0, 40.0)
    assert len(ba.first_per_task(recs)) == 2


# ---------------------------------------------------------------- the workflow plans the new targets

NEW = ["table1.csv", "table7.csv", "table8.csv", "table11.csv", "length_control.json"]


@pytest.mark.slow
def test_new_targets_plan_on_the_embedded_default_and_figure_4_is_unchanged(clean_repo):
    out = run_snakemake(["analyses_all", "-n"], cwd=clean_repo, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = job_counts(out.stdout)
    for rule in ("table1", "table7", "table8", "table11", "length_control", "logprob_variance", "full_l1", "fig1", "fig7"):
        assert counts.get(rule) == 1, (rule, counts)
    # Best-of-N on run.suite (2 seeds), on BoN-L1's suite (one seed) and on Subset 2's suite (Figure
    # 7's Subset-2 points, through Table 4: one seed)
    assert counts["sample"] == 4
    assert "results/tables/smollm2-135m/bundled-all/logprob_variance.csv" in out.stdout
    fig4 = job_counts(run_snakemake(["figures/fig4.pdf", "-n"], cwd=clean_repo, timeout=300).stdout)
    assert fig4 == FIGURE4_PLAN


@pytest.mark.slow
def test_table7_plans_the_sdpo_feedback_runs_and_names_a_missing_variant(clean_repo):
    target = ["results/tables/smollm2-135m/bundled/table7.csv", "--configfile", "config/config.yaml"]
    counts = dry_counts(clean_repo, target)
    assert counts["sdpo_step"] == 4  # feedback only: seeds 42 and 43, steps 0 and 1
    counts = dry_counts(clean_repo, target, "analyses:\n  compute_methods: [best_of_n]\n")
    assert "sdpo_step" not in counts and "ttt_step" not in counts
    (clean_repo / "no_feedback.yaml").write_text("sdpo:\n  variants: [prompt_only]\n")
    out = run_snakemake(
        ["-n", "results/tables/smollm2-135m/bundled/table7.csv", "--configfile", "config/config.yaml", "no_feedback.yaml"],
        cwd=clean_repo,
        timeout=300,
    )
    assert out.returncode != 0 and "add it to sdpo.variants" in out.stdout + out.stderr


@pytest.mark.slow
def test_paper_config_plans_the_twenty_task_suite(clean_repo):
    out = run_snakemake(
        ["results/tables/gpt-oss-120b-rlvr/kernelbench-l1-v01-all/full_l1.json", "-n", "--configfile", "config/paper.yaml"],
        cwd=clean_repo,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "results/samples/gpt-oss-120b-rlvr/kernelbench-l1-v01-all/seed42.parquet" in out.stdout
    assert "seed43.parquet" not in out.stdout


@pytest.mark.slow
def test_new_tables_build_on_the_embedded_default(tmp_path):
    """A real build in a fresh copy: Figure 4's records, then the analyses that reuse them (Table 7
    without the TTT row, which would run the TTT steps)."""
    import json

    from conftest import copy_repo
    from testtime.records import read_parquet

    work = copy_repo(tmp_path / "repo")
    (work / "no_ttt.yaml").write_text("analyses:\n  compute_methods: [rlvr_base, best_of_n]\n")
    tables = work / "results/tables/smollm2-135m/bundled"
    targets = [f"results/tables/smollm2-135m/bundled/{name}" for name in NEW]
    out = run_snakemake([*targets, "-c2", "--configfile", "config/config.yaml", "no_ttt.yaml"], cwd=work, timeout=1200)
    assert out.returncode == 0, out.stderr[-4000:]
    samples = pd.concat([read_parquet(p) for p in sorted((work / "results/samples/smollm2-135m/bundled").glob("seed*.parquet"))])
    evals = pd.concat(
        [read_parquet(p) for p in sorted((work / "results/evaluations/smollm2-135m/bundled").glob("seed*.parquet"))]
    )
    t1 = pd.read_csv(tables / "table1.csv")
    t8 = pd.read_csv(tables / "table8.csv")
    # Table 8's oracle is Table 1's best-correct pick, task by task
    best = t1[t1["strategy"] == "best-correct"].set_index(["seed", "problem_id"])["speedup"]
    assert np.allclose(t8[t8["problem_id"] >= 0].set_index(["seed", "problem_id"])["oracle_speedup"].loc[best.index], best)
    # Table 11 covers every correct sample with a finite code-span score
    joined = samples.merge(evals, on=["seed", "problem_id", "sample_index"])
    n_correct = int((joined["correct"] & np.isfinite(joined["lp_mean_code"])).sum())
    assert pd.read_csv(tables / "table11.csv")["n"].sum() == n_correct
    control = json.loads((tables / "length_control.json").read_text())
    assert control["n"] == n_correct and control["score_column"] == "lp_mean_code"
    # Table 7: the records' tokens and the jobs' benchmark seconds, per seed
    t7 = pd.read_csv(tables / "table7.csv").set_index("method")
    bon = t7.loc["Best-of-N (K=64)"]
    assert bon["rollouts"] == len(samples) / 2
    assert bon["total_tokens"] == (samples["prompt_tokens"].sum() + samples["n_tokens"].sum()) / 2
    benches = [*(work / "results/benchmarks/sample").rglob("*.tsv"), *(work / "results/benchmarks/evaluate").rglob("*.tsv")]
    wall = sum(pd.read_csv(p, sep="\t")["s"].mean() for p in benches)
    assert bon["wall_min"] == pytest.approx(wall / 2 / 60) and bon["wall_min"] > 0
    for name in NEW:
        prov = json.loads((tables / f"{name}.provenance.json").read_text())
        assert prov["config_hash"] and prov["model"] == "smollm2-135m"


# ---------------------------------------------------------------- Figures 1 and 7


def test_regime_points_follow_d17():
    per_task = pd.DataFrame(
        {
            "run": ["main-s42"] * 6 + ["other"] * 2,
            "step": [0, 0, 1, 1, 2, 2, 0, 1],
            "problem_id": [4, 5, 4, 5, 4, 5, 4, 4],
            "fast_1": [0.094, 0.031, 0.281, 0.156, 0.469, 0.063, 0.9, 0.9],
        }
    )
    selection = pd.DataFrame({"run": ["main-s42", "other"], "boa_step": [2, 0]})
    table8 = pd.DataFrame({"seed": [42, 42, 42, 43], "problem_id": [4, 5, -1, 4], "sample_fast_1": [0.3, 0.1, 0.2, 0.9]})
    from testtime.figures import regime_points

    points = regime_points(per_task, selection, table8, "main-s42", 42)
    assert list(points["problem_id"]) == [4, 5]
    assert points["coverage"].tolist() == pytest.approx([9.4, 3.1])
    assert points["benefit"].tolist() == pytest.approx([16.9, -3.7])  # BoA step 2 minus Best-of-N sample fast_1
    # Subset 2's points: the same rule against Table 4's per-task Best-of-N fast_1
    from testtime.figures import regime_points_against

    s2 = regime_points_against(per_task, selection, pd.Series({4: 0.5, 9: 0.1}), "main-s42")
    assert list(s2["problem_id"]) == [4] and s2["benefit"].tolist() == pytest.approx([-3.1])


def test_figures_1_and_7_draw_from_the_published_values(tmp_path):
    from testtime.figures import fig1, fig7

    table2 = pd.DataFrame(
        {
            "k": [1, 2, 4, 8, 16, 32, 64],
            "pass_at_k": [0.533, 0.724, 0.895, 0.982, 0.999, 1, 1],
            "std": [0.032, 0.041, 0.028, 0.008, 0.001, 0, 0],
        }
    )
    table3 = pd.DataFrame(
        {
            "strategy": list(strategy_names()),
            "fast_1": [1.0, 1.0, 0.8, 0.592, 0.5],
            "mean_speedup": [226.9, 139.0, 41.2, 30.0, 11.6],
        }
    )
    fig1(table2, table3, {"boa_fast_1_mean": 0.306}, tmp_path / "fig1.pdf", {}, {"config_hash": "x"})
    assert (tmp_path / "fig1.pdf").read_bytes().startswith(b"%PDF")
    per_task = pd.DataFrame({"run": "r", "step": [0, 0, 1, 1], "problem_id": [4, 5, 4, 5], "fast_1": [0.1, 0.4, 0.2, 0.5]})
    table8 = pd.DataFrame({"seed": 42, "problem_id": [4, 5], "sample_fast_1": [0.3, 0.3]})
    style = {"run": "r", "seed": 42, "threshold": 30}
    fig7(
        per_task,
        pd.DataFrame({"run": ["r"], "boa_step": [1]}),
        table8,
        None,
        None,
        None,
        tmp_path / "fig7.pdf",
        style,
        {"config_hash": "x"},
    )
    assert (tmp_path / "fig7.pdf").stat().st_size > 1000
    # with Subset 2: the render path reads the optional tables by name
    from testtime.figures import render

    files = {
        "per_task": per_task,
        "selection": pd.DataFrame({"run": ["r"], "boa_step": [1]}),
        "table8": table8,
        "s2_trajectory": per_task.assign(run="s2", problem_id=per_task["problem_id"] + 10),
        "s2_selection": pd.DataFrame({"run": ["s2"], "boa_step": [0]}),
        "s2_tasks": pd.DataFrame({"problem_id": [14, 15], "bon_fast_1": [0.5, 0.2]}),
    }
    for name, frame in files.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    render(
        "fig7",
        {n: tmp_path / f"{n}.csv" for n in files},
        tmp_path / "fig7s2.pdf",
        {**style, "subset2_run": "s2"},
        {"config_hash": "x"},
    )
    assert (tmp_path / "fig7s2.pdf").stat().st_size > (tmp_path / "fig7.pdf").stat().st_size
    with pytest.raises(ValueError, match="table8"):
        render("fig7", {n: tmp_path / f"{n}.csv" for n in files if n != "table8"}, tmp_path / "x.pdf", style, {})


@pytest.mark.parametrize(
    "style",
    [{}, {"error_bars": "wilson95"}, {"error_bars": "wilson95", "log_speedup": False}],
    ids=["paper", "ci-log", "ci-linear"],
)
def test_figure_4_draws_in_each_style(tmp_path, style):
    """Figure 4 with the paper's std bars, and with Table 3's intervals on both panels (the
    mean-speedup interval, a bootstrap over the task-seed picks, on a log or a linear axis)."""
    from testtime.figures import fig4
    from testtime.selection import strategy_summary

    rows = []
    for seed in (42, 43):
        for pid, speeds in enumerate([(3.0, 1.0, 2.0), (1.8, 1.1, 1.0), (1.02, 1.02, 1.02)]):
            for strategy, speed in zip(("best-correct", "surprisal-guided", "random-correct"), speeds):
                rows.append({"seed": seed, "problem_id": pid, "strategy": strategy, "speedup": speed, "fast_1": speed > 1.0})
    summary = strategy_summary(pd.DataFrame(rows))
    assert (summary["mean_speedup_ci_low"] < summary["mean_speedup_ci_high"]).all()
    fig4(summary, tmp_path / "fig4.pdf", style, {"config_hash": "x"})
    assert (tmp_path / "fig4.pdf").read_bytes().startswith(b"%PDF")
