"""The paper's open questions (§6.6, issue 12 item 4) as experiments: the deployable surprisal
selection (pure functions, by hand), the entropy bonus and KL penalty of the policy-gradient
update, the fast_1 reward, their tables, and the workflow's plan."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from conftest import FIGURE4_PLAN, batch_of, dry_counts, lora_state, run_snakemake
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
        for order, strategy in (
            ("surprisal", "surprisal-guided"),
            ("confidence", "confidence-guided"),
            ("random", "random-correct"),
        ):
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


# ---------------------------------------------------------------- the update's regularisers (open question 1)


def test_entropy_and_kl_sums_by_hand():
    import torch

    from testtime.pg.policy import entropy_sum, kl_to_start_sum

    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    weights = torch.tensor([1.0, 2.0])  # the second row stands for two copies of one completion
    entropy = torch.tensor([[0.5, 0.25, 9.0], [1.0, 9.0, 9.0]])  # 9: padding, masked out
    assert float(entropy_sum(entropy, mask, weights)) == pytest.approx(0.5 + 0.25 + 2 * 1.0)
    lp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.25, 0.5, 0.5]]))
    start = torch.log(torch.tensor([[0.25, 0.5, 0.1], [0.25, 0.1, 0.1]]))
    k3 = 0.5 - math.log(0.5) - 1  # exp(d) - d - 1 with d = log(0.25 / 0.5)
    assert float(kl_to_start_sum(lp, start, mask, weights)) == pytest.approx(k3)  # agreeing tokens add 0


def test_entropy_bonus_gradient_raises_the_entropy_on_a_tiny_policy():
    import torch

    from testtime.pg.policy import entropy_sum

    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.2, 3.0]]], requires_grad=True)
    mask, weights = torch.ones(1, 2), torch.ones(1)

    def entropy(x):
        log_p = torch.log_softmax(x, -1)
        return -(log_p.exp() * log_p).sum(-1)

    before = float(entropy(logits.detach()).sum())
    loss = -0.5 * entropy_sum(entropy(logits), mask, weights)  # the bonus term of the loss
    loss.backward()
    with torch.no_grad():
        stepped = logits - 0.1 * logits.grad
    assert float(entropy(stepped).sum()) > before


def test_kl_penalty_gradient_pulls_the_token_log_prob_toward_the_start():
    import torch

    from testtime.pg.policy import kl_to_start_sum

    mask, weights = torch.ones(1, 2), torch.ones(1)
    start = torch.log(torch.tensor([[0.2, 0.6]]))
    for lp0 in ([0.5, 0.3], [0.1, 0.9]):  # above and below the start's log-probs
        lp = torch.log(torch.tensor([lp0])).requires_grad_(True)
        (0.5 * kl_to_start_sum(lp, start, mask, weights)).backward()
        with torch.no_grad():
            stepped = lp - 0.1 * lp.grad
        assert ((stepped - start).abs() < (lp - start).abs()).all()
    lp = start.clone().requires_grad_(True)
    kl_to_start_sum(lp, start, mask, weights).backward()
    assert float(lp.grad.abs().max()) == 0.0  # at the start (step 1 of a fresh LoRA): no pull


def batch_entropy_and_kl(policy, batch):
    """Token-summed entropy under the policy and k3 KL to its LoRA-disabled start, on the batch."""
    import torch

    from testtime.pg.policy import kl_to_start_sum
    from testtime.scoring import completion_logprobs

    g = batch[0]
    with torch.no_grad():
        lp, mask, entropy = completion_logprobs(policy.model, g["prompt_ids"], g["completions"], policy.pad_id, with_entropy=True)
        with policy.peft.disable_adapter():
            start, _ = completion_logprobs(policy.model, g["prompt_ids"], g["completions"], policy.pad_id)
    ones = torch.ones(len(g["completions"]))
    return float((entropy * mask).sum()), float(kl_to_start_sum(lp, start, mask, ones))


def test_zero_coefficients_are_the_paper_update_exactly(make_lora_policy, drawn):
    adv = [1.5, -0.5, -0.5, -0.5]
    paper = make_lora_policy()
    zero = make_lora_policy({"entropy_bonus": 0.0, "kl_to_start": 0.0})
    a, b = paper.update(batch_of(paper, drawn, adv)), zero.update(batch_of(zero, drawn, adv))
    assert a == b  # loss, gradient norm, KL diagnostics: bit for bit, and no regulariser entries
    sa, sb = lora_state(paper), lora_state(zero)
    assert all(torch_equal(sa[n], sb[n]) for n in sa)


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


def test_entropy_bonus_raises_the_policy_entropy(make_lora_policy, drawn):
    policy = make_lora_policy({"entropy_bonus": 1.0})
    batch = batch_of(policy, drawn, [0.0, 0.0, 0.0, 0.0])  # no reward signal: the bonus alone
    before, _ = batch_entropy_and_kl(policy, batch)
    stats = policy.update(batch)
    after, _ = batch_entropy_and_kl(policy, batch)
    n_tokens = sum(len(c) for c in batch[0]["completions"])  # copies counted
    assert stats["entropy_bonus"] == 1.0 and stats["entropy_mean"] == pytest.approx(before / n_tokens, rel=1e-4)
    assert after > before


def test_kl_penalty_keeps_the_policy_closer_to_its_start(make_lora_policy, drawn):
    """Two identical policies take one update away from the start; the second update (no reward
    signal) with the KL penalty ends closer to the start than without it."""
    ends = {}
    for coef in (0.0, 10.0):
        policy = make_lora_policy()
        policy.update(batch_of(policy, drawn, [1.5, -0.5, -0.5, -0.5]))
        _, moved = batch_entropy_and_kl(policy, batch_of(policy, drawn, [0.0] * 4))
        assert moved > 0
        policy.run["kl_to_start"] = coef
        stats = policy.update(batch_of(policy, drawn, [0.0] * 4))
        assert ("kl_to_start_mean" in stats) is (coef > 0)
        if coef:
            n_tokens = sum(len(c.token_ids) for c in drawn)
            assert stats["kl_to_start_mean"] == pytest.approx(moved / n_tokens, rel=1e-3)
        ends[coef] = batch_entropy_and_kl(policy, batch_of(policy, drawn, [0.0] * 4))[1]
    assert ends[10.0] < ends[0.0]


# ---------------------------------------------------------------- the sparse reward (open question 3)


def test_sparse_reward_is_fast_1_and_keeps_the_normalised_history():
    from testtime.pg.rewards import score_step, sparse_rewards

    assert sparse_rewards([True, True, False, True], [1.5, 0.9, 3.0, 1.0]).tolist() == [1.0, 0.0, 0.0, 0.0]
    evals = pd.DataFrame(
        {
            "problem_id": [1, 1, 1, 2],
            "sample_index": [0, 1, 2, 0],
            "correct": [True, True, False, True],
            "speedup": [2.0, 0.5, 0.0, 1.2],
        }
    )
    run = {"reward_window": 32, "reward_bonus": 0.0, "advantage": "global"}
    paper, hist_paper = score_step(evals, evals, {}, run)
    sparse, hist_sparse = score_step(evals, evals, {}, {**run, "reward": "fast_1"})
    assert paper["reward"].tolist() == [2.0, 0.25, 0.0, 1.2]  # 0.5 / median(2.0)
    assert sparse["reward"].tolist() == [1.0, 0.0, 0.0, 1.0]
    assert hist_sparse == hist_paper and sparse["reward_baseline"].tolist() == paper["reward_baseline"].tolist()
    r = np.array([1.0, 0.0, 0.0, 1.0])
    assert sparse["advantage"].to_numpy() == pytest.approx((r - r.mean()) / r.std(ddof=1))
    with pytest.raises(ValueError, match="ttt.reward"):
        score_step(evals, evals, {}, {**run, "reward": "binary"})


# ---------------------------------------------------------------- run settings and the comparison tables


def embedded_config():
    import yaml

    from conftest import ROOT
    from testtime.config import validate

    return validate(yaml.safe_load((ROOT / "config" / "config.yaml").read_text()))


def test_switches_join_a_run_only_when_they_differ_from_the_paper():
    from testtime.runs import resolve_run, step_settings

    config = embedded_config()
    for key in ("entropy_bonus", "kl_to_start", "reward"):
        assert key not in resolve_run(config, "main-s42")  # the paper's runs keep their params
    assert resolve_run(config, "entropy-s42")["entropy_bonus"] == 0.01
    assert "entropy_bonus" not in step_settings(resolve_run(config, "entropy-s42"), 0)  # step 0 never updates
    assert "kl_to_start" not in step_settings(resolve_run(config, "kl-s42"), 0)
    assert step_settings(resolve_run(config, "fast1-s42"), 0)["reward"] == "fast_1"  # step 0's rewards use it
    config["ttt"]["runs"]["kl-s42"]["kl_to_start"] = 0.0
    assert "kl_to_start" not in resolve_run(config, "kl-s42")


def test_runs_with_the_same_step0_settings_share_the_first_ones_step0():
    from testtime.runs import step0_owners

    config = embedded_config()
    # the lr sweep and the remedies read nothing at step 0 that main-s42 does not; fast1-s42's
    # step-0 rewards differ, other seeds, suites and task lists differ
    assert step0_owners(config) == {r: "main-s42" for r in ("lr-1e-05", "lr-3e-06", "entropy-s42", "kl-s42")}
    config["ttt"]["runs"]["lr-3e-06"]["k"] = 4  # a step-0 setting: its own step 0
    assert "lr-3e-06" not in step0_owners(config)
    config["ttt"]["share_step0"] = False
    assert step0_owners(config) == {}


def test_share_step0_copies_under_the_new_name(tmp_path):
    import json
    from pathlib import Path

    from testtime import provenance
    from testtime.records import read_parquet, read_provenance, write_parquet
    from testtime.ttt.share import STEP_FILES, share_step0

    src = {k: str(tmp_path / "a" / k) for k in STEP_FILES}
    dst = {k: str(tmp_path / "b" / k) for k in STEP_FILES}
    Path(src["adapter"]).mkdir(parents=True)
    Path(dst["adapter"]).parent.mkdir(parents=True)
    (Path(src["adapter"]) / "adapter_model.safetensors").write_bytes(b"weights")
    Path(src["optimizer"]).write_bytes(b"adam")
    prov = {"run": "main-s42", "config_hash": "h"}
    for key in ("rollouts", "evaluations"):
        write_parquet(pd.DataFrame({"run": ["main-s42"] * 2, "step": [0, 0], "x": [1, 2]}), src[key], prov)
    provenance.write_json_atomic(src["metrics"], {"run": "main-s42", "step": 0, "provenance": prov})
    share_step0(src, dst, "lr-1e-05", "main-s42")
    assert (Path(dst["adapter"]) / "adapter_model.safetensors").read_bytes() == b"weights"
    assert Path(dst["optimizer"]).read_bytes() == b"adam"
    for key in ("rollouts", "evaluations"):
        frame = read_parquet(dst[key])
        assert frame["run"].tolist() == ["lr-1e-05"] * 2 and frame["x"].tolist() == [1, 2]
        assert read_provenance(dst[key]) == {"run": "lr-1e-05", "config_hash": "h", "step0_of": "main-s42"}
    metrics = json.loads(Path(dst["metrics"]).read_text())
    assert metrics["run"] == "lr-1e-05" and metrics["provenance"]["step0_of"] == "main-s42"


def step_metrics(run, step, fast, switches=None, update=None):
    return {
        "run": run,
        "step": step,
        "rollouts_cumulative": 8 * (step + 1),
        "agg_fast_1": fast,
        "correct_rate": fast + 0.1,
        "mean_speedup": 1.0,
        "mean_reward": 0.5,
        "truncation_rate": 0.0,
        "update": update or {"skipped": step == 0},
        "per_task": {"1": {"fast_1": fast, "correct_rate": fast + 0.1}},
        "provenance": {"seed": 42, "suite": "bundled", "config_hash": f"h{run}{step}", "config": {"ttt": switches or {}}},
    }


def test_compare_runs_lines_up_variants_with_their_probe():
    from testtime.tables import build_ttt_table

    metrics = [step_metrics("main", s, f) for s, f in enumerate([0.2, 0.4, 0.3])]
    metrics += [
        step_metrics("ent", s, f, {"entropy_bonus": 0.01}, {"entropy_mean": 1.5} if s else None)
        for s, f in enumerate([0.2, 0.3, 0.5])
    ]
    probes = {
        run: pd.DataFrame(
            {
                "step": [0, 1, 2],
                "rho": [-0.1] * 3,
                "p": [0.5] * 3,
                "rho_bottom_quartile": [0.0, -0.1, -0.2],
                "p_bottom_quartile": [0.5] * 3,
                "mean_nll": nll,
            }
        )
        for run, nll in (("main", [6.7, 6.6, 6.9]), ("ent", [6.7, 6.7, 6.7]))
    }
    frames, facts, upstream, runs = build_ttt_table("remedies", metrics, {"runs": ["main", "ent"], "patience": 1}, probes=probes)
    t = frames["table"]
    assert t["run"].tolist() == ["main"] * 3 + ["ent"] * 3
    assert t["variant"].tolist() == ["paper"] * 3 + ["entropy_bonus 0.01"] * 3
    assert t.loc[t["boa"], ["run", "step"]].values.tolist() == [["main", 1], ["ent", 2]]
    assert t["entropy_mean"].isna().tolist() == [True] * 4 + [False, False]
    assert t["mean_nll"].tolist() == [6.7, 6.6, 6.9, 6.7, 6.7, 6.7]
    assert facts["runs"]["main"]["boa_step"] == 1 and facts["runs"]["ent"]["entropy_bonus"] == 0.01
    assert facts["runs"]["main"]["mean_nll_last"] == 6.9
    sparse, _, _, _ = build_ttt_table("reward_sparsification", metrics, {"runs": ["ent", "main"], "patience": 1})
    assert sparse["table"]["run"].iloc[0] == "ent" and "mean_nll" not in sparse["table"]
    with pytest.raises(ValueError, match="covers steps"):
        build_ttt_table("remedies", metrics, {"runs": ["main"], "patience": 1}, probes={"main": probes["main"].iloc[:2]})


@pytest.mark.parametrize("figure", ["ttt_remedies", "reward_sparsification"])
def test_comparison_figures_draw_from_their_table(tmp_path, figure):
    from testtime.figures import render
    from testtime.tables import build_ttt_table

    metrics = [step_metrics(r, s, f) for r in ("main", "kl") for s, f in enumerate([0.2, 0.4, 0.3])]
    probes = {
        r: pd.DataFrame(
            {"step": [0, 1, 2], "rho": 0.0, "p": 1.0, "rho_bottom_quartile": 0.0, "p_bottom_quartile": 1.0, "mean_nll": 6.0}
        )
        for r in ("main", "kl")
    }
    frames, *_ = build_ttt_table("remedies", metrics, {"runs": ["main", "kl"], "patience": 1}, probes=probes)
    frames["table"].to_csv(tmp_path / "t.csv", index=False)
    render(figure, {"table": tmp_path / "t.csv"}, tmp_path / "f.pdf", {}, {"config_hash": "x"})
    assert (tmp_path / "f.pdf").read_bytes().startswith(b"%PDF")


# ---------------------------------------------------------------- the workflow's plan


NEW_RULES = (
    "deployable_selection",
    "deployable_selection_figure",
    "ttt_remedies",
    "ttt_remedies_figure",
    "reward_sparsification",
    "reward_sparsification_figure",
)


@pytest.mark.slow
def test_open_question_targets_plan_in_all_and_figure_4_is_unchanged(clean_repo):
    out = run_snakemake(["all", "-n"], cwd=clean_repo, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    from conftest import job_counts

    counts = job_counts(out.stdout)
    for rule in NEW_RULES:  # the deployable selection on run.suite and on BoN-L1's suite
        assert counts.get(rule) == (2 if rule.startswith("deployable") else 1), (rule, counts)
    for path in (
        "results/tables/smollm2-135m/headroom/deployable_selection.csv",
        "figures/open_questions/smollm2-135m/headroom/deployable_selection.pdf",
        "results/tables/smollm2-135m/bundled-all/deployable_selection.csv",
        "figures/open_questions/smollm2-135m/bundled-all/deployable_selection.pdf",
        "results/tables/ttt/remedies.csv",
        "figures/open_questions/ttt_remedies.pdf",
        "results/tables/ttt/reward_sparsification.csv",
        "figures/open_questions/reward_sparsification.pdf",
        "results/tables/probes/entropy-s42/seed42/probe.csv",
        "results/tables/probes/kl-s42/seed42/probe.csv",
        "results/ttt/fast1-s42/step2/metrics.json",
    ):
        assert path in out.stdout, path
    assert counts["probe_score"] == 3  # main-s42 (probe.run, shared), entropy-s42, kl-s42
    assert dry_counts(clean_repo, ["figures/fig4.pdf"]) == FIGURE4_PLAN


@pytest.mark.slow
def test_switched_off_the_open_questions_plan_nothing(clean_repo):
    off = "analyses:\n  deployable: false\nttt:\n  experiments:\n    remedies: []\n    reward_sparsification: []\n"
    counts = dry_counts(clean_repo, ["all", "--configfile", "config/config.yaml"], off)
    assert not set(NEW_RULES) & set(counts)
    # the three variant runs are gone: of all's 29 steps, fast1-s42's 3 and entropy-s42's and kl-s42's
    # steps 1-2 (their step 0s are main-s42's, copied by 2 of all's 4 ttt_step0_shared jobs)
    assert counts["probe_score"] == 1 and counts["ttt_step"] == 29 - 3 - 4 and counts["ttt_step0_shared"] == 4 - 2


@pytest.mark.slow
def test_kl_penalty_refuses_a_run_that_continues_a_trained_adapter(clean_repo):
    (clean_repo / "trained.yaml").write_text("checkpoint:\n  use: trained\n")
    out = run_snakemake(
        ["results/ttt/kl-s42/step1/metrics.json", "-n", "--configfile", "config/config.yaml", "trained.yaml"], cwd=clean_repo
    )
    assert out.returncode != 0 and "ttt.runs.kl-s42.kl_to_start" in out.stdout + out.stderr


@pytest.mark.slow
def test_open_question_experiments_build_on_the_tiny_config(tmp_path):
    """A real build in a fresh copy (config/test/config.yaml: 2 tasks, K = 3, 2 steps): the
    remedies with the NLL probe of each run, the sparse-reward run, the deployable selection."""
    import json

    from conftest import copy_repo
    from testtime.records import read_parquet, read_provenance

    work = copy_repo(tmp_path / "repo")
    targets = [
        "results/tables/ttt/remedies.csv",
        "results/tables/ttt/reward_sparsification.csv",
        "results/tables/smollm2-135m/bundled/deployable_selection.csv",
        "figures/open_questions/ttt_remedies.pdf",
        "figures/open_questions/reward_sparsification.pdf",
        "figures/open_questions/smollm2-135m/bundled/deployable_selection.pdf",
        "results/tables/smollm2-135m/bundled/table3.csv",
    ]
    out = run_snakemake([*targets, "-c2", "--configfile", "config/test/config.yaml"], cwd=work, timeout=1800)
    assert out.returncode == 0, out.stderr[-4000:]
    for figure in targets[3:6]:
        assert (work / figure).read_bytes().startswith(b"%PDF")

    def metrics(run, step):
        return json.loads((work / f"results/ttt/{run}/step{step}/metrics.json").read_text())

    # the variants start where the paper's run starts: main-s42's step 0, shared (ttt.share_step0)
    step0 = {r: read_parquet(work / f"results/ttt/{r}/step0/rollouts.parquet") for r in ("main-s42", "entropy-s42", "kl-s42")}
    assert step0["entropy-s42"]["token_ids"].map(list).tolist() == step0["main-s42"]["token_ids"].map(list).tolist()
    assert set(step0["kl-s42"]["run"]) == {"kl-s42"} and metrics("kl-s42", 0)["provenance"]["step0_of"] == "main-s42"
    assert not (work / "results/logs/ttt_step/entropy-s42/step0.log").exists()  # not sampled again
    assert "step0_of" not in metrics("fast1-s42", 0)["provenance"]  # its step-0 rewards differ
    assert (
        metrics("entropy-s42", 1)["update"]["entropy_bonus"] == 0.01 and metrics("entropy-s42", 1)["update"]["entropy_mean"] > 0
    )
    assert metrics("kl-s42", 1)["update"]["kl_to_start_mean"] == pytest.approx(0.0, abs=1e-6)  # θ_0 is the start
    assert metrics("kl-s42", 2)["update"]["kl_to_start_mean"] > 0
    assert "entropy_bonus" not in metrics("main-s42", 1)["update"]
    sparse = read_parquet(work / "results/ttt/fast1-s42/step1/evaluations.parquet")
    assert set(sparse["reward"]) <= {0.0, 1.0}
    assert (sparse["reward"] == ((sparse["correct"]) & (sparse["speedup"] > 1.0)).astype(float)).all()
    # deviations recorded where the switches act, and nowhere else
    assert read_provenance(work / "results/ttt/fast1-s42/step1/rollouts.parquet")["deviations_from_paper"]["ttt.reward"] == [
        "fast_1",
        "normalized",
    ]
    assert metrics("kl-s42", 1)["provenance"]["deviations_from_paper"]["ttt.kl_to_start"] == [0.1, 0.0]
    assert "ttt.entropy_bonus" not in metrics("main-s42", 2)["provenance"]["deviations_from_paper"]
    remedies = pd.read_csv(work / "results/tables/ttt/remedies.csv")
    assert remedies["run"].unique().tolist() == ["main-s42", "entropy-s42", "kl-s42"]
    assert remedies["mean_nll"].notna().all() and remedies.groupby("run")["boa"].sum().tolist() == [1, 1, 1]
    prov = json.loads((work / "results/tables/ttt/remedies.csv.provenance.json").read_text())
    assert prov["run_facts"]["entropy-s42"]["deviations_from_paper"]["ttt.entropy_bonus"] == [0.01, 0.0]
    # at step 0 every variant's probe is the same checkpoint on the same samples
    assert remedies[remedies["step"] == 0]["mean_nll"].nunique() == 1
    sparsity = pd.read_csv(work / "results/tables/ttt/reward_sparsification.csv")
    assert sparsity.groupby("run", sort=False)["reward"].first().to_dict() == {"main-s42": "normalized", "fast1-s42": "fast_1"}
    deploy = pd.read_csv(work / "results/tables/smollm2-135m/bundled/deployable_selection.csv")
    assert set(deploy["order"]) == set(dp.ORDERS) and deploy["m"].max() <= 4 and (deploy["n_seeds"] == 2).all()
    table3 = pd.read_csv(work / "results/tables/smollm2-135m/bundled/table3.csv").set_index("strategy")["fast_1"]
    last = deploy[deploy["m"] == deploy["m"].max()].set_index("order")["fast_1"]  # every candidate: Table 3's picks
    assert last["surprisal"] == pytest.approx(table3["surprisal-guided"]) and last["random"] == pytest.approx(
        table3["random-correct"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("config", ["paper", "gpu"])
def test_paper_and_gpu_configs_run_no_open_question_ttt(clean_repo, config):
    """config/config.yaml is always loaded under them: they switch its variant runs off."""
    counts = dry_counts(clean_repo, ["all", "--configfile", f"config/{config}.yaml"])
    assert counts["deployable_selection"] == 2  # an analysis of the records they build anyway (and BoN-L1's)
    assert not {"ttt_remedies", "reward_sparsification"} & set(counts)
