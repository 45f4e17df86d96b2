"""RLVR end to end (real model, real evaluator, real Snakemake): one job per step, a killed run
resuming at the step it was in, Table 5 and the training curve, rerun scoping."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_repo, dry_counts, kill_and_resume, run_snakemake
from testtime.records import read_parquet, read_provenance

pytestmark = pytest.mark.slow
TINY = ["--configfile", "config/test/config.yaml"]
TARGET = "rlvr_all"
STEPS = 2  # config/test/config.yaml
STEP_DIR = "results/rlvr/smollm2-135m/main/step{}"
TABLE = "results/tables/smollm2-135m/bundled/rlvr/main/table5.csv"
CURVE = "figures/rlvr/smollm2-135m/main/curve.pdf"


def step_files(workdir: Path, step: int) -> list[Path]:
    d = workdir / STEP_DIR.format(step)
    names = ("metrics.json", "rollouts.parquet", "evaluations.parquet", "optimizer.pt", "adapter/adapter_model.safetensors")
    return [d / n for n in names]


@pytest.fixture(scope="module")
def rlvr_workdir(tmp_path_factory) -> dict:
    """Build Table 5 in a fresh copy, kill the whole run during step 2, resume it."""
    workdir = copy_repo(tmp_path_factory.mktemp("rlvr") / "repo")
    started = workdir / "results/logs/rlvr_step/smollm2-135m/main/step2.log"
    finished = [p for s in (0, 1) for p in step_files(workdir, s)]
    resumed = kill_and_resume(workdir, [TARGET, *TINY], started, finished)
    by_step = {s: {p: m for p, m in resumed["finished"].items() if p in step_files(workdir, s)} for s in (0, 1)}
    return {"workdir": workdir, "finished": by_step, "plan": resumed["plan"]}


def dry(workdir: Path, extra: str = "") -> dict[str, int]:
    return dry_counts(workdir, [TARGET, *TINY], extra)


def test_killed_rlvr_run_resumes_at_the_step_it_was_in(rlvr_workdir):
    workdir, plan = rlvr_workdir["workdir"], rlvr_workdir["plan"]
    planned = {p.strip() for line in re.findall(r"^\s*output: (.*)$", plan, re.M) for p in line.split(",")}
    assert f"{STEP_DIR.format(2)}/metrics.json" in planned  # the step it was in
    for s in (0, 1):
        assert f"{STEP_DIR.format(s)}/metrics.json" not in planned  # finished steps are not planned
        for path, mtime in rlvr_workdir["finished"][s].items():
            assert path.stat().st_mtime_ns == mtime, f"{path} was rewritten"
    for s in range(STEPS + 1):
        assert all(p.exists() for p in step_files(workdir, s))


def test_rlvr_steps_follow_the_data_order_and_update_the_adapter(rlvr_workdir):
    import random

    import torch
    from safetensors.torch import load_file

    workdir = rlvr_workdir["workdir"]
    tasks = read_parquet(workdir / "results/tasks/bundled/tasks.parquet")
    order = sorted(tasks.loc[tasks["split"] == "train", "problem_id"].tolist())
    random.Random(42).shuffle(order)
    for s in range(STEPS + 1):
        metrics = json.loads((workdir / STEP_DIR.format(s) / "metrics.json").read_text())
        assert metrics["tasks"] == sorted(order[2 * s : 2 * s + 2])  # batch s of §8's order
        rollouts = read_parquet(workdir / STEP_DIR.format(s) / "rollouts.parquet")
        assert sorted(rollouts["problem_id"].unique()) == metrics["tasks"] and len(rollouts) == 4
        evaluations = read_parquet(workdir / STEP_DIR.format(s) / "evaluations.parquet")
        assert {"reward", "advantage"} <= set(evaluations.columns)
        for _, g in evaluations.groupby("problem_id"):  # group mean-centred, no std
            assert g["advantage"].to_numpy() == pytest.approx((g["reward"] - g["reward"].mean()).to_numpy())
        if s > 0:
            update = metrics["update"]
            assert not update["skipped"] and {"kl_sample_train_v1", "kl_post", "loss", "grad_norm"} <= update.keys()
            assert metrics["guardrails"]["mode"] == "warn"
        prov = read_provenance(workdir / STEP_DIR.format(s) / "rollouts.parquet")
        assert prov["config"]["rlvr"]["advantage"] == "group_mean"
        assert prov["deviations_from_paper"]["rlvr.k"] == [2, 8]
    a0 = load_file(workdir / STEP_DIR.format(0) / "adapter/adapter_model.safetensors")
    a2 = load_file(workdir / STEP_DIR.format(2) / "adapter/adapter_model.safetensors")
    assert any(not torch.equal(a0[k], a2[k]) for k in a0 if "lora_B" in k)  # the updates moved the LoRA
    assert all(torch.count_nonzero(a0[k]) == 0 for k in a0 if "lora_B" in k)  # θ_0 = the model


def test_table5_and_training_curve(rlvr_workdir):
    workdir = rlvr_workdir["workdir"]
    table = pd.read_csv(workdir / TABLE)
    assert table["step"].tolist() == list(range(STEPS + 1))
    assert table["checkpoint"].tolist() == [False, True, True]  # save_every 1
    assert table["final"].tolist() == [False, False, True]
    assert ((table["correct_rate"] >= 0) & (table["correct_rate"] <= 1)).all()
    assert (workdir / CURVE).stat().st_size > 0
    prov = json.loads((workdir / f"{CURVE}.provenance.json").read_text())
    assert prov["upstream"]["checkpoints"] == [1, 2]


def test_nothing_to_do_after_the_rlvr_run(rlvr_workdir):
    assert dry(rlvr_workdir["workdir"]) == {}


def test_more_steps_add_steps_only_and_lr_reruns_updates_only(rlvr_workdir):
    workdir = rlvr_workdir["workdir"]
    more = dry(workdir, "rlvr:\n  tasks_per_step: 2\n  k: 2\n  steps: 3\n  save_every: 1\n  guardrails: warn\n")
    assert more == {"rlvr_step": 1, "rlvr_table5": 1, "rlvr_curve": 1, "rlvr_all": 1}
    lr = dry(workdir, "rlvr:\n  tasks_per_step: 2\n  k: 2\n  steps: 2\n  save_every: 1\n  guardrails: warn\n  lr: 3.0e-4\n")
    assert lr == {"rlvr_step": STEPS, "rlvr_table5": 1, "rlvr_curve": 1, "rlvr_all": 1}  # step 0 keeps


def test_trained_checkpoint_feeds_best_of_n_and_ttt_continues_its_adapter(rlvr_workdir):
    """checkpoint.use: trained on the finished run: the Best-of-N samples and TTT step 0 start
    from step 2's adapter (TTT continues it: its step-0 adapter is RLVR's), and say so."""
    from safetensors.torch import load_file

    workdir = rlvr_workdir["workdir"]
    (workdir / "trained.yaml").write_text("checkpoint:\n  use: trained\n")
    samples = "results/samples/smollm2-135m/bundled/seed42.parquet"
    ttt0 = "results/ttt/main-s42/step0/metrics.json"
    out = run_snakemake([samples, ttt0, "-c2", *TINY, str(workdir / "trained.yaml")], cwd=workdir)
    assert out.returncode == 0, out.stderr[-4000:]
    assert "rlvr_step" not in out.stdout + out.stderr  # the finished run is reused
    expected = {"use": "trained", "model": "smollm2-135m", "rlvr_run": "main", "adapter_step": STEPS}
    sample_prov = read_provenance(workdir / samples)
    assert sample_prov["checkpoint"] == expected
    assert sample_prov["deviations_from_paper"]["checkpoint.use"] == ["trained", "fetched"]
    prov = json.loads((workdir / ttt0).read_text())["provenance"]
    assert prov["checkpoint"] == {**expected, "init": "checkpoint", "lora": "continued", "adam": "fresh"}
    ours = load_file(workdir / "results/ttt/main-s42/step0/adapter/adapter_model.safetensors")
    rlvr = load_file(workdir / STEP_DIR.format(STEPS) / "adapter/adapter_model.safetensors")
    assert ours.keys() == rlvr.keys() and all(torch_equal(ours[k], rlvr[k]) for k in ours)


def torch_equal(a, b) -> bool:  # noqa: ANN001
    import torch

    return bool(torch.equal(a, b))
