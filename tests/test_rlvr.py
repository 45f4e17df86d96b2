"""RLVR (reference-protocol §8): advantages and loss on a hand-computed group, the data order,
the guardrails, Table 5, the run settings and the checkpoint switch (config and plans)."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import run_snakemake
from testtime.config import validate
from testtime.pg import policy as pg_policy
from testtime.pg import rewards as pg_rewards
from testtime.rlvr import data_order, guardrail_violations, step_task_ids, step_tasks, table5
from testtime.runs import checkpoint_steps, resolve_checkpoint, resolve_rlvr_run, rlvr_step_settings

# ---------------------------------------------------------------- §8 on a hand-computed group


def test_rlvr_rewards_group_mean_advantages_and_loss_on_a_hand_computed_group():
    """Two tasks x 4 rollouts, evaluated in order. Task 7 (history empty, baseline 1.0):
    correct 2.0x -> 2.0 + 0.01; incorrect -> 0; correct 0.0x -> 0 + 0.01 and 0.0 joins the
    history (RLVR appends every correct speedup), median(2, 0) = 1.0; correct 3.0x -> 3.0/1.0 +
    0.01. Task 9: all incorrect -> 0. Advantage = r - mean(group), no std."""
    pids = [7, 7, 7, 7, 9, 9, 9, 9]
    correct = [True, False, True, True, False, False, False, False]
    speedup = [2.0, 0.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    r, base, hist = pg_rewards.normalized_rewards(pids, correct, speedup, bonus=0.01, append="correct")
    assert r.tolist() == pytest.approx([2.01, 0.0, 0.01, 3.01, 0, 0, 0, 0])
    assert base.tolist() == pytest.approx([1.0, 2.0, 2.0, 1.0, 1, 1, 1, 1])
    assert hist == {"7": [2.0, 0.0, 3.0], "9": []}
    # TTT's variant keeps the 0.0x out of the history: the last baseline is then 2.0
    r_ttt, _, hist_ttt = pg_rewards.normalized_rewards(pids, correct, speedup, bonus=0.01)
    assert r_ttt[3] == pytest.approx(1.51) and hist_ttt["7"] == [2.0, 3.0]

    adv = pg_rewards.advantages(r, pids, "group_mean")
    mean7 = (2.01 + 0.0 + 0.01 + 3.01) / 4  # 1.2575
    assert adv.tolist() == pytest.approx([2.01 - mean7, -mean7, 0.01 - mean7, 3.01 - mean7, 0, 0, 0, 0])
    assert adv[:4].sum() == pytest.approx(0.0)  # mean-centred per group, not scaled

    # loss: -Σ_rows Σ_tokens exp(logp - q) A over completion tokens (on-policy: ratio 1)
    lengths = [3, 1, 2, 2, 1, 1, 1, 1]
    logp = torch.tensor(np.log(np.full((8, 3), 0.5)), requires_grad=True)
    mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(3)] for n in lengths], dtype=torch.float64)
    a = torch.tensor(adv, dtype=torch.float64)
    loss = pg_policy.pg_loss(logp, logp.detach(), a, mask)
    assert float(loss.detach()) == pytest.approx(-sum(ai * n for ai, n in zip(adv, lengths)))
    loss.backward()
    expected_grad = -(a[:, None] * mask)  # d loss / d logp = -A on every completion token
    assert torch.allclose(logp.grad, expected_grad)


def test_group_mean_of_a_constant_group_is_zero_and_unknown_modes_fail():
    assert pg_rewards.advantages([1.0, 1.0, 1.0], [3, 3, 3], "group_mean").tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="group label"):
        pg_rewards.advantages([1.0, 2.0], None, "group_mean")
    with pytest.raises(ValueError, match="append"):
        pg_rewards.normalized_rewards([1], [True], [1.0], append="all")


# ---------------------------------------------------------------- data order, guardrails, Table 5


def test_data_order_is_the_references():
    train = [30, 10, 20, 40, 50]
    ids = sorted(train)
    random.Random(42).shuffle(ids)
    order = data_order(train, epochs=3, shuffle_seed=42)
    assert order == ids * 3
    assert step_task_ids(order, 0, 2) == ids[:2]
    assert step_task_ids(order, 1, 2) == ids[2:4]
    assert step_task_ids(order, 7, 2) == [order[14 % 15], order[15 % 15]]  # wraps past the end


def test_step_tasks_draw_from_the_train_split_only():
    tasks = pd.DataFrame({"problem_id": [1, 2, 3, 4], "split": ["train", "eval", "train", "train"], "selected": True})
    run = {"epochs": 1, "shuffle_seed": 42, "tasks_per_step": 2, "suite": "s"}
    chosen = step_tasks(tasks, run, 0)
    assert chosen["selected"].sum() == 2 and not chosen.loc[chosen["problem_id"] == 2, "selected"].any()
    with pytest.raises(ValueError, match="tasks_per_step"):
        step_tasks(tasks, {**run, "tasks_per_step": 4}, 0)


def test_guardrails():
    run = {"guard_kl": 0.01, "guard_reward_drop": 0.1}
    ok = {"kl_sample_train_v1": 0.001, "kl_sample_train_v2": 0.0, "kl_post": 0.005}
    assert guardrail_violations(ok, {"mean_reward": 0.5}, {"mean_reward": 1.0}, run) == []
    found = guardrail_violations({**ok, "kl_post": 0.02}, {"mean_reward": 0.05}, {"mean_reward": 1.0}, run)
    assert len(found) == 2 and "kl_post" in found[0] and "previous" in found[1]
    assert guardrail_violations(ok, {"mean_reward": math.nan}, None, run) == ["mean reward is NaN"]


def test_table5_rows_and_checkpoints():
    def m(step, correct):
        return {
            "step": step,
            "tasks": [1, 2],
            "n_rollouts": 8,
            "correct_rate": correct,
            "mean_speedup_all": 0.5,
            "mean_speedup": 1.0,
            "agg_fast_1": 0.1,
            "mean_reward": 0.4,
            "truncation_rate": 0.0,
            "update": {"loss": -1.0, "grad_norm": 2.0} if step else {"skipped": True},
        }

    run = {"steps": 40, "save_every": 10}
    assert checkpoint_steps(run) == [10, 20, 30, 40]
    assert checkpoint_steps({"steps": 25, "save_every": 10}) == [10, 20, 25]
    t = table5([m(s, s / 40) for s in range(41)], checkpoint_steps(run))
    assert t["checkpoint"].sum() == 4 and bool(t.loc[t["step"] == 40, "final"].iloc[0])
    assert t.loc[t["step"] == 40, "paper_correct_rate"].iloc[0] == pytest.approx(0.984)
    assert math.isnan(t.loc[0, "loss"]) and t.loc[1, "loss"] == -1.0


# ---------------------------------------------------------------- run settings and the checkpoint switch


def embedded(**edits):
    import yaml

    from conftest import ROOT

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key, value in edits.items():
        config[key] = {**config.get(key, {}), **value}
    return validate(config)


def test_rlvr_run_defaults_are_the_papers_and_step0_ignores_the_update():
    import yaml

    from conftest import ROOT

    paper = validate(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    run = resolve_rlvr_run(paper, "main")
    expected = {"tasks_per_step": 8, "k": 8, "steps": 40, "epochs": 4, "save_every": 10, "lr": 1e-5, "adam_eps": 1e-8}
    assert {k: run[k] for k in expected} == expected
    assert run["advantage"] == "group_mean" and run["reward_bonus"] == 0.01 and run["adam_beta2"] == 0.95
    assert run["model"] == "gpt-oss-120b" and run["guardrails"] == "abort"
    assert "lr" not in rlvr_step_settings(run, 0) and "lr" in rlvr_step_settings(run, 1)
    assert "steps" not in rlvr_step_settings(run, 3) and "save_every" not in rlvr_step_settings(run, 3)
    assert resolve_checkpoint(paper) == {
        "use": "fetched",
        "model": "gpt-oss-120b-rlvr",
        "source": "hf:Jarrodbarnes/KernelBench-RLVR-120b",
    }


def test_checkpoint_switch_resolution_and_errors():
    assert resolve_checkpoint(embedded()) == {"use": "base", "model": "smollm2-135m"}
    trained = resolve_checkpoint(embedded(checkpoint={"use": "trained"}))
    assert trained == {"use": "trained", "model": "smollm2-135m", "rlvr_run": "main", "adapter_step": 2}
    assert resolve_checkpoint(embedded(checkpoint={"use": "trained", "step": 1}))["adapter_step"] == 1
    with pytest.raises(ValueError, match="checkpoint.step"):
        resolve_checkpoint(embedded(checkpoint={"use": "trained", "step": 9}))
    with pytest.raises(ValueError, match="hf: source"):
        resolve_checkpoint(embedded(checkpoint={"use": "fetched"}))
    with pytest.raises(ValueError, match="rlvr.runs.other"):
        resolve_checkpoint(embedded(checkpoint={"use": "trained", "rlvr_run": "other"}))


def plan(repo, *args):
    out = run_snakemake(["-n", *args], cwd=repo, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def override(repo, name, text):
    path = repo / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def test_default_figure_4_does_not_go_through_rlvr(clean_repo):
    stdout = plan(clean_repo, "figures/fig4.pdf")
    assert "rlvr_step" not in stdout and "rule sample:" in stdout


def test_trained_checkpoint_plans_rlvr_before_best_of_n_ttt_and_the_probe(clean_repo):
    extra = override(clean_repo, "trained", "checkpoint:\n  use: trained\n")
    stdout = plan(clean_repo, "figures/fig4.pdf", "figures/fig6.pdf", "--configfile", "config/config.yaml", extra)
    assert "rule rlvr_step:" in stdout
    # the samples and TTT step 0 read the RLVR run's last adapter
    adapter = "results/rlvr/smollm2-135m/main/step2/adapter"
    sample_jobs = [block for block in stdout.split("\n\n") if "rule sample:" in block]
    assert sample_jobs and all(adapter in block for block in sample_jobs if "smollm2-135m/headroom/" in block)
    ttt0 = [b for b in stdout.split("\n\n") if "rule ttt_step:" in b and "main-s42/step0/" in b]
    assert ttt0 and adapter in ttt0[0]


def test_paper_config_plans_the_fetched_checkpoint_without_rlvr(clean_repo):
    stdout = plan(clean_repo, "figures/fig4.pdf", "--configfile", "config/paper.yaml")
    assert "rule retrieve_model:" in stdout and "rlvr_step" not in stdout
    assert "gpt-oss-120b-rlvr" in stdout


def test_paper_config_with_trained_checkpoint_plans_rlvr_then_best_of_n(clean_repo):
    extra = override(clean_repo, "paper-trained", "run:\n  model: gpt-oss-120b\ncheckpoint:\n  use: trained\n")
    stdout = plan(clean_repo, "figures/fig4.pdf", "--configfile", "config/paper.yaml", extra)
    stats = stdout.split("Job stats:")[1].split("total")[0]
    assert "rlvr_step" in stats and "sample" in stats and "retrieve_model" in stats
    assert " 41\n" in stats.split("rlvr_step")[1].split("\n")[0] + "\n"  # steps 0..40
    assert "results/rlvr/gpt-oss-120b/main/step40/adapter" in stdout


def test_trained_checkpoint_of_another_model_names_the_keys(clean_repo):
    extra = override(clean_repo, "paper-mismatch", "checkpoint:\n  use: trained\n")
    out = run_snakemake(["-n", "figures/fig4.pdf", "--configfile", "config/paper.yaml", extra], cwd=clean_repo, timeout=180)
    assert out.returncode != 0 and "checkpoint.rlvr_run" in out.stdout + out.stderr


def test_ttt_init_fresh_merges_the_trained_adapter_at_every_step_and_in_the_probe(clean_repo):
    """ttt.init: fresh on a trained checkpoint: every TTT step, the transfer and the probe read
    the RLVR adapter (merged under the fresh LoRA); with init: checkpoint only step 0 does."""
    adapter = "results/rlvr/smollm2-135m/main/step2/adapter"

    def jobs(text):
        extra = override(clean_repo, "init", text)
        stdout = plan(clean_repo, "figures/fig6.pdf", "--configfile", "config/config.yaml", extra)
        return [b for b in stdout.split("\n\n") if "rule ttt_step:" in b or "rule probe_score:" in b]

    fresh = jobs("checkpoint:\n  use: trained\nttt:\n  init: fresh\n")
    assert fresh and all(adapter in b for b in fresh)
    continued = jobs("checkpoint:\n  use: trained\n")
    with_adapter = [b for b in continued if adapter in b]
    assert len(with_adapter) == 1 and "main-s42/step0/" in with_adapter[0]
